"""DNS lookups on threads of their own, each requester within its share.

`getaddrinfo` blocks and cannot be interrupted, so a lookup runs on a thread, and a lookup whose
caller gave up (a timeout) keeps that thread until the system resolver gives up: seconds, or
longer for a domain whose name servers never answer. On asyncio's default executor
(`min(32, cpus + 4)` threads, shared by everything) one client's job naming 40 hosts on such a
domain held every thread, and every other client's images were "no answer within 10 s".

So here:

* lookups use threads of their own, at most `threads` at once. Each is a daemon thread started
  for it (as the dispatcher's are): one blocked for minutes never holds up the process's exit.
* a requester (`on_behalf_of("acme")`: a client, whatever its lookups are for) has at most
  `per_requester` lookups on a thread at once. Its other lookups wait in line, and nothing else
  waits: a thread is taken only when one is free. A caller that gives up while waiting leaves
  the line and leaves nothing behind.
* a lookup counts against its requester until its thread returns, whether or not anyone still
  waits for it: that is what the thread is doing, so a slow domain holds its own requester's
  share and never more. When lookups their callers gave up on hold every slot of a share, that
  requester's next lookup fails at once with EAI_AGAIN ("try again") instead of waiting behind
  them. Its slots come back as the resolver answers or gives up.
* a client has one share, whatever its lookups are for: with a share per purpose (image checks,
  webhook hosts), two clients on domains whose name servers never answer held every thread of
  the defaults; now it takes `threads / per_requester` (4) clients' keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from lotlens_common.shares import Shares

Answer = list[tuple[Any, ...]]
GetAddrInfo = Callable[..., Answer]

DEFAULT_THREADS, DEFAULT_PER_REQUESTER = 32, 8
_requester: ContextVar[str] = ContextVar("lookup_requester", default="shared")


@contextmanager
def on_behalf_of(requester: str) -> Iterator[None]:
    """Lookups made inside, and in tasks started inside, count against `requester`'s share (so do
    the image checks given `Shares`: `images.check_images`)."""
    token = _requester.set(requester)
    try:
        yield
    finally:
        _requester.reset(token)


@dataclass(eq=False)
class _Lookup:
    requester: str
    abandoned: bool = False  # its caller gave up while the thread still runs
    finished: bool = False


def requester() -> str:
    """Whom the work done here is for (`on_behalf_of`); "shared" outside any."""
    return _requester.get()


class Lookups:
    """`getaddrinfo` on bounded threads, a share per requester (the module's docstring says how).

    Usable from any event loop and thread: the threads are `Shares` places, and the lookups
    nobody waits for any more are counted under a lock.
    """

    def __init__(self, threads: int = DEFAULT_THREADS, per_requester: int = DEFAULT_PER_REQUESTER,
                 getaddrinfo: GetAddrInfo | None = None) -> None:
        if threads < 1 or per_requester < 1:
            raise ValueError("threads and per_requester must be at least 1")
        self._threads = Shares(threads, per_requester)
        self.threads, self.per_requester = self._threads.total, self._threads.per_requester
        # None: `socket.getaddrinfo` as it is at each call (the tests' guard replaces it).
        self._getaddrinfo = getaddrinfo
        self._lock = threading.Lock()
        self._abandoned: Counter[str] = Counter()

    def in_flight(self, requester: str) -> tuple[int, int]:
        """(lookups of `requester` on a thread, those of them nobody waits for any more)."""
        with self._lock:
            return self._threads.held(requester), self._abandoned[requester]

    async def getaddrinfo(self, host: str, port: int) -> Answer:
        """`getaddrinfo(host, port, type=SOCK_STREAM)` within the current requester's share."""
        requester = _requester.get()
        with self._lock:
            abandoned = self._abandoned[requester]
        if abandoned >= self.per_requester:
            raise socket.gaierror(socket.EAI_AGAIN, f"{abandoned} earlier lookups of "
                                                    "this requester are still unanswered")
        await self._threads.take(requester)
        lookup = _Lookup(requester)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer] = loop.create_future()
        try:
            threading.Thread(target=self._run, args=(lookup, host, port, loop, answer),
                             name=f"dns-{host}"[:64], daemon=True).start()
        except BaseException:
            self._finish(lookup)
            raise
        try:
            return await answer
        except asyncio.CancelledError:
            with self._lock:
                if not lookup.finished:
                    lookup.abandoned = True
                    self._abandoned[requester] += 1
            raise

    def _run(self, lookup: _Lookup, host: str, port: int, loop: asyncio.AbstractEventLoop,
             answer: asyncio.Future[Answer]) -> None:
        result: Answer | None = None
        error: BaseException | None = None
        try:
            result = (self._getaddrinfo or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
        except Exception as exc:  # handed to the caller as it is (gaierror, UnicodeError, ...)
            error = exc
        finally:
            self._finish(lookup)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(_settle, answer, result, error)

    def _finish(self, lookup: _Lookup) -> None:
        with self._lock:
            lookup.finished = True
            if lookup.abandoned:
                self._abandoned[lookup.requester] -= 1
                if not self._abandoned[lookup.requester]:
                    del self._abandoned[lookup.requester]
        self._threads.free(lookup.requester)


def _settle(answer: asyncio.Future[Answer], result: Answer | None, error: BaseException | None) -> None:
    if answer.done():  # its caller gave up
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result or [])


_shared = Lookups()


def shared() -> Lookups:
    """The process's lookups: the system resolver's one path (`urls.resolve_host`)."""
    return _shared


def configure(threads: int, per_requester: int) -> None:
    """Size the process's lookups; a service's `__main__` calls it once, before it serves."""
    global _shared
    _shared = Lookups(threads, per_requester)
