"""A deadline for starting image checks, set by the caller around them (as `lookups.on_behalf_of`
sets whose they are): the vision stage bounds the time one shard's images take of a round."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """Start no check after `deadline` (a `time.monotonic()`), but the first `always` URLs'."""

    deadline: float
    always: int


_WINDOW: ContextVar[Window | None] = ContextVar("image_check_window", default=None)


@contextmanager
def started_by(deadline: float, always: int = 0) -> Iterator[None]:
    """Image checks made within start no URL after `deadline` but their first `always`: the others
    are `ImageCheck.unchecked`. Checks under way end within their own timeout; the first `always`
    give the caller some verdicts however slow the hosts."""
    token = _WINDOW.set(Window(deadline, always))
    try:
        yield
    finally:
        _WINDOW.reset(token)


def current_window() -> Window | None:
    """The deadline the checks made now start by, if any."""
    return _WINDOW.get()
