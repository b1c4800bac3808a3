"""A webhook sent anywhere but `lots[].webhook` through a real gateway: refused (422), where it
was accepted with `webhook_configured: false` and the integrator never got a webhook."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from lotlens_common.tables import outbox
from tests.integration.gateway_support import Gateway, make_lots

pytestmark = pytest.mark.integration

HOOK = "https://hooks.example.com/done"


def jobs_written(engine: Engine, client_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count(func.distinct(outbox.c.job_id)))
                                .where(outbox.c.client_id == client_id)).scalar_one())


def refusal(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == "VALIDATION_ERROR" and isinstance(body["error"], str)
    return body


@pytest.mark.parametrize("field", ["webhook", "webhook_url", "callback_url"])
@pytest.mark.parametrize("lot_count", [1, 3], ids=["sync", "batch"])
def test_a_webhook_beside_the_lots_is_refused_naming_where_it_belongs(
        gateway: Gateway, engine: Engine, field: str, lot_count: int) -> None:
    misplaced: dict[str, Any] = {field: HOOK}
    body = refusal(gateway.submit(make_lots(lot_count), **misplaced))
    assert f"`{field}`" in body["message"] and "lots[].webhook" in body["message"]
    assert body["details"]["errors"] == [{"field": field, "problem": "misplaced: a webhook is set per lot",
                                          "belongs_in": "lots[].webhook"}]
    assert jobs_written(engine, gateway.client_id) == 0


@pytest.mark.parametrize("field", ["webhook_url", "callback_url"])
def test_a_lot_s_webhook_under_another_name_is_refused_naming_the_lot(
        gateway: Gateway, engine: Engine, field: str) -> None:
    lots = make_lots(3)
    lots[1][field] = HOOK
    body = refusal(gateway.submit(lots))
    assert body["details"]["errors"] == [{"lot_index": 1, "field": field,
                                          "problem": "misplaced: a lot's webhook goes in `webhook`",
                                          "belongs_in": "lots[].webhook"}]
    assert jobs_written(engine, gateway.client_id) == 0


def test_empty_webhook_spellings_and_other_unknown_fields_are_still_accepted(gateway: Gateway) -> None:
    # A client that serialises its unset options as null believes no webhook is set: nothing to refuse.
    lots = make_lots(2, webhook=HOOK)
    lots[0] |= {"webhook_url": None, "callback_url": "", "colour": "red"}
    accepted = gateway.submit(lots, webhook=None, webhook_url="", callback_url=None, client_ref="x-1")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["webhook_configured"] is True
