"""The gateway owns the clients' `whsec_` secrets: it deletes those whose overlap has ended, and
never makes one again that an operator deleted while it ran."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from lotlens_common import webhook_secrets
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import client_webhook_secrets
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.relay import Relay, RelaySettings
from tests.conftest import Infra, new_id
from tests.integration.admin_support import admin_env, run_admin
from tests.integration.gateway_support import running_gateway
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def secrets_of(engine: Engine, client_id: str) -> set[str]:
    """Every secret the table holds for the client, live or not."""
    with engine.connect() as conn:
        return set(conn.execute(select(client_webhook_secrets.c.secret)
                                .where(client_webhook_secrets.c.client_id == client_id)).scalars())


def test_secrets_past_their_overlap_are_deleted_and_the_live_ones_kept(
        settings: ServiceSettings, engine: Engine) -> None:
    # Every rotated-out secret stayed in the table for good, long after it stopped signing.
    client = new_id("client-")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [client])
        [retired] = webhook_secrets.live(conn, client, now)
        # Rotated three days ago with a day's overlap (over since), and again now with a day's.
        in_overlap = webhook_secrets.rotate(conn, client, timedelta(days=1), now - timedelta(days=3))
        current = webhook_secrets.rotate(conn, client, timedelta(days=1), now)
    assert secrets_of(engine, client) == {retired, in_overlap, current}
    with running_gateway(settings, engine):
        wait_for(lambda: retired not in secrets_of(engine, client), "the retired secret pruned")
    assert secrets_of(engine, client) == {in_overlap, current}
    with engine.connect() as conn:
        assert webhook_secrets.live(conn, client, datetime.now(UTC)) == [current, in_overlap]


def test_a_removed_clients_secret_stays_deleted_while_a_gateway_with_the_old_configuration_runs(
        infra: Infra, settings: ServiceSettings, engine: Engine) -> None:
    # A rollout that removes a client replaces the gateways one by one: the replicas still running
    # the old configuration made its secret again at their minute-ly prune, after every
    # `clients delete`, for as long as they ran.
    removed, other = new_id("removed-client-"), new_id("client-")
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [other])
    old_configuration = RelaySettings(sweep_s=0.2, prune_every_s=0.2, clients=(removed, other))
    gateway = Relay(engine, EventProducer(settings.kafka, "gateway-test"), [], old_configuration,
                    GatewayMetrics())
    gateway.start()
    try:
        # The relay makes the configured clients' secrets after its first prune's deletions, in a
        # transaction of its own: asked as soon as those showed, it failed once in a full run.
        wait_for(lambda: len(secrets_of(engine, removed)) == 1, "the configured client's secret")
        toolbox = admin_env(infra.kafka_bootstrap, infra.database_url)  # no LOTLENS_CLIENTS there
        deleted = run_admin(toolbox, "clients", "delete", removed, "--yes")
        assert deleted.returncode == 0, deleted.stderr
        pruned_once_more(engine, other)
        pruned_once_more(engine, other)
    finally:
        gateway.stop(timeout_s=5)
    assert secrets_of(engine, removed) == set(), "the deleted secret was made again"


def pruned_once_more(engine: Engine, client: str) -> None:
    """Wait until the gateway's periodic work has run again: a secret of `client` whose overlap ends
    now (a rotation with none) is deleted by its next prune."""
    with engine.begin() as conn:
        [retired, *_] = webhook_secrets.live(conn, client, datetime.now(UTC))
        webhook_secrets.rotate(conn, client, timedelta(0), datetime.now(UTC))
    wait_for(lambda: retired not in secrets_of(engine, client), "the retired secret pruned")
