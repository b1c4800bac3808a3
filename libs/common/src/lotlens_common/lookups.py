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
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

Answer = list[tuple[Any, ...]]
GetAddrInfo = Callable[..., Answer]

DEFAULT_THREADS, DEFAULT_PER_REQUESTER = 32, 8
_requester: ContextVar[str] = ContextVar("lookup_requester", default="shared")


@contextmanager
def on_behalf_of(requester: str) -> Iterator[None]:
    """Lookups made inside, and in tasks started inside, count against `requester`'s share."""
    token = _requester.set(requester)
    try:
        yield
    finally:
        _requester.reset(token)


@dataclass(eq=False)
class _Turn:
    """A lookup waiting in line for its requester's share (and a free thread)."""

    requester: str
    loop: asyncio.AbstractEventLoop
    admitted: asyncio.Future[None]


@dataclass(eq=False)
class _Lookup:
    requester: str
    abandoned: bool = False  # its caller gave up while the thread still runs
    finished: bool = False


class Lookups:
    """`getaddrinfo` on bounded threads, a share per requester (the module's docstring says how).

    Usable from any event loop and thread: its bookkeeping is under a lock, and each waiter is
    woken on its own loop.
    """

    def __init__(self, threads: int = DEFAULT_THREADS, per_requester: int = DEFAULT_PER_REQUESTER,
                 getaddrinfo: GetAddrInfo | None = None) -> None:
        if threads < 1 or per_requester < 1:
            raise ValueError("threads and per_requester must be at least 1")
        self.threads, self.per_requester = threads, min(per_requester, threads)
        # None: `socket.getaddrinfo` as it is at each call (the tests' guard replaces it).
        self._getaddrinfo = getaddrinfo
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()
        self._abandoned: Counter[str] = Counter()
        self._total = 0
        self._line: deque[_Turn] = deque()

    def in_flight(self, requester: str) -> tuple[int, int]:
        """(lookups of `requester` on a thread, those of them nobody waits for any more)."""
        with self._lock:
            return self._running[requester], self._abandoned[requester]

    async def getaddrinfo(self, host: str, port: int) -> Answer:
        """`getaddrinfo(host, port, type=SOCK_STREAM)` within the current requester's share."""
        requester = _requester.get()
        await self._take_turn(requester)
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

    async def _take_turn(self, requester: str) -> None:
        with self._lock:
            if self._abandoned[requester] >= self.per_requester:
                raise socket.gaierror(socket.EAI_AGAIN, f"{self._abandoned[requester]} earlier lookups of "
                                                        "this requester are still unanswered")
            if self._fits(requester):
                self._take(requester)
                return
            loop = asyncio.get_running_loop()
            turn = _Turn(requester, loop, loop.create_future())
            self._line.append(turn)
        try:
            await turn.admitted
        except asyncio.CancelledError:
            with self._lock:
                if turn in self._line:
                    self._line.remove(turn)
                else:  # admitted just before it gave up: the slot it was given goes on
                    self._free(requester)
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
            self._free(lookup.requester)

    # The methods below run with the lock held.

    def _fits(self, requester: str) -> bool:
        return self._running[requester] < self.per_requester and self._total < self.threads

    def _take(self, requester: str) -> None:
        self._running[requester] += 1
        self._total += 1

    def _free(self, requester: str) -> None:
        """A slot of `requester`'s is free: lookups waiting in line that fit now take their turn,
        in order (one whose own share is full does not hold up the others behind it)."""
        self._untake(requester)
        for turn in list(self._line):
            if not self._fits(turn.requester):
                continue
            self._line.remove(turn)
            self._take(turn.requester)
            try:
                turn.loop.call_soon_threadsafe(_admit, turn.admitted)
            except RuntimeError:  # its loop has closed: nobody will take this turn
                self._untake(turn.requester)

    def _untake(self, requester: str) -> None:
        self._running[requester] -= 1
        if not self._running[requester]:
            del self._running[requester]
        self._total -= 1


def _admit(admitted: asyncio.Future[None]) -> None:
    if not admitted.done():
        admitted.set_result(None)


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
