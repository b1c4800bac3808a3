"""The stand-in's append-only logs: entries come back in order, and a kill -9's torn last line goes."""

from __future__ import annotations

from pathlib import Path

from lotlens_openai_standin.durable import StateStore
from lotlens_openai_standin.ledger import BatchLedger


def test_entries_come_back_in_the_order_appended_by_key(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.append("batch_answers", "batch_a", {"lot-1": 1})
    store.append("batch_answers", "batch_b", {"lot-9": 9})
    store.append("batch_answers", "batch_a", {"lot-2": 2})
    assert store.load_log("batch_answers", "batch_a") == [{"lot-1": 1}, {"lot-2": 2}]
    assert store.load_log("batch_answers", "batch_b") == [{"lot-9": 9}]
    assert store.load_log("batch_answers", "batch_c") == []


def test_a_torn_last_line_is_dropped_and_the_next_entry_starts_a_line_of_its_own(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.append("batch_answers", "batch_a", {"lot-1": 1})
    log = tmp_path / "batch_answers" / "batch_a.jsonl"
    with log.open("ab") as torn:
        torn.write(b'{"lot-2": ')
    assert store.load_log("batch_answers", "batch_a") == [{"lot-1": 1}]
    restarted = StateStore(tmp_path)
    restarted.mend_logs("batch_answers")
    restarted.append("batch_answers", "batch_a", {"lot-2": 2})
    assert restarted.load_log("batch_answers", "batch_a") == [{"lot-1": 1}, {"lot-2": 2}]


def test_a_whole_entry_missing_only_its_line_end_is_dropped_too(tmp_path: Path) -> None:
    # Its batch record was never saved after it, so its lines run again on restart.
    (tmp_path / "batch_answers").mkdir()
    (tmp_path / "batch_answers" / "batch_a.jsonl").write_bytes(b'{"lot-1": 1}\n{"lot-2": 2}')
    StateStore(tmp_path).mend_logs("batch_answers")
    assert StateStore(tmp_path).load_log("batch_answers", "batch_a") == [{"lot-1": 1}]
    assert (tmp_path / "batch_answers" / "batch_a.jsonl").read_bytes() == b'{"lot-1": 1}\n'


def test_a_log_torn_on_its_only_line_is_mended_to_nothing(tmp_path: Path) -> None:
    (tmp_path / "batch_answers").mkdir()
    (tmp_path / "batch_answers" / "batch_a.jsonl").write_bytes(b'{"lot-1": ')
    StateStore(tmp_path).mend_logs("batch_answers")
    assert (tmp_path / "batch_answers" / "batch_a.jsonl").read_bytes() == b""


def test_without_a_state_directory_nothing_is_kept(tmp_path: Path) -> None:
    store = StateStore(None)
    store.append("batch_answers", "batch_a", {"lot-1": 1})
    assert store.load_log("batch_answers", "batch_a") == []


def test_a_line_run_again_after_a_restart_shows_its_last_answer(tmp_path: Path) -> None:
    ledger = BatchLedger(tmp_path)
    ledger.record_requests("batch_a", ["lot-1", "lot-2"])
    ledger.record_answers("batch_a", {"lot-1": {"status": 500}})
    ledger.record_answers("batch_a", {"lot-1": {"status": 200}, "lot-2": {"status": 200}})
    assert BatchLedger(tmp_path).read("batch_a") == {
        "batch_id": "batch_a", "custom_ids": ["lot-1", "lot-2"],
        "answers": {"lot-1": {"status": 200}, "lot-2": {"status": 200}}}
    assert ledger.read("batch_b") == {"batch_id": "batch_b", "custom_ids": [], "answers": {}}
