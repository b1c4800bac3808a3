"""The only module that talks to the model API (OpenAI or the stand-in), through the official SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson

from lotlens_common.model.batch_files import split_lines
from lotlens_common.model.errors import (
    ModelConnectTimeoutError,
    ModelError,
    ModelOutputError,
    ModelQuotaExceededError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    ModelUnreachableError,
)
from lotlens_common.redaction import redacted
from lotlens_common.settings import DEFAULT_STANDIN_BASE_URL, OPENAI_API_URL, OpenAISettings

# The SDK refuses to start without some key; the stand-in ignores it unless it was given one.
_STANDIN_PLACEHOLDER_KEY = "sk-lotlens-standin"
MAX_RETRY_WAIT_S = 60.0
# A request timeout and a lock conflict: the SDK's own retry policy asks both again.
_PASSING_4XX = frozenset({408, 409})
_BACKOFF_BASE_S = 0.5
# A call with a deadline reads its answer this long past it: the caller's own deadline
# (`asyncio.timeout_at`) is what ends the wait, so its 504 is the budget's, not a read timeout's.
_DEADLINE_GRACE_S = 1.0
# Batches a page of the listing holds: the most the API's `limit` takes.
LIST_PAGE_SIZE = 100


def openai_client_for(model: OpenAISettings, on_answer: Callable[[int], None] | None = None
                      ) -> openai.AsyncOpenAI:
    """The client a service's settings describe (see `make_openai_client`)."""
    return make_openai_client(model.secret_key(), model.model_url(), model.timeout_s, on_answer)


def make_openai_client(api_key: str | None, base_url: str | None, timeout: float,
                       on_answer: Callable[[int], None] | None = None) -> openai.AsyncOpenAI:
    """An async client; without a key it points at the stand-in (unless base_url says otherwise).

    `on_answer` is told the status of every HTTP answer (each of the SDK's tries): a call refused or
    timed out before any answer tells it nothing, which is how "OpenAI cannot be reached" differs
    from "OpenAI answered with an error"."""
    http_client = None
    if on_answer is not None:
        async def answered(response: httpx2.Response) -> None:
            on_answer(response.status_code)

        http_client = openai.DefaultAsyncHttpxClient(event_hooks={"response": [answered]})
    if api_key is None:
        return openai.AsyncOpenAI(api_key=_STANDIN_PLACEHOLDER_KEY,
                                  base_url=base_url or DEFAULT_STANDIN_BASE_URL, timeout=timeout,
                                  http_client=http_client)
    return openai.AsyncOpenAI(api_key=api_key, base_url=base_url or OPENAI_API_URL, timeout=timeout,
                              http_client=http_client)


