"""Direct mode: the shard's requests sent one by one to an API without a Batch endpoint.

For OpenAI-compatible servers (vLLM, Ollama and the like). The same request bodies and the same
result handling as batches; concurrency is bounded and 429/Retry-After is honoured by
`call_responses`. A crash mid-shard re-sends the shard on recovery: on a self-hosted backend a
repeated request costs time, not money.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lotlens_common.model.errors import ModelError
from lotlens_common.stage import metrics, store
from lotlens_common.stage.collect import Collector
from lotlens_common.stage.ports import DirectCall
from lotlens_common.stage.runtime import StageRuntime
from lotlens_common.stage.spec import LotWork


async def run_direct(rt: StageRuntime, call: DirectCall, shard: store.Shard,
                     requests: list[tuple[LotWork, dict[str, Any]]]) -> None:
    """Send every request and settle every lot (the caller closes the shard)."""
    limit = asyncio.Semaphore(rt.settings.direct_concurrency)
    collector = Collector(rt, shard, cancelled=False)

    async def one(lot: LotWork, body: dict[str, Any]) -> None:
        async with limit:
            try:
                answer = await call(body)
            except ModelError as exc:
                metrics.openai_error(rt.spec.name, "responses", exc)
                collector.retry(lot, str(exc))
                return
        collector.succeeded(lot, answer)

    await asyncio.gather(*(one(lot, body) for lot, body in requests))
    collector.flush()
