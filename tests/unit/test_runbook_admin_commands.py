"""Every `lotlens-admin` command the operators' documents name (`admin …` in the runbook stands
for it) exists, with the flags they give it: its `--help` answers and lists each flag. And every
place that tells when to run `db downgrade` gives the same order."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from lotlens_admin import schema
from lotlens_admin.cli import main
from tests.conftest import ROOT

DOCUMENTS = ("docs/RUNBOOK.md", "docs/EVENT_LOG.md", "docs/MIGRATING.md", "README.md", "deploy/k8s/README.md")
# A command in backticks, perhaps broken over lines (`admin dlq replay --position <PARTITION:OFFSET>`),
# or on a line of a shell block (`.venv/bin/lotlens-admin dlq list [--state open]  # ...`).
COMMAND = re.compile(r"`(?:lotlens-)?admin\s+([^`]+)`|^[^`\n]*lotlens-admin\s+([a-z][^#`\n]*)", re.MULTILINE)
WORD = re.compile(r"[a-z][a-z-]*")
FLAG = re.compile(r"--[a-z][a-z-]*")


def documented() -> list[tuple[str, str, tuple[str, ...]]]:
    """(where, group and command, flags) of each command the documents give."""
    found = []
    for name in DOCUMENTS:
        for match in COMMAND.finditer((ROOT / name).read_text()):
            given = match.group(1) or match.group(2)
            words, flags = given.split(), tuple(FLAG.findall(given))
            path = [word for word in words[:2] if WORD.fullmatch(word.split("|")[0])]
            for command in (path[1].split("|") if len(path) > 1 else [None]):
                found.append((name, " ".join(filter(None, [path[0], command])), flags))
    return found


COMMANDS = documented()
# Every command there is: a document naming one of them is checked above.
GROUPS = {"dlq": ("list", "show", "replay", "discard"), "projections": ("rebuild", "status", "drop-retired",
          "drop-shadow"), "clients": ("list", "secret", "rotate", "delete"), "jobs": ("show",),
          "shards": ("paused", "release"), "stages": ("release-hold",), "db": ("current", "downgrade")}


def test_the_documents_name_commands_of_every_group() -> None:
    assert {command.split()[0] for _, command, _ in COMMANDS} == {"dlq", "projections", "clients", "jobs",
                                                                  "shards", "stages", "db"}


@pytest.mark.parametrize(("where", "command", "flags"), COMMANDS,
                         ids=[f"{where}:{command}" for where, command, _ in COMMANDS])
def test_a_documented_command_exists_with_its_flags(where: str, command: str, flags: tuple[str, ...],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        main([*command.split(), "--help"])
    out, err = capsys.readouterr()
    assert ended.value.code == 0, f"{where} names `lotlens-admin {command}`: {err}"
    missing = [flag for flag in flags if not re.search(rf"{flag}\b", out)]
    assert not missing, f"{where} gives `lotlens-admin {command}` {missing}, which its --help does not list"


def test_every_flag_the_runbook_names_is_one_of_a_command() -> None:
    # Prose names flags apart from their command: "`admin dlq replay --position …` (or `--all`;
    # `--dry-run` first)".
    listed: set[str] = set()
    for group, commands in GROUPS.items():
        for command in commands:
            with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
                main([group, command, "--help"])
            listed |= set(FLAG.findall(out.getvalue()))
    named = set(re.findall(r"`(--[a-z][a-z-]*)`", (ROOT / "docs/RUNBOOK.md").read_text()))
    assert named - listed == set()


# Taking the schema back with a release, step by step: the newer release's pods gone, its migrate
# Job kept from running again (it upgrades straight back), the downgrade, then the older release.
# The docstring once said "before the older one is deployed" only, and newer pods still running
# failed on the columns dropped under them.
DOWNGRADE_ORDER = ("rollout undo", "delete job lotlens-migrate", "db downgrade", "apply -k")
WHERE_THE_ORDER_IS = {"README.md": "### Stepping the schema back",
                      "deploy/k8s/README.md": "### Rolling a release back with its schema"}


def section(text: str, heading: str) -> str:
    start = text.index(heading) + len(heading)
    end = re.compile(r"^#{2,} ", re.MULTILINE).search(text, start)
    return text[start:end.start() if end else None]


@pytest.mark.parametrize("where", [*WHERE_THE_ORDER_IS, "lotlens_admin/schema.py"])
def test_every_document_runs_a_downgrade_in_the_same_order(where: str) -> None:
    text = (section((ROOT / where).read_text(), WHERE_THE_ORDER_IS[where]) if where in WHERE_THE_ORDER_IS
            else str(schema.__doc__))
    words = " ".join(text.split())  # a step may break over lines
    place = 0
    for step in DOWNGRADE_ORDER:  # each after the one before
        place = words.find(step, place)
        assert place != -1, f"{where} names no `{step}` after the steps before it, {DOWNGRADE_ORDER}"


def test_the_readme_names_every_group_of_the_command() -> None:
    # Both of its lists left out `stages`, whose `release-hold` is the one way to end a queue hold.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    groups = set(GROUPS)
    operators = re.search(r"one command, `lotlens-admin` \(([^)]*)\)", readme)
    layout = re.search(r"^\| `tools/admin` \| (.*)$", readme, re.MULTILINE)
    assert operators is not None and layout is not None
    assert set(re.findall(r"`([a-z-]+)`", operators.group(1))) == groups
    assert groups <= set(re.findall(r"`([a-z-]+)(?: [a-z-]+)?`", layout.group(1))), layout.group(1)
