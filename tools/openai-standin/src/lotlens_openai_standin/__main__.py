"""Run the stand-in: `python -m lotlens_openai_standin` (configured by `STANDIN_*` variables)."""

from __future__ import annotations

import os

import uvicorn

from lotlens_openai_standin.app import create_app
from lotlens_openai_standin.config import config_from_env


def main() -> None:
    """Read the configuration from the environment and serve until stopped."""
    config = config_from_env(os.environ)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info")


if __name__ == "__main__":
    main()
