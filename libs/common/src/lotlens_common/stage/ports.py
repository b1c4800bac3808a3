"""What the stage needs from the OpenAI Batch API (the real adapter or a test fake)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol


class BatchesPort(Protocol):
    """Files and batches, as `lotlens_common.model.openai_client.OpenAIBatches` offers them."""

    async def upload_batch_file(self, path: Path) -> str:
        """Upload a JSONL input file; its file id."""
        ...

    async def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        """Create a batch over an uploaded file."""
        ...

    async def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch object as it is now."""
        ...

    async def find_batches(self, metadata_match: Mapping[str, str],
                           limit_pages: int = 50) -> list[dict[str, Any]]:
        """Batches whose metadata contains all these pairs, newest first."""
        ...

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Ask OpenAI to cancel a batch."""
        ...

    def iter_file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        """Stream a file's lines."""
        ...


# Direct mode: a request body in, the response body out (e.g. `partial(call_responses, client)`).
DirectCall = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]
