"""Load integrators' code from the seed documents at test time (it is never copied into the repo),
and run seed 004's cURL recipes as printed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

# `../shared` beside the repository, as CI lays it out.
SHARED = Path(__file__).resolve().parents[2] / "shared"
SEEDS = SHARED / "seeds"

API_V2 = SEEDS / "003_f2ae4583ea959c59.txt"
API_V1 = SEEDS / "004_c6f2deaf50482dd3.txt"


def block_after(heading: str, language: str, document: str | Path = API_V2) -> str:
    """The first ```<language> block after a heading line of a document (a seed, by default)."""
    text = Path(document).read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.search(rf"```{language}\n(.*?)```", text[start:], re.S)
    if match is None:
        raise LookupError(f"no {language} block after {heading!r}")
    return match.group(1)


def python_block_after(heading: str, document: str = str(API_V2)) -> str:
    """The first ```python block after a heading line of a seed document."""
    return block_after(heading, "python", document)


def load(heading: str, document: str = str(API_V2)) -> dict[str, Any]:
    """Execute a seed's python block and return its namespace (its `main()` is not run)."""
    namespace: dict[str, Any] = {"__name__": "seed"}
    exec(compile(python_block_after(heading, document), f"seed:{heading}", "exec"), namespace)
    return namespace


def seed_client_class() -> Any:
    """`GenerationServiceClient` exactly as seed 003 prints it."""
    return load("### Python Client SDK")["GenerationServiceClient"]


def seed_webhook_verifier() -> Any:
    """`verify_webhook_signature` exactly as seed 003 prints it."""
    return load("### Верификация webhook подписи")["verify_webhook_signature"]


def bash_block_after(heading: str) -> str:
    """The first ```bash block after a heading of seed 004."""
    return block_after(heading, "bash", API_V1)


# Run before a recipe, as printed: each of its curl calls also says its HTTP status on stderr.
WITH_STATUS = ("curl() { command curl --silent --show-error --write-out '%{stderr}HTTP %{http_code}\\n' "
               "\"$@\"; }\n")


def run_recipe(script: str, cwd: Path) -> tuple[str, list[int]]:
    """A recipe's stdout (the bodies curl printed) and the HTTP status of each of its requests."""
    done = subprocess.run(["bash", "-c", WITH_STATUS + script], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout, [int(code) for code in re.findall(r"^HTTP (\d{3})$", done.stderr, re.M)]
