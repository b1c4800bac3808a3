"""What an idle stage asks PostgreSQL at each round: it runs five times a second with a short poll
interval, so each statement it need not run is CPU spent for nothing, in the stage and the database."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.runner import step
from tests.integration.plan_support import on_each_statement
from tests.integration.stage.helpers import runtime
from tests.standin import Standin

pytestmark = pytest.mark.integration


def test_an_idle_round_does_not_ask_which_of_no_jobs_were_cancelled(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # With no batch in flight, the watch still asked which of their (no) jobs were cancelled: one
    # transaction of the four an idle round ran.
    statements: list[str] = []

    async def idle_rounds() -> None:
        async with runtime(settings, engine, standin) as rt:
            await step(rt, watching=True)
            with on_each_statement(engine, lambda statement, _: statements.append(statement)):
                await step(rt, watching=True)

    asyncio.run(idle_rounds())
    asked = [statement for statement in statements if "stage_jobs.cancelled" in statement]
    assert statements and not asked, asked
