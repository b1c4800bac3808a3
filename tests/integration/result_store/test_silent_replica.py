"""A result-store replica that goes silent inside its batch's transaction (its process frozen or
SIGSTOPped, its node gone, a NAT or conntrack entry dropped) while its PostgreSQL session stays
open: the job it had locked is another replica's again after the idle-transaction timeout, not
after the kernel's two hours of keepalive silence, and the job is applied once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection

import pytest
from sqlalchemy import Connection, Engine, make_url, text

from lotlens_common.db import make_engine
from lotlens_common.envelope import Envelope
from lotlens_common.kafka import TRANSIENT_ERRORS
from lotlens_common.producer import EventProducer
from lotlens_common.settings import DatabaseSettings, TopicSettings
from lotlens_result_store import handlers
from lotlens_result_store.completion import refresh_cancelled_usage
from tests.conftest import Infra
from tests.freezing_proxy import freezing_proxy
from tests.integration.result_store.support import assert_job_finished, job_published, job_script

pytestmark = pytest.mark.integration

# How long the other replica keeps retrying the job before the test calls it stuck.
PATIENCE_S = 20.0


def test_a_job_locked_by_a_replica_gone_silent_is_applied_by_another_once_its_session_idles_out(
        engine: Engine, producer: EventProducer, infra: Infra, topics: TopicSettings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The services' settings as an SRE sets them, from the environment; short, for the test.
    monkeypatch.setenv("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "2000")
    monkeypatch.setenv("DATABASE_WORKER_LOCK_TIMEOUT_MS", "1000")
    job = job_script(3, failed=[1])
    went_silent = threading.Event()

    def silent_midway(conn: Connection, job_ids: Collection[str]) -> None:
        if not went_silent.is_set():  # the first replica: its job's lock and rows are on the server
            went_silent.set()
            proxy.freeze()
        refresh_cancelled_usage(conn, job_ids)

    monkeypatch.setattr(handlers, "refresh_cancelled_usage", silent_midway)
    with freezing_proxy(make_url(infra.database_url).port or 5432) as proxy:
        silent = _service_engine(make_url(infra.database_url).set(port=proxy.port)
                                 .render_as_string(hide_password=False))
        other = _service_engine(infra.database_url)
        try:
            threading.Thread(target=_apply, args=(silent, producer, topics, job.all_events()),
                             name="silent-replica", daemon=True).start()
            assert went_silent.wait(30), "the first replica never reached its job's rows"
            seconds, errors = _applied_by(other, producer, topics, job.all_events())
            print(f"applied by the other replica after {seconds:.1f} s, {len(errors)} tries refused")
        finally:
            other.dispose()
        # Still frozen: the silent replica's session is gone for the server, not for its client.
        proxy.thaw()
        silent.dispose()
    assert job_published(engine, job.job_id)
    assert_job_finished(engine, job)
    # Refused while the silent session held the job, then applied: a retry, nothing else.
    assert errors and all("lock timeout" in error for error in errors), errors[-3:]


def _service_engine(database_url: str) -> Engine:
    """The result-store's engine, as its `__main__` builds it."""
    database = DatabaseSettings(DATABASE_URL=database_url)
    return make_engine(database, "result-store", limits=database.worker_limits())


def _apply(engine: Engine, producer: EventProducer, topics: TopicSettings,
           envelopes: list[Envelope]) -> None:
    """The silent replica's batch: it never ends well (its connection ends with the proxy)."""
    with contextlib.suppress(Exception):
        handlers.handle(engine, producer, topics.completions, envelopes)


def _applied_by(engine: Engine, producer: EventProducer, topics: TopicSettings,
                envelopes: list[Envelope]) -> tuple[float, list[str]]:
    """Apply the batch as the consumer loop does, retrying it after each transient failure; the
    seconds it took and the errors of the refused tries."""
    started = time.monotonic()
    errors: list[str] = []
    while True:
        try:
            handlers.handle(engine, producer, topics.completions, envelopes)
            return time.monotonic() - started, errors
        except TRANSIENT_ERRORS as exc:
            errors.append(str(getattr(exc, "orig", exc)).strip())
        if time.monotonic() - started > PATIENCE_S:
            raise AssertionError(f"the job was still locked {PATIENCE_S:.0f} s after the replica holding "
                                 f"it went silent ({len(errors)} tries refused: {errors[-1]}); "
                                 f"sessions idle in transaction: {_idle_in_transaction(engine)}")


def _idle_in_transaction(engine: Engine) -> list[str]:
    """The result-store's sessions idle inside a transaction, and for how long."""
    with engine.connect() as conn:
        return [f"pid {pid}, idle {seconds:.0f} s" for pid, seconds in conn.execute(text(
            "SELECT pid, extract(epoch FROM now() - state_change) FROM pg_stat_activity "
            "WHERE application_name = 'lotlens-result-store' AND state = 'idle in transaction'"))]
