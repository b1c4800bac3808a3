"""`lotlens-admin` refuses an argument it cannot use with argparse's usage line and exit code 2,
before anything is read or written (both dependencies are a refused port on loopback)."""

from __future__ import annotations

import pytest

from lotlens_admin.cli import main


@pytest.fixture(autouse=True)
def nothing_to_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://lotlens:lotlens@127.0.0.1:1/lotlens")


@pytest.mark.parametrize(("argv", "problem"), [
    # NaN and infinity went on to a ValueError or OverflowError traceback; -1 was caught by hand.
    (["clients", "rotate", "c1", "--overlap-hours", "nan"], "--overlap-hours"),
    (["clients", "rotate", "c1", "--overlap-hours", "inf"], "--overlap-hours"),
    (["clients", "rotate", "c1", "--overlap-hours", "1e12"], "--overlap-hours"),
    (["clients", "rotate", "c1", "--overlap-hours", "-1"], "--overlap-hours"),
    # A rebuild with batches of 0 or fewer events started, then failed inside the consumer.
    (["projections", "rebuild", "--batch-size", "0"], "--batch-size"),
    (["projections", "rebuild", "--batch-size", "-5"], "--batch-size"),
])
def test_an_unusable_number_is_a_usage_error(argv: list[str], problem: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err


def test_an_overlap_of_zero_hours_is_allowed(capsys: pytest.CaptureFixture[str]) -> None:
    # It ends the old secret's signing at once: a usable choice, refused by nothing but the database.
    assert main(["clients", "rotate", "c1", "--overlap-hours", "0"]) == 3
