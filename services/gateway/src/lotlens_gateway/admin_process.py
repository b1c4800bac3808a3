"""The gateway's Kafka admin calls, made in a child process: librdkafka failing inside one ends the
child, not the gateway.

librdkafka 2.16 kills processes whose admin requests are pending as a broker stops: an assertion
(`eonce->refcnt > 0` in `rd_kafka_enq_once_del_source_return`, confluentinc/librdkafka#4605, open)
aborted one describing groups every 0.1 s across broker restarts, and a segfault in the answer to
the committed offsets' request (`rd_kafka_ListConsumerGroupOffsetsResponse_parse` into
`rd_kafka_cgrp_op`, on an admin client, which has no group) killed a gateway reading its groups'
lag at a private broker's first stop, 3 runs of 3. Made in the gateway, either took every request
in flight with it.

So the health probe and the group-lag reading each keep one admin client in a child of their own
(one each: the probe never waits behind a slow lag reading) and send it module-level read
functions, `read(admin, *args)`, whose answers are plain picklable values. A child that dies costs
the call under way, which fails as a broker that did not answer would (`AdminProcessLost`), is
counted (`lost`: `lotlens_kafka_admin_process_restarts_total`) and replaced at the next call; one
that does not answer within its call's time and `GRACE_S` is killed, counted and replaced too.

The child is `python -c` on a socket pair, not multiprocessing's spawn: the images run the console
script, and spawn runs the parent's main script again in the child (as `__mp_main__`), which
would import the whole gateway there and catch SIGTERM. The child ends when the gateway closes it,
when its socket closes (the gateway gone, kill -9 included), and within `WATCH_S` of its parent
changing during a call that does not end. Not PR_SET_PDEATHSIG: it fires when the thread that
started the child ends, and the lag readings start theirs from threads that end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from confluent_kafka.admin import AdminClient

from lotlens_common.logs import setup_logging

if TYPE_CHECKING:  # the child imports no settings: it gets a plain config
    from lotlens_common.settings import KafkaSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# A child's first start, at the gateway's (`start`): an interpreter and confluent_kafka's import,
# 0.12-0.19 s measured, seconds on a loaded machine. A child started again after one was lost
# starts within its call's own time: a health probe must answer within the ops port's wait.
START_S = 30.0
# How long past its own bound a call may take before its child is taken as hung (a busy machine).
GRACE_S = 3.0
# How often a child looks whether its parent is still the gateway.
WATCH_S = 0.5
_CHILD = "from lotlens_gateway.admin_process import serve; serve()"


class AdminProcessLost(Exception):
    """The child ended, or was ended, before it answered."""


class AdminCalls(Protocol):
    """Runs `read(admin, *args)` on one kept admin client (a new one when `fresh`) and returns its answer."""

    def run(self, read: Callable[..., T], *args: Any, timeout_s: float, fresh: bool = False) -> T:
        """`read`'s answer, or its error; `timeout_s` bounds the call."""


def kafka_admin(kafka: KafkaSettings) -> Callable[[], object]:
    """What builds a child's admin client: the full client config (TLS and SASL included), as every
    client has, as a plain dict."""
    return partial(AdminClient, kafka.client_config())


