"""Run the stand-in: `python -m lotlens_openai_standin [--state-dir DIR]`, configured by `STANDIN_*`."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
from pathlib import Path

import uvicorn

from lotlens_openai_standin.app import create_app
from lotlens_openai_standin.config import config_from_env


def main() -> None:
    """Read the configuration from the environment (and the command line) and serve until stopped."""
    parser = argparse.ArgumentParser(prog="lotlens-openai-standin")
    parser.add_argument("--state-dir", type=Path, help="keep state here and reload it on start "
                        "(overrides STANDIN_STATE_DIR)")
    args = parser.parse_args()
    config = config_from_env(os.environ)
    if args.state_dir is not None:
        config = dataclasses.replace(config, state_dir=args.state_dir)
    # httptools and uvloop: the stand-in takes a job's whole batch files (about 90 MB each way for
    # 50,000 lots) on the machine it measures; h11 and asyncio's loop spent CPU the pipeline needs.
    app = create_app(config)
    # What the imports and the app made lives as long as the process: out of the collector's sight,
    # each full collection during a batch's run (two in a 50,000-line one) stops walking it.
    gc.freeze()
    uvicorn.run(app, host=config.host, port=config.port, log_level="info",
                http="httptools", loop="uvloop")


if __name__ == "__main__":
    main()
