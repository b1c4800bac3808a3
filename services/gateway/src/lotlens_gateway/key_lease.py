"""A job's Idempotency-Key reservation kept alive while its request works.

A job's lease is short (`LOTLENS_IDEMPOTENCY_JOB_LEASE_S`, 10 s), so a gateway that dies
mid-intake leaves its key free again soon. A live request must keep it however long its write
takes: taken over, the write is rolled back (`ReservationLost`), and an intake slower than the
client's timeout was lost on every resend, nothing ever written. So the request renews its
reservation a few times a lease (`IdempotencyStore.renew`, on the database's clock) from a
thread of its own: on the event loop or a shared pool, renewals would queue behind the very
writes (slow COPYs) that make the lease run out.

Renewals stop when the request ends, once the reservation is no longer held (answered, released,
taken over), and `longest_s` after the reservation by the request's own clock: a request stuck
for good (a hung thread) frees its key then, as the long lease did.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from lotlens_gateway.idempotency import IdempotencyStore, Reservation

log = logging.getLogger(__name__)
# Renewals a lease: two may fail (a blip) before a live request's key can be taken over.
RENEWALS_PER_LEASE = 3


@contextmanager
def kept(store: IdempotencyStore, reservation: Reservation, lease_s: float, longest_s: float,
         clock: Callable[[], datetime]) -> Iterator[None]:
    """Renew `reservation` every `lease_s / RENEWALS_PER_LEASE` until the block ends (or the
    reservation is no longer held, or `longest_s` after it was made by `clock`)."""
    ended = threading.Event()
    until = reservation.taken_at + timedelta(seconds=longest_s)
    context = contextvars.copy_context()  # the request's log context in the thread too
    every_s = lease_s / RENEWALS_PER_LEASE
    renewer = threading.Thread(target=context.run, name="idempotency-lease", daemon=True,
                               args=(_renew, store, reservation, every_s, until, clock, ended))
    renewer.start()
    try:
        yield
    finally:
        # Not joined: a renewal waiting on the key's row (the answer being stored with it) ends
        # once that transaction does, finding the reservation answered.
        ended.set()


def _renew(store: IdempotencyStore, reservation: Reservation, every_s: float, until: datetime,
           clock: Callable[[], datetime], ended: threading.Event) -> None:
    while not ended.wait(every_s):
        if clock() >= until:
            log.warning("idempotency key %r held %s: no longer renewed, a resend may take it over",
                        reservation.key, until - reservation.taken_at)
            return
        try:
            if not store.renew(reservation):
                return
        except SQLAlchemyError as exc:  # the next renewal may get through; the lease allows for it
            log.warning("idempotency key %r could not be renewed: %s", reservation.key, exc)