class AdminProcess:
    """`AdminCalls` in a child process of its own that builds its client with `new_admin` (picklable:
    it is sent there). `lost` is called for each child that died, or was killed as hung."""

    def __init__(self, new_admin: Callable[[], object], lost: Callable[[], None] = lambda: None) -> None:
        self._new_admin, self._lost = new_admin, lost
        self._lock = threading.Lock()  # one call at a time on the pipe
        self._child: subprocess.Popen[bytes] | None = None
        self._pipe: Connection | None = None
        self._closed = False

    def run(self, read: Callable[..., T], *args: Any, timeout_s: float, fresh: bool = False) -> T:
        """`read(admin, *args)` in the child: its answer, or its error (a `RuntimeError` naming an
        error that does not pickle); `AdminProcessLost` when the child died or hung."""
        with self._lock:
            if self._closed:
                raise AdminProcessLost("the Kafka admin process is closed")
            if self._child is not None and self._child.poll() is not None:
                self._end("between calls")  # ended while idle: this call gets a new one
            deadline = time.monotonic() + timeout_s + GRACE_S
            try:
                pipe = self._pipe or self._start(deadline)
                pipe.send((read, args, fresh))
                if not pipe.poll(max(0.0, deadline - time.monotonic())):
                    raise self._end(f"as it had not answered in {timeout_s + GRACE_S:.1f} s", hung=True)
                ok, answer = pipe.recv()
            except (EOFError, OSError) as exc:  # the child's end closed: it died
                raise self._end("in a call") from exc
            if self._closed:  # closed while this call started a child
                self._end("closed")
        if ok:
            return answer  # type: ignore[no-any-return]
        raise answer

    def start(self) -> None:
        """Start the child now (at the gateway's start, off any request's path), if not started."""
        with self._lock:
            if self._pipe is None and not self._closed:
                # A start that failed is logged and counted: the first call starts another.
                with contextlib.suppress(AdminProcessLost):
                    self._start(time.monotonic() + START_S)

    def close(self) -> None:
        """End the child; a call under way ends lost (uncounted), and later ones are refused."""
        self._closed = True
        child, pipe = self._child, self._pipe
        if child is not None:
            child.kill()
            child.wait(5)
        if pipe is not None:
            pipe.close()

    def _start(self, deadline: float) -> Connection:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._child = subprocess.Popen([sys.executable, "-c", _CHILD, str(theirs.fileno())],
                                           pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
            pipe = self._pipe = Connection(ours.detach())
        # Its sys.path first, as multiprocessing's children get theirs: `new_admin` and the read
        # functions are unpickled by module and name. Its lines (librdkafka's too) are JSON like ours.
        pipe.send((os.getpid(), sys.path, logging.getLevelName(logging.getLogger().getEffectiveLevel())))
        pipe.send(self._new_admin)
        if not pipe.poll(max(0.0, deadline - time.monotonic())):
            raise self._end("as it had not started in time", hung=True)
        pipe.recv()
        return pipe

    def _end(self, why: str, hung: bool = False) -> AdminProcessLost:
        child, pipe = self._child, self._pipe
        self._child = self._pipe = None
        if pipe is not None:
            pipe.close()
        code: int | None = None
        if child is not None:
            if hung:
                child.kill()
            try:  # at EOF it may still be exiting: killed now, an abort would read as a kill
                code = child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
        ended = f"was killed by {_signal_name(-code)}" if code and code < 0 else f"exited ({code})"
        if not self._closed:
            self._lost()
            log.warning("the Kafka admin process (pid %s) %s %s: a new one takes the next call",
                        child.pid if child else None, ended, why)
        return AdminProcessLost(f"the Kafka admin process {ended} {why}")


def serve() -> None:
    """The child: run each read asked for on one admin client until the gateway closes the pipe."""
    # Ctrl-C in a terminal, systemd or `kill -- -PGID` signal the whole process group: the gateway
    # drains, still answering its probes, and ends this child itself (or this sees its pipe close).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pipe = Connection(int(sys.argv[1]))
    parent, path, level = pipe.recv()
    sys.path[:] = path
    setup_logging(level)
    threading.Thread(target=_watch, args=(parent,), name="watch-parent", daemon=True).start()
    new_admin = pipe.recv()
    pipe.send(True)
    admin: object | None = None
    while True:
        try:
            read, args, fresh = pipe.recv()
        except EOFError:  # the gateway closed it, or is gone
            # Not the interpreter's shutdown: it would destroy the admin client with requests
            # pending, where librdkafka aborts (#4605), and could hang there without a parent.
            os._exit(0)
        except Exception as exc:  # a read this child cannot import: its error, not a dead child
            pipe.send((False, _sendable(exc)))
            continue
        try:
            if admin is None or fresh:
                admin = None  # the old client is destroyed before the new one connects
                admin = new_admin()
            answer: tuple[bool, object] = (True, read(admin, *args))
        except Exception as exc:
            answer = (False, _sendable(exc))
        pipe.send(answer)


def _watch(parent: int) -> None:
    # A call that never returns would keep the child from reading the pipe's end.
    while os.getppid() == parent:
        time.sleep(WATCH_S)
    os._exit(0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"


def _sendable(exc: Exception) -> Exception:
    """The error, or one naming it when it does not pickle (confluent_kafka's do not)."""
    try:
        pickle.loads(pickle.dumps(exc))  # nosec B301: the bytes it just made, to see they load back
        return exc
    except Exception:
        return RuntimeError(repr(exc))
