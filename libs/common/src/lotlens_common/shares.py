"""Places of a bounded resource, each requester within its share: the one fairness rule of
`lookups.py` (resolver threads) and of the image checks made on clients' behalf (`images.py`).

At most `total` places are held at once, and at most `per_requester` by one requester. A
requester past its share, or arriving when every place is held, waits in line; nothing else
waits. A freed place goes to the first one in line that fits, so a requester whose own share
is full never holds up the others behind it. A caller that gives up while waiting leaves the
line and leaves nothing behind.

Usable from any event loop and thread: the bookkeeping is under a lock, each waiter is woken on
its own loop, and a place may be freed from any thread (a resolver thread's end).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(eq=False)
class _Turn:
    """A requester waiting in line for a place."""

    requester: str
    loop: asyncio.AbstractEventLoop
    admitted: asyncio.Future[None]


class Shares:
    """`total` places, at most `per_requester` of them held by one requester."""

    def __init__(self, total: int, per_requester: int) -> None:
        if total < 1 or per_requester < 1:
            raise ValueError("total and per_requester must be at least 1")
        self.total, self.per_requester = total, min(per_requester, total)
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self._in_use = 0
        self._line: deque[_Turn] = deque()

    def held(self, requester: str) -> int:
        """Places `requester` holds now."""
        with self._lock:
            return self._held[requester]

    async def take(self, requester: str) -> None:
        """A place of `requester`'s share, once one is free; `free` gives it back."""
        with self._lock:
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
                    raise
            self.free(requester)  # admitted just before it gave up: the place goes on
            raise

    def free(self, requester: str) -> None:
        """Give back a place of `requester`'s: those in line that fit now take their turn, in order."""
        with self._lock:
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

    @asynccontextmanager
    async def hold(self, requester: str) -> AsyncIterator[None]:
        """A place of `requester`'s share inside the block."""
        await self.take(requester)
        try:
            yield
        finally:
            self.free(requester)

    # The methods below run with the lock held.

    def _fits(self, requester: str) -> bool:
        return self._held[requester] < self.per_requester and self._in_use < self.total

    def _take(self, requester: str) -> None:
        self._held[requester] += 1
        self._in_use += 1

    def _untake(self, requester: str) -> None:
        self._held[requester] -= 1
        if not self._held[requester]:
            del self._held[requester]
        self._in_use -= 1


def _admit(admitted: asyncio.Future[None]) -> None:
    if not admitted.done():
        admitted.set_result(None)
