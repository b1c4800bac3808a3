"""What both clients share to move bytes: their httpx2 options, reading a body (a cut one is a
`NetworkError`), the `.part` file a download is written to, and the answers whose code is read."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2

from lotlens_client import calls
from lotlens_client.errors import LotLensError
from lotlens_client.models import JobStatus


def package_version() -> str:
    """The installed version of `lotlens-client`."""
    try:
        return importlib.metadata.version("lotlens-client")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


USER_AGENT = f"lotlens-client/{package_version()}"
DEFAULT_TIMEOUT_S = 30.0
# Answers whose API code decides whether they are retried (resends.RetryPolicy.delay).
CODE_DECIDES = frozenset({409, 502, 504})
ProgressCallback = Callable[[JobStatus], object]
# Told each status poll of `wait_for_job` that failed and is polled again (or ends the wait).
PollFailedCallback = Callable[[LotLensError], object]


def http_options(base_url: str, timeout: float, user_agent: str) -> dict[str, Any]:
    """The options both httpx2 clients are built with."""
    return {"base_url": base_url.rstrip("/"), "timeout": timeout,
            "headers": {"User-Agent": user_agent, "Accept": "application/json"}}


def part_file(path: Path) -> Path:
    """Where a download is written until it is whole."""
    return path.with_name(path.name + ".part")


def read(response: httpx2.Response) -> bytes:
    """The body of a streamed answer; a `NetworkError` when it is cut."""
    try:
        return response.read()
    except httpx2.RequestError as exc:  # DecodingError too: not a TransportError
        raise calls.network_error(exc) from exc


async def aread(response: httpx2.Response) -> bytes:
    """`read`, awaited."""
    try:
        return await response.aread()
    except httpx2.RequestError as exc:
        raise calls.network_error(exc) from exc
