"""Bandit (PyCQA's static security analyser) over the code that ships and runs the stack: no finding
of medium severity or more, at medium confidence or more. What it reports below that bar was read
and is not a defect: SQL f-strings whose parts are the code's own table and column names (B608),
asserts that narrow types (B101), `random` for jitter and sampling (B311), `whsec_` and JSON
punctuation taken for passwords (B105). A suppression (`# nosec Bxxx`) says why beside it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

CHECKED = ("services", "libs", "tools", "bench", "chaos", "scripts")


def test_bandit_finds_nothing_of_medium_severity_and_confidence() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bandit", "--recursive", *CHECKED, "--exclude", "*/tests/*,*/.venv/*",
         "--severity-level", "medium", "--confidence-level", "medium", "--format", "json", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert not report["errors"], report["errors"]
    found = [f"{result['filename']}:{result['line_number']} {result['test_id']} {result['issue_text']}"
             for result in report["results"]]
    assert found == [], "\n".join(found)
