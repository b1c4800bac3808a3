"""`lotlens-admin projections rebuild` runs only from the release the database was migrated to: in
a rollout an operator may `kubectl exec` into a pod of the other release. An older tool's shadow
lacks the newer columns' data and was swapped in silently; a newer tool's every batch failed on
columns the database lacks, for hours, before the swap was refused."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store.shadow import shadow_exists
from tests.integration.admin_support import admin_env, run_admin
from tests.integration.result_store.support import job_script, publish

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("database_at", ["zzzz_future", "0032_idempotency_renewed_at"])
def test_a_rebuild_from_another_release_than_the_databases_is_refused_before_any_replay(
        database_at: str, own_engine: Engine, own_settings: ServiceSettings, own_database: str,
        publisher: EventProducer, topics: TopicSettings) -> None:
    publish(publisher, topics, job_script(2))
    publisher.flush()
    with own_engine.begin() as conn:  # a newer release's migrate Job ran, or this release's did not yet
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": database_at})

    refused = run_admin(admin_env(own_settings.kafka.bootstrap_servers, own_database, topics),
                        "projections", "rebuild")
    assert refused.returncode == 1, (refused.stdout, refused.stderr[-2000:])
    assert "Traceback" not in refused.stderr and database_at in refused.stderr and head in refused.stderr, (
        refused.stderr[-2000:])
    with own_engine.connect() as conn:
        assert not shadow_exists(conn), "it replayed into a shadow"
        assert conn.execute(text("SELECT count(*) FROM lots")).scalar_one() == 0
