"""What tells "OpenAI cannot be reached" from "OpenAI answered with an error": each HTTP answer is
counted by its status, a call that got none is not (LotLensOpenAIUnreachable reads both)."""

from __future__ import annotations

import asyncio

import pytest

from lotlens_common.model.errors import ModelRequestError, ModelUnavailableError
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from tests.servers import free_port
from tests.standin import Standin

pytestmark = pytest.mark.integration


def test_every_answer_is_told_with_its_status_and_a_refused_connection_is_not(standin: Standin) -> None:
    answers: list[int] = []

    async def calls() -> None:
        reached = OpenAIBatches(make_openai_client(None, standin.base_url, 10, on_answer=answers.append))
        await reached.find_batches({"lotlens_stage": "vision"})
        with pytest.raises(ModelRequestError):
            await reached.retrieve_batch("batch_nobody_made")
        assert answers == [200, 404]
        refused = OpenAIBatches(make_openai_client(None, f"http://127.0.0.1:{free_port()}/v1", 2,
                                                   on_answer=answers.append))
        with pytest.raises(ModelUnavailableError):
            await refused.retrieve_batch("batch_1")

    asyncio.run(calls())
    assert answers == [200, 404], "a call that got no answer is no answer"
