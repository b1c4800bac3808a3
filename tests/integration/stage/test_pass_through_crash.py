"""The translator's English-only pass-through publishes and flushes inside its transaction, before
the commit: a process killed (SIGKILL) between the two has its event on Kafka and its lot
unrecorded, and the redelivered batch publishes the event again under the same id, then records
the lot. Nothing is lost; a subscriber deduplicating by event id sees one event."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import TranslationCompleted, VisionCompleted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_translator.handlers import handle
from tests.conftest import ROOT, new_id
from tests.integration.stage.helpers import job_events

# The handler as the translator's consumer runs it, its producer killing the process once a flush
# has returned: the pass-through's event acknowledged, the transaction not committed.
_CHILD = textwrap.dedent("""
    import os, signal, sys
    from lotlens_common.db import make_engine
    from lotlens_common.envelope import Envelope
    from lotlens_common.events import VisionCompleted
    from lotlens_common.producer import EventProducer
    from lotlens_common.settings import ServiceSettings
    from lotlens_translator.handlers import handle

    class Dying(EventProducer):
        def flush(self, timeout_s: float = 30.0) -> None:
            super().flush(timeout_s)
            os.kill(os.getpid(), signal.SIGKILL)

    job_id, event_id, topic = sys.argv[1:4]
    settings = ServiceSettings()
    envelope = Envelope(VisionCompleted(job_id=job_id, lot_id="lot-0", english_html="<p>Dent.</p>",
                                        languages=("en",), total_lots=1, processed_images=1,
                                        missing_images=()), client_id="c1", event_id=event_id)
    handle(make_engine(settings.database, "translator"), Dying(settings.kafka, "translator"),
           [envelope], topic=topic)
""")


def test_a_translator_killed_between_the_flush_and_the_commit_loses_no_pass_through(
        settings: ServiceSettings, engine: Engine) -> None:
    job_id, event_id = new_id("job-"), new_id("vision-event-")
    topic = settings.topics.translation
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "DATABASE_URL": settings.database.database_url}
    killed = subprocess.run([sys.executable, "-c", _CHILD, job_id, event_id, topic], cwd=ROOT, env=env,
                            timeout=60, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    passed = TranslationCompleted(job_id=job_id, lot_id="lot-0", descriptions={"en": "<p>Dent.</p>"})
    assert [e.event for e in job_events(settings, topic, job_id, 1)] == [passed]
    with engine.connect() as conn:  # the transaction died with its process
        assert store.lot_statuses(conn, "translation", job_id) == {}
    # The batch is delivered again (its offset was never stored), to this process.
    handle(engine, EventProducer(settings.kafka, "t"), [Envelope(VisionCompleted(
        job_id=job_id, lot_id="lot-0", english_html="<p>Dent.</p>", languages=("en",), total_lots=1,
        processed_images=1, missing_images=()), client_id="c1", event_id=event_id)], topic=topic)
    events = job_events(settings, topic, job_id, 2)
    assert [e.event for e in events] == [passed, passed]
    assert len({e.event_id for e in events}) == 1
    with engine.connect() as conn:
        assert store.lot_statuses(conn, "translation", job_id) == {"lot-0": store.SKIPPED}
