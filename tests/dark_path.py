"""A path to PostgreSQL that can go dark, as a failover whose old primary's address stops
answering, a dropped NAT entry or a pulled cable leaves it: no FIN, no RST, every packet lost.
Only the client's own TCP timers can tell.

Toxiproxy and `freezing_proxy` cannot show this: their kernel acknowledges whatever the client
sends. Here the client's connections cross a loopback of their own, in a network namespace of
this process (a thread enters it to connect; the socket stays there), and going dark puts a
`blackhole` qdisc on that loopback, which drops every packet. The machine's loopback is never
touched, so tests beside this one are not disturbed, and the kernel removes the namespace with
the last socket and descriptor in it: a killed test leaves nothing behind.

Needs root (CAP_SYS_ADMIN for the namespace, CAP_NET_ADMIN for the qdisc) and `tc`; tests skip
without them.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, Engine, event, make_url

from lotlens_common.db import make_engine
from lotlens_common.settings import DatabaseSettings
from tests.freezing_proxy import FreezingProxy

CLONE_NEWNET = 0x40000000
# A dead peer found in seconds, where the production defaults take half a minute (the same way).
QUICK_DETECTION = {"DATABASE_KEEPALIVES_IDLE_S": 1, "DATABASE_KEEPALIVES_INTERVAL_S": 1,
                   "DATABASE_KEEPALIVES_COUNT": 2, "DATABASE_TCP_USER_TIMEOUT_MS": 2000}
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def _checked(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _on_thread(call: Callable[[], T]) -> T:
    """`call`'s result, computed on a thread of its own (which may change its namespace freely)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised in the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="dark-path", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _new_namespace() -> int:
    """A descriptor of a new network namespace whose loopback is up."""
    def create() -> int:
        # Per thread: only this thread moves; the process stays where it was.
        _checked(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        namespace = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        # The qdisc `go_dark` needs, tried while nothing crosses the loopback yet.
        for change in (["add", "dev", "lo", "root", "blackhole"], ["del", "dev", "lo", "root"]):
            subprocess.run(["tc", "qdisc", *change], check=True, capture_output=True)
        return namespace

    return _on_thread(create)


class DarkPath:
    """Forwards the namespace's `127.0.0.1:port` to PostgreSQL's `127.0.0.1:upstream_port` on the
    machine's loopback, until `go_dark()`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.dark = False
        self._namespace = _new_namespace()
        # Its listener is made inside; its thread, started here, outside, where PostgreSQL is.
        self._proxy = self.inside(lambda: FreezingProxy(upstream_port))
        self._proxy.start()
        self.port = self._proxy.port

    def inside(self, call: Callable[[], T]) -> T:
        """`call`'s result, computed in the namespace: sockets it opens cross the path."""
        def entered() -> T:
            _checked(_libc.setns(self._namespace, CLONE_NEWNET), "setns")
            return call()

        return _on_thread(entered)

    def attach(self, engine: Engine) -> None:
        """`engine` connects across the path while it is lit, and straight to PostgreSQL once it
        is dark, as a failover's address then leads to the new primary: a connection made
        before is lost in the dark, one made after works."""
        @event.listens_for(engine, "do_connect")
        def connect(dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
            if self.dark:
                cparams["port"] = self.upstream_port
                return dialect.connect(*cargs, **cparams)
            return self.inside(lambda: dialect.connect(*cargs, **cparams))

    def go_dark(self) -> None:
        """Drop every packet on the path from now on, both ways, telling the clients nothing; the
        server side of each connection ends, as an old primary's sessions end with it.

        Left open, a session the path cut inside a transaction held its locks, and the new primary
        (the same server here) kept the client's retry waiting behind them for good: a consumer
        whose batch went dark after locking its job never finished the next one.
        """
        self.inside(lambda: subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "blackhole"],
                                           check=True, capture_output=True))
        self.dark = True
        self._proxy.end_upstreams()

    def close(self) -> None:
        """Close the proxy's sockets; the namespace goes with the last socket in it."""
        self._proxy.stop()
        os.close(self._namespace)


def engine_across(path: DarkPath, database_url: str, **settings: Any) -> Engine:
    """A service's engine (`make_engine`, `DatabaseSettings` of `settings`) on `database_url`'s
    database, whose connections cross `path`."""
    url = make_url(database_url).set(port=path.port).render_as_string(hide_password=False)
    engine = make_engine(DatabaseSettings(DATABASE_URL=url, **settings), "tests")
    path.attach(engine)
    return engine


@contextmanager
def dark_path(upstream_port: int) -> Iterator[DarkPath]:
    """A lit path to PostgreSQL's port, closed on exit; skips the test where this machine cannot
    make one."""
    if shutil.which("tc") is None or shutil.which("ip") is None:
        pytest.skip("needs `tc` and `ip` (iproute2)")
    try:
        path = DarkPath(upstream_port)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a network namespace with a blackhole qdisc here (needs root): {exc}")
    try:
        yield path
    finally:
        path.close()


@dataclass(frozen=True)
class Outcome:
    """How a statement on a connection across the path ended, and after how long."""

    error: BaseException | None
    seconds: float
    finished: bool  # False: still waiting at the bound, ended by the test


class Pending:
    """A statement running on a thread of its own (say, on a connection across the path)."""

    def __init__(self, statement: Callable[[], object]) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(statement,), name="pending-statement",
                                        daemon=True)
        self._thread.start()

    def _run(self, statement: Callable[[], object]) -> None:
        try:
            statement()
        except Exception as exc:  # the outcome under test
            self._error = exc

    def outcome(self, connection: Connection, within_s: float) -> Outcome:
        """How it ended, waiting at most `within_s` from now. One still waiting then is ended by
        shutting its socket down here: its thread would wait out the kernel's retransmissions
        (15 minutes) or, for an answer it waits for, for ever."""
        started = time.monotonic()
        self._thread.join(within_s)
        seconds = time.monotonic() - started
        if not self._thread.is_alive():
            return Outcome(self._error, seconds, finished=True)
        descriptor = connection.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
        with socket.socket(fileno=os.dup(descriptor)) as stuck:
            stuck.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        return Outcome(None, seconds, finished=False)
