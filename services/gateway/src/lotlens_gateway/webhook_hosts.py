"""The SSRF guard's verdict on a submission's webhook hosts by DNS, at intake (422, not 201 then
five refused deliveries). Hosts written as addresses are judged without the network in
`validation.py`. A name that does not resolve is refused like one resolving to a private address,
with the same reason (`urls.not_public`): accepted while the other was 422, it told any client
which of the network's internal names exist. The log says which it was. Only the resolver's
"no such name" (EAI_NONAME, EAI_NODATA) or a name no DNS name can be is a verdict; a lookup that
gives no answer in time, "try again", or a failure of the gateway's own resolver (EAI_FAIL,
EAI_SYSTEM, EAI_MEMORY, ...) is none: the job is accepted and the log says so. Those failures
used to read as "does not resolve": every job with a webhook was 422 while the DNS was down.

This check is a courtesy, not the guard: the dispatcher resolves and judges every webhook host
again when it connects (`lotlens_webhook_dispatcher.guard`), and connects only to the address it
judged. So only a job's first `max_hosts` distinct hosts are looked up here; the others are
judged at delivery alone. Looking up all of them (up to one per lot, 50,000) let one tiny job on a
domain whose DNS never answers hold the lookup threads every client's image checks use.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

import httpx2

from lotlens_common.urls import (
    BlockedDestination,
    LookupTryAgain,
    Resolver,
    address_refusal,
    connect_host,
    not_public,
    reachable,
)
from lotlens_gateway.errors import validation_failed
from lotlens_gateway.validation import MAX_LISTED

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}
# getaddrinfo's errors that are about the name, not about the resolver.
_NO_SUCH_NAME = frozenset({socket.EAI_NONAME, socket.EAI_NODATA})


async def _refusal(host: str, port: int, resolve: Resolver, allow_loopback: bool,
                   timeout_s: float) -> str | None:
    try:
        addresses = await asyncio.wait_for(resolve(host, port), timeout_s)
    except (LookupTryAgain, TimeoutError):
        return None
    except (OSError, BlockedDestination) as exc:  # BlockedDestination is an OSError too
        if not _no_such_name(exc):
            log.warning("webhook host accepted at intake: cannot judge %s now: %s", host,
                        exc.__cause__ or exc)
            return None
        log.info("webhook host refused at intake: cannot resolve %s: %s", host, exc.__cause__ or exc)
        return str(not_public(host))
    try:
        reachable(host, addresses, allow_loopback)
    except BlockedDestination as refused:
        kinds = sorted({f"{kind} address ({address})" for address in addresses
                        if (kind := address_refusal(address, allow_loopback))})
        log.info("webhook host refused at intake: %s resolves to a %s", host,
                 ", ".join(kinds) or "no address")
        return str(refused)
    return None


async def refuse_private_webhooks(urls: Sequence[str], resolve: Resolver, allow_loopback: bool,
                                  timeout_s: float, max_hosts: int) -> None:
    """422 `INVALID_WEBHOOK_URLS` when one of the first `max_hosts` distinct webhook hosts does not
    resolve or resolves to an address the guard refuses.

    Each host is looked up once, however many URLs name it (a job's 2,000 URLs on one host were
    2,000 lookups, queued for the executor's few threads under one timeout).
    """
    destination = {url: _host_and_port(url) for url in urls}
    destinations = list(dict.fromkeys(destination.values()))[:max_hosts]
    verdicts = await asyncio.gather(*(_refusal(host, port, resolve, allow_loopback, timeout_s)
                                      for host, port in destinations))
    why = {place: reason for place, reason in zip(destinations, verdicts, strict=True) if reason}
    refused = [url for url in urls if destination[url] in why]
    if refused:
        listed = refused[:MAX_LISTED]
        raise validation_failed("Webhook URLs on non-public addresses are refused",
                                {"invalid_urls": listed, "invalid_count": len(refused),
                                 "reasons": {url: why[destination[url]] for url in listed}},
                                code="INVALID_WEBHOOK_URLS")


def _no_such_name(failure: BaseException) -> bool:
    """Whether a failed lookup says the name has no address (`urls.resolve_host` keeps the
    resolver's own error as the cause), not that the resolver itself failed."""
    cause = failure.__cause__
    if isinstance(cause, socket.gaierror):
        return cause.errno in _NO_SUCH_NAME
    return isinstance(cause, UnicodeError)  # a name the IDNA codec cannot encode: none ever resolves


def _host_and_port(url: str) -> tuple[str, int]:
    parsed = httpx2.URL(url)
    return connect_host(parsed), parsed.port or _DEFAULT_PORTS[parsed.scheme]
