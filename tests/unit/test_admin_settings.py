"""`lotlens-admin` in an environment with a setting that is not a value (a typo in the config map,
a half-pasted DATABASE_URL): one line naming the setting and exit 1, no traceback, and never the
value itself (a URL holds the database's password)."""

from __future__ import annotations

import pytest

from lotlens_admin.cli import main

PASSWORD = "hunter2-not-to-be-echoed"


@pytest.mark.parametrize(("variable", "value", "argv", "named"), [
    ("KAFKA_COMMAND_TIMEOUT_S", "ten", ["dlq", "list"], "KAFKA_COMMAND_TIMEOUT_S"),
    ("DATABASE_POOL_SIZE", "many", ["shards", "paused"], "DATABASE_POOL_SIZE"),
    ("DATABASE_URL", f"lotlens:{PASSWORD}@127.0.0.1:1/lotlens", ["jobs", "show", "j"], "DATABASE_URL"),
    ("DATABASE_URL", f"postgresql+nosuchdriver://lotlens:{PASSWORD}@127.0.0.1:1/lotlens", ["clients", "list"],
     "DATABASE_URL"),
])
def test_a_setting_that_is_not_a_value_is_one_line_naming_it_and_exit_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str,
        argv: list[str], named: str) -> None:
    monkeypatch.setenv(variable, value)
    assert main(argv) == 1
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert out == "" and line.startswith("lotlens-admin: a setting of this environment is wrong: ")
    assert named in line and PASSWORD not in line
