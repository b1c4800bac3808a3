"""A consumer batch that finishes no job costs its own transaction and nothing more; one that does,
or one retried after its announcement failed, announces its jobs once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, Engine, event

from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store.handlers import handle
from lotlens_result_store.metrics import DATABASE_OPERATIONS
from tests.conftest import Infra
from tests.integration.plan_support import executed
from tests.integration.result_store.support import Apply, completions, job_published, job_script
from tests.integration.webhook_dispatcher.support import KafkaDown

pytestmark = pytest.mark.integration


def _statements() -> Counter[str]:
    """Statements the result-store has run so far, by operation (its own metric)."""
    return Counter({sample.labels["operation"]: int(sample.value)
                    for metric in DATABASE_OPERATIONS.collect() for sample in metric.samples
                    if sample.name.endswith("_total")})


@contextmanager
def counting(engine: Engine) -> Iterator[tuple[Counter[str], list[Connection]]]:
    """The statements (by operation) and the transactions begun inside the block."""
    statements: Counter[str] = Counter()
    begun: list[Connection] = []

    def begin(conn: Connection) -> None:
        begun.append(conn)

    event.listen(engine, "begin", begin)
    before = _statements()
    try:
        yield statements, begun
    finally:
        event.remove(engine, "begin", begin)
        statements.update(_statements() - before)


def test_a_batch_that_finishes_no_job_runs_one_transaction_and_no_announcement(
        engine: Engine, apply: Apply) -> None:
    # Every batch ran two more transactions after its own (the announcement's usage sum and the
    # announcement, each locking the read models and selecting jobs FOR UPDATE), finished job or
    # not: 5 of a 50,000-lot job's 6 statements around its projection, and PostgreSQL's CPU with them.
    script = job_script(4)
    apply(script.submissions)
    with counting(engine) as (statements, begun):
        apply(script.vision)
    assert len(begun) == 1, f"{len(begun)} transactions for one batch: {sorted(statements.items())}"
    assert statements["lock_batch"] == 1 and not statements["select_unsummed"], statements
    apply(script.translation)
    assert job_published(engine, script.job_id)


def test_a_batch_retried_after_its_announcement_failed_announces_its_job_once(
        engine: Engine, producer: EventProducer, topics: TopicSettings, infra: Infra,
        settings: ServiceSettings) -> None:
    # The batch that finished the job committed, then Kafka did not answer: the consumer retries
    # the batch, whose projection changes nothing now, and it must still announce the job.
    script = job_script(3)
    kafka_down = KafkaDown(settings.kafka, "result-store-test")
    handle(engine, producer, topics.completions, script.submissions + script.vision)
    with pytest.raises(PublishError):
        handle(engine, kafka_down, topics.completions, script.translation)
    assert not job_published(engine, script.job_id) and not completions(infra, topics, script.job_id)
    handle(engine, producer, topics.completions, script.translation)
    assert job_published(engine, script.job_id)
    assert len(completions(infra, topics, script.job_id)) == 1


def test_a_batch_without_results_reads_no_cancelled_jobs(engine: Engine, apply: Apply) -> None:
    # Only a result (a lot's answer, or an announcement) can change an announced cancelled job's
    # usage, yet every batch selected such jobs, a third of a 50,000-lot job's batches with none.
    script = job_script(4)
    with counting(engine) as (statements, _):
        apply(script.submissions)
    assert not statements["select_cancelled"], sorted(statements.items())


def test_a_batch_locks_the_read_models_and_its_jobs_in_one_round_trip(engine: Engine, apply: Apply) -> None:
    # Every batch of a 50,000-lot job (about 305) took the read models' lock and its jobs' locks in
    # two statements, each a round trip and a statement for PostgreSQL to parse and run.
    script = job_script(4)
    apply(script.submissions)
    sent = executed(engine, lambda: apply(script.vision))
    locking = [statement for statement, _ in sent if "LOCK TABLE" in statement or "advisory" in statement]
    assert len(locking) == 1, locking
