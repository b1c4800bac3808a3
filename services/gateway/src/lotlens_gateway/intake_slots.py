"""How many job bodies one gateway process works on at once.

While a job is taken, its body, the parsed document, the validated lots and the outbox rows take
several hundred bytes to a few KB per lot: a 12 MB body of 50,000 lots took the gateway from
116 MB to a 343 MB peak, a 62 MB one of 50,000 lots with long notes to 585 MB, and three of the
first kind sent at once to 714 MB. Nothing bounded that, so a few big jobs at once could take a
pod past its memory limit, and the kill ended every request it was serving. Now a body bigger
than one lot can be takes one of `slots` from when it is read until its answer (so does a retry of
a job's failed lots, read from the database, while it makes its new job: one that finds it made
takes none); one that finds none free waits up to `wait_s` for
one, then gets 503 with `Retry-After` (nothing written; a resend of a job accepted before gets its
201 replayed instead, routes_submit.py). Bodies of one lot's size or less (most synchronous
lots, small jobs) take none: rate limits bound them, and one queued behind a synchronous call
would wait up to 300 s. A bigger body (or one of unknown size) that turns out to hold one lot
gives its slot back once read, keeping only what validation reads: it kept it through its model
calls, and two such requests turned every other client's job away.

The slots bound the work, not the waiting: a body is read before it waits, so five 62 MB jobs
sent at once held four bodies while the fifth was worked on. So a job body is read only when it
is admitted: `slots + waiting` bodies at once, whether being read, waiting or in work. One that
is not admitted is read and dropped as it arrives (the client gets its 503 instead of a reset
connection halfway through its upload), then answered 503 at once.

One address may have all admissions but one being read at once (when there are two or more): two
bodies trickled from one address held both default admissions, and every other client's job got
503 until their 408. A body read whole no longer counts against its address.
The address is the strikes' (strikes.py): behind a proxy uvicorn does not trust, everyone shares it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics


class Admission:
    """A job body's place in the intake (false when it has none); while it is being read, also one
    of its address's (`read` gives that back: a body read whole waits or works as any other)."""

    def __init__(self, admitted: bool, reading: dict[str, int] | None = None, address: str = "") -> None:
        self._admitted = admitted
        self._reading = reading
        self._address = address

    def __bool__(self) -> bool:
        return self._admitted

    def read(self) -> None:
        """The body has arrived whole: its address may send another."""
        if self._reading is None:
            return
        left = self._reading[self._address] - 1
        if left:
            self._reading[self._address] = left
        else:  # forgotten with nothing being read: the map holds at most `slots + waiting`
            del self._reading[self._address]
        self._reading = None


class IntakeSlots:
    """Job bodies in work at once, in one process (its event loop)."""

    def __init__(self, slots: int, small_bytes: int, wait_s: float, metrics: GatewayMetrics,
                 waiting: int) -> None:
        self._free = asyncio.Semaphore(slots)
        self._small = small_bytes
        self._wait_s = wait_s
        self._metrics = metrics
        self._admissions = slots + waiting
        self._per_address = max(1, self._admissions - 1)
        self._admitted = 0
        self._reading: dict[str, int] = {}

    @asynccontextmanager
    async def admit(self, declared_bytes: int | None, address: str = "") -> AsyncIterator[Admission]:
        """Whether a body may be read now, its place held inside: always for one declared no
        bigger than a lot; for a bigger one (or one of unknown size), while fewer than
        `slots + waiting` job bodies are admitted, and fewer than all but one are being read from
        `address`."""
        if not self.takes_slot(declared_bytes):
            yield Admission(True)
            return
        held = self._reading.get(address, 0)
        if self._admitted >= self._admissions or held >= self._per_address:
            self._metrics.intake_busy.labels(reason="full" if held < self._per_address else "address").inc()
            yield Admission(False)
            return
        self._admitted += 1
        self._reading[address] = held + 1
        self._metrics.intake_admitted.inc()
        admission = Admission(True, self._reading, address)
        try:
            yield admission
        finally:
            admission.read()
            self._admitted -= 1
            self._metrics.intake_admitted.dec()

    def refusal(self, address: str = "") -> IntakeBusy:
        """503 for a job body `admit` turned away: as many others are being read, waiting or in work
        as the process takes, or as it takes from `address`."""
        held = self._reading.get(address, 0)
        if held >= self._per_address:
            details = {"waited_s": 0.0, "jobs_in_intake": self._admitted, "jobs_from_address": held}
            return IntakeBusy(f"The gateway is reading {held} other large jobs from this address, as many "
                              "as it reads from one at once", details)
        return IntakeBusy(f"The gateway is taking {self._admitted} other large jobs",
                          {"waited_s": 0.0, "jobs_in_intake": self._admitted})

    def takes_slot(self, body_bytes: int | None) -> bool:
        """Whether a body of this size (None: not declared) is a job's, worked on in a slot."""
        return body_bytes is None or body_bytes > self._small

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold a slot inside; 503 when none frees up in time."""
        try:
            async with asyncio.timeout(self._wait_s):
                await self._free.acquire()
        except TimeoutError:
            self._metrics.intake_busy.labels(reason="waited").inc()
            raise busy(self._wait_s) from None
        self._metrics.intake_jobs.inc()
        try:
            yield
        finally:
            self._metrics.intake_jobs.dec()
            self._free.release()


class IntakeBusy(ApiError):
    """503 `INTAKE_BUSY`: a job body the process could not take in.

    It said "nothing was written", which a resend whose job had been accepted took as "no job"."""

    def __init__(self, why: str, details: dict[str, Any]) -> None:
        super().__init__(503, "INTAKE_BUSY", f"{why}; this request was not taken in and wrote nothing "
                         "(a job accepted for an earlier one stands), retry in a few seconds",
                         headers={"Retry-After": "10"}, details=details)


def busy(waited_s: float) -> IntakeBusy:
    """503 for a job that found every intake slot taken for `waited_s`."""
    return IntakeBusy(f"The gateway is taking other large jobs (waited {waited_s:g} s)",
                      {"waited_s": waited_s})
