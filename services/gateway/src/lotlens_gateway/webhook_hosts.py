"""The SSRF guard's verdict on a submission's webhook hosts by DNS, at intake (422, not 201 then
five refused deliveries). Hosts written as addresses are judged without the network in
`validation.py`; a name that does not resolve now is accepted (it may by delivery time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx2

from lotlens_common.urls import BlockedDestination, Resolver, address_refusal
from lotlens_gateway.errors import validation_failed

_DEFAULT_PORTS = {"http": 80, "https": 443}


async def _refusal(url: str, resolve: Resolver, allow_loopback: bool, timeout_s: float) -> str | None:
    parsed = httpx2.URL(url)
    try:
        addresses = await asyncio.wait_for(
            resolve(parsed.host, parsed.port or _DEFAULT_PORTS[parsed.scheme]), timeout_s)
    except (OSError, BlockedDestination, TimeoutError):
        return None
    for address in addresses:
        reason = address_refusal(address, allow_loopback)
        if reason:
            return f"{parsed.host} resolves to {address}, a {reason} address"
    return None


async def refuse_private_webhooks(urls: Sequence[str], resolve: Resolver, allow_loopback: bool,
                                  timeout_s: float) -> None:
    """422 `INVALID_WEBHOOK_URLS` when a webhook host resolves to an address the guard refuses."""
    verdicts = await asyncio.gather(*(_refusal(url, resolve, allow_loopback, timeout_s) for url in urls))
    refused = {url: reason for url, reason in zip(urls, verdicts, strict=True) if reason}
    if refused:
        raise validation_failed("Webhook URLs on non-public addresses are refused",
                                {"invalid_urls": list(refused), "invalid_count": len(refused),
                                 "reasons": refused}, code="INVALID_WEBHOOK_URLS")
