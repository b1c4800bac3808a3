"""Revisions keep the schema they were written for: none reads `tables.py` (or anything else of
LotLens), so editing the models never changes what an old revision does, and the chain stays one
line from the baseline to the head."""

from __future__ import annotations

import ast
from pathlib import Path

from alembic.script import ScriptDirectory

from lotlens_common.db import MIGRATIONS
from lotlens_common.migrations.refusals import Refusal

REVISIONS = sorted((MIGRATIONS / "versions").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module the file imports, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


# How to build an index without blocking writes: machinery, not a schema (it names no table).
# How to refuse a downgrade that would lose what nothing brings back: machinery too.
MACHINERY = {"lotlens_common.migrations", "lotlens_common.migrations.concurrent_indexes",
             "lotlens_common.migrations.refusals"}


def test_no_revision_imports_the_models_or_any_lotlens_module() -> None:
    readers = {path.name: sorted(m for m in imported_modules(path)
                                 if m.split(".")[0].startswith("lotlens") and m not in MACHINERY)
               for path in REVISIONS}
    assert {name: modules for name, modules in readers.items() if modules} == {}


def test_every_revision_can_be_undone() -> None:
    # 14 had no `downgrade()`: `lotlens-admin db downgrade` stopped at the first of them with an
    # AttributeError. What each one undoes is held by tests/integration/test_migration_downgrades.py.
    functions = {path.name: {node.name for node in ast.parse(path.read_text()).body
                             if isinstance(node, ast.FunctionDef)} for path in REVISIONS}
    assert sorted(name for name, defined in functions.items() if "downgrade" not in defined) == []


def test_a_revision_that_refuses_declares_its_refusal_where_the_admin_command_asks_it() -> None:
    # `db downgrade` asks each revision's module-level REFUSAL before its first step: a refusal
    # kept inside downgrade() was met only on reaching it, the revisions above it undone.
    scripts = ScriptDirectory(str(MIGRATIONS))
    undeclared = [script.revision for script in scripts.walk_revisions()
                  if "Refusal" in Path(script.path).read_text()
                  and not isinstance(getattr(script.module, "REFUSAL", None), Refusal)]
    assert undeclared == []
    assert {script.revision for script in scripts.walk_revisions() if hasattr(script.module, "REFUSAL")} == {
        "0001", "0011_outbox", "0013_client_webhook_secrets", "0017_shard_tokens_bigint"}


def test_the_revisions_form_one_line_from_the_baseline_to_one_head() -> None:
    scripts = ScriptDirectory(str(MIGRATIONS))
    chain = list(scripts.walk_revisions())  # from the head down
    assert len(scripts.get_heads()) == 1
    assert all(not script.is_merge_point and not script.is_branch_point for script in chain)
    assert chain[-1].revision == "0001" and chain[-1].down_revision is None
    assert len(chain) == len(REVISIONS)


def test_every_revision_id_fits_the_version_table() -> None:
    # alembic_version.version_num is varchar(32): a longer id failed `migrate` at deploy time,
    # after its schema change was made and rolled back.
    revisions = [script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()]
    assert [revision for revision in revisions if len(revision) > 32] == []


def test_every_revision_is_named_after_its_file() -> None:
    # A file renamed without its id recorded one revision under another's name in
    # alembic_version: `0031_dispatch_part_plan.py` said 0032, so the next revision's down_revision
    # was written against the file name and the chain broke (review 8).
    scripts = ScriptDirectory(str(MIGRATIONS))
    names = {Path(script.path).stem: script.revision for script in scripts.walk_revisions()}
    assert {name: revision for name, revision in names.items()
            if revision != name and not name.startswith(f"{revision}_")} == {}