def _retry_after_s(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            continue
    return None


def _describe(exc: openai.APIError) -> str:
    status = getattr(exc, "status_code", None)
    prefix = f"HTTP {status} " if status else ""
    return f"{prefix}{exc.code or exc.type or type(exc).__name__}: {exc.message}"


def _cause(exc: openai.OpenAIError) -> str:
    """What the HTTP library said went wrong, without the request's credentials: h11 quotes the
    header it refuses (`Illegal header value b'Bearer sk-...\\n'`), the key whole."""
    return redacted(str(exc.__cause__ or exc))


def _mapped(exc: openai.OpenAIError) -> ModelError:
    """Our error for an SDK error that will not be retried (here)."""
    if isinstance(exc, openai.APITimeoutError):
        if isinstance(exc.__cause__, httpx2.ConnectTimeout):  # the connection was never made
            return ModelConnectTimeoutError(f"the model API is unreachable: {_cause(exc)}")
        # A read or write timeout: the server has (some of) the request, and may be stuck on it.
        return ModelTimeoutError(f"the model API timed out: {exc}")
    if isinstance(exc, openai.APIConnectionError):
        if isinstance(exc.__cause__, httpx2.ConnectError):  # refused, no route, no such host
            return ModelUnreachableError(f"the model API is unreachable: {_cause(exc)}")
        # Dropped midway (reset, closed without an answer): the server had the request, and
        # may fall over on this one alone.
        return ModelUnavailableError(f"the model API's connection failed: {_cause(exc)}")
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            return ModelQuotaExceededError(_describe(exc))
        return ModelRateLimitedError(_describe(exc), _retry_after_s(exc))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return ModelUnavailableError(_describe(exc))
        return ModelRequestError(_describe(exc), exc.status_code, exc.code, exc.type, exc.param)
    return ModelUnavailableError(f"the model API call failed: {redacted(str(exc))}")


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Re-raise SDK errors as LotLens model errors."""
    try:
        yield
    except openai.OpenAIError as exc:
        raise _mapped(exc) from exc


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ModelOutputError(f"the model API answered with non-JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ModelOutputError("the model API answered with a non-object")
    return body


def _transient_wait(exc: openai.OpenAIError, attempt: int) -> float | None:
    """Seconds to wait before retrying, or None when this error is not worth a retry."""
    backoff = _BACKOFF_BASE_S * 2.0 ** (attempt - 1)
    if isinstance(exc, openai.APIStatusError):
        asked = _retry_after_s(exc)
        if ((isinstance(exc, openai.RateLimitError) and exc.code == "insufficient_quota")
                or (asked is not None and asked > MAX_RETRY_WAIT_S)):
            # No wait ends it, or not one this loop takes: asked again sooner than the API said,
            # the call met another 429 and spent an attempt. Given up with the wait it asked.
            return None
        # The API's own word on this answer, which the SDK's policy (replaced here) follows.
        should_retry = exc.response.headers.get("x-should-retry")
        if should_retry in ("true", "false"):
            return (asked or backoff) if should_retry == "true" else None
        if isinstance(exc, openai.RateLimitError):
            return asked or backoff
    if isinstance(exc, openai.APITimeoutError):
        # Waiting another full timeout would double a synchronous caller's wait.
        return None
    if isinstance(exc, openai.InternalServerError | openai.APIConnectionError):
        return backoff
    if isinstance(exc, openai.APIStatusError) and exc.status_code in _PASSING_4XX:
        return backoff
    return None


def _until(client: openai.AsyncOpenAI, deadline: float, now: float) -> httpx2.Timeout:
    """An attempt's timeout when the caller has a deadline: the answer is waited for until then,
    whatever the client's own timeout (`OPENAI_TIMEOUT_S`'s 120 s ended the calls of a 290 s
    synchronous budget, and a timeout is not asked again); connecting takes no longer than before."""
    left = max(deadline - now, 0.0) + _DEADLINE_GRACE_S
    connect = httpx2.Timeout(client.timeout).connect
    return httpx2.Timeout(left, connect=left if connect is None else min(connect, left))


async def call_responses(client: openai.AsyncOpenAI, body: Mapping[str, Any], *,
                         max_attempts: int = 3, deadline: float | None = None) -> dict[str, Any]:
    """POST a body to `/responses` and return the raw JSON response.

    429 (honouring Retry-After), 408, 409, 5xx and connection errors are retried up to `max_attempts` calls
    in all; everything else, and the last failure, is raised as a LotLens model error. So is a
    failure whose wait would end at or past `deadline` (the event loop's clock): the caller's
    budget would run out asleep. With a deadline, each attempt waits for its answer until then
    (`_until`), not for the client's timeout.
    """
    # Our own loop does the retrying, so the SDK's hidden retries would only multiply attempts.
    single_shot = client.with_options(max_retries=0)
    loop = asyncio.get_running_loop()
    reached = False  # an attempt got to the server: the call is not "unreachable" whatever follows
    for attempt in range(1, max_attempts + 1):
        try:
            timeout = openai.NOT_GIVEN if deadline is None else _until(client, deadline, loop.time())
            raw = await single_shot.responses.with_raw_response.create(**body, timeout=timeout)
            return _json_object(raw.content)
        except openai.OpenAIError as exc:
            mapped = _mapped(exc)
            reached = reached or not isinstance(mapped, ModelUnreachableError)
            wait = _transient_wait(exc, attempt)
            past_deadline = wait is not None and deadline is not None and loop.time() + wait >= deadline
            if wait is None or attempt == max_attempts or past_deadline:
                if reached and isinstance(mapped, ModelUnreachableError):
                    # The request that brought the server down, retried while it restarts.
                    raise ModelUnavailableError(f"the model API dropped the call, then could not be "
                                                f"reached: {exc}") from exc
                raise mapped from exc
            await asyncio.sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")


class OpenAIBatches:
    """The Files and Batch API calls the batch services need, as plain dicts and bytes."""

    # A create answered with a timeout or a 5xx may make its batch after the answer.
    creates_land_late = True

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self._client = client

    async def upload_batch_file(self, path: Path) -> str:
        """Upload a JSONL input file (streamed from disk) with purpose `batch`; returns the file id."""
        with path.open("rb") as handle, mapped_errors():
            uploaded = await self._client.files.create(file=(path.name, handle), purpose="batch")
        return uploaded.id

    async def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        """Start a 24h `/v1/responses` batch over an uploaded file, asked once.

        The SDK would retry a lost answer without an idempotency key, and each retry could start
        another batch over the same file. The caller's recovery finds a batch that was created by
        its metadata before it creates another.
        """
        with mapped_errors():
            batch = await self._client.with_options(max_retries=0).batches.create(
                input_file_id=input_file_id, endpoint="/v1/responses", completion_window="24h",
                metadata=metadata)
        return batch.to_dict()

    async def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (one no batch was created over)."""
        with mapped_errors():
            await self._client.files.delete(file_id)

    async def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch object as the API returns it."""
        with mapped_errors():
            batch = await self._client.batches.retrieve(batch_id)
        return batch.to_dict()

    async def find_batches(self, metadata_match: Mapping[str, str],
                           limit_pages: int = 50) -> list[dict[str, Any]]:
        """Batches (newest first) whose metadata holds every given pair, from up to `limit_pages`
        pages of the listing: the reconciler's and the watcher's view of the stage's batches."""
        with mapped_errors():
            return [batch async for batch in self._matching(metadata_match, limit_pages)]

    async def find_batch(self, metadata_match: Mapping[str, str],
                         limit_pages: int = 50) -> dict[str, Any] | None:
        """The newest batch whose metadata holds every given pair, or None: recovery of one shard.

        The listing stops at the page that shows it: read to its end (50 pages, 5,000 batches), it
        cost each dead builder's shard every page after the one that held its batch.
        """
        with mapped_errors():
            async with aclosing(self._matching(metadata_match, limit_pages)) as found:
                async for batch in found:
                    return batch
        return None

    async def _matching(self, metadata_match: Mapping[str, str],
                        limit_pages: int) -> AsyncGenerator[dict[str, Any], None]:
        """The listed batches whose metadata holds every given pair, a page read when needed."""
        page = await self._client.batches.list(limit=LIST_PAGE_SIZE)
        for _ in range(limit_pages):
            for batch in page.data:
                metadata = batch.metadata or {}
                if all(metadata.get(key) == value for key, value in metadata_match.items()):
                    yield batch.to_dict()
            if not page.has_next_page():
                return
            page = await page.get_next_page()

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Ask the API to cancel a batch, once; it goes through `cancelling` to `cancelled`.

        A batch that cannot be cancelled (finished, or finalizing) is answered 409, which the SDK
        takes for a lock conflict and asks twice more after a backoff: each poll of such a batch
        held the stage's round that long. Any failure is asked again at the next poll anyway.
        """
        with mapped_errors():
            batch = await self._client.with_options(max_retries=0).batches.cancel(batch_id)
        return batch.to_dict()

    async def iter_file_lines(self, file_id: str) -> AsyncIterator[bytes]:
        """A file's lines (without newlines, blank ones skipped), streamed: never the whole file in memory."""
        with mapped_errors():
            async with self._client.files.with_streaming_response.content(file_id) as response:
                # The pieces of the line not ended yet: appending each chunk to the rest and
                # splitting it all again was quadratic (a 32 MB line in 16 KB chunks took 26 s).
                pending: list[bytes] = []
                async for chunk in response.iter_bytes():
                    for line in split_lines(chunk, pending):
                        yield line
                tail = b"".join(pending)
                if tail.strip():
                    yield tail
