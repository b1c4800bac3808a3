"""The documents that tell an operator how long a migration waits for a table lock say what
`LockPatience` does: the number is read out of each document, so a change to one shows here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lotlens_common.db import LockPatience

ROOT = Path(__file__).resolve().parents[2]
# Where each document states a number of `LockPatience`, and the words around it (group 1).
STATEMENTS = [
    ("deploy/k8s/README.md", "wait_s", r"A migration waits at most ([\d.]+) s for a table lock"),
    ("deploy/k8s/README.md", "pause_s", r"then gives way and tries again every ([\d.]+) s"),
    ("deploy/k8s/README.md", "wait_s", r"without the ([\d.]+) s limit above"),
    ("docs/RUNBOOK.md", "wait_s", r"waits at most ([\d.]+) s for its table's lock"),
    ("docs/RUNBOOK.md", "wait_s", r"a migration waited ([\d.]+) s for a table lock"),
    ("docs/RUNBOOK.md", "give_up_after_s", r"a migration gave up after ([\d.]+) s"),
    ("docs/MIGRATING.md", "wait_s", r"The runner bounds each lock wait itself \(([\d.]+) s"),
]


@pytest.mark.parametrize(("document", "setting", "statement"), STATEMENTS)
def test_each_document_states_the_lock_patience_the_runner_uses(
        document: str, setting: str, statement: str) -> None:
    text = " ".join((ROOT / document).read_text(encoding="utf-8").split())  # lines rewrapped freely
    found = re.findall(statement, text)
    assert found, f"{document} no longer says {statement!r}: update this test with the new wording"
    assert {float(n) for n in found} == {getattr(LockPatience(), setting)}, f"{document}: {found} s"

