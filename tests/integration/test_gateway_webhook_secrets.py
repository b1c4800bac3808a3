"""The gateway owns the clients' `whsec_` secrets: it deletes those whose overlap has ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from lotlens_common import webhook_secrets
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import client_webhook_secrets
from tests.conftest import new_id
from tests.integration.gateway_support import running_gateway
from tests.integration.webhook_dispatcher.support import wait_for

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
        wait_for(lambda: retired not in secrets_of(engine, client))
    assert secrets_of(engine, client) == {in_overlap, current}
    with engine.connect() as conn:
        assert webhook_secrets.live(conn, client, datetime.now(UTC)) == [current, in_overlap]
