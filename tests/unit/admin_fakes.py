"""The gateway's admin calls (`lotlens_gateway.admin_process.AdminCalls`) made in the test's own
process, on fake admin clients: the read functions run as the child process runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class InProcess:
    """Keeps one admin client from `new_admin`, a new one when a call asks for it (`fresh`)."""

    def __init__(self, new_admin: Callable[[], Any]) -> None:
        self._new_admin = new_admin
        self._admin: Any = None

    def run(self, read: Callable[..., T], *args: Any, timeout_s: float, fresh: bool = False) -> T:
        """`read(admin, *args)` here and now (`timeout_s` is the read's to keep)."""
        if self._admin is None or fresh:
            self._admin = self._new_admin()
        return read(self._admin, *args)
