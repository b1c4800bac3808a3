"""A TCP proxy on loopback that can freeze: while frozen it accepts connections and keeps every
one open but passes no byte either way, as a PostgreSQL host that stopped answering looks to its
clients (a stopped server process, a network path that drops everything). It can also cut one
connection once the server has answered a given message, that answer unheard (a failover right
after a COMMIT). One thread in all, so a test can count the threads of the code under test."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast


class FreezingProxy:
    """Forwards `127.0.0.1:port` to `127.0.0.1:upstream_port` until `freeze()`, again after `thaw()`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._stopped = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="freezing-proxy", daemon=True)
        self._clients: set[socket.socket] = set()
        self._upstreams: set[socket.socket] = set()
        self._cut: tuple[bytes, bytes] | None = None
        self._cut_unsent = self._freeze_after_cut = False
        self._armed: set[socket.socket] = set()  # clients that sent the cut's first marker
        self._answer_dropped: set[socket.socket] = set()  # upstreams whose next bytes are dropped
        self.cut_done = threading.Event()

    def start(self) -> None:
        """Start forwarding (in one thread)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, closing every connection."""
        self._stopped.set()
        self._thread.join(timeout=5)

    def end_upstreams(self) -> None:
        """End the server side of every connection, the client side left open: PostgreSQL ends
        each session (rolled back, its locks released), as a failover's old primary takes its
        sessions with it."""
        for upstream in list(self._upstreams):
            with contextlib.suppress(OSError):  # closed with its client just now
                upstream.shutdown(socket.SHUT_RDWR)

    def freeze(self) -> None:
        """Stop passing bytes; what is sent meanwhile waits in the sockets' buffers."""
        self._frozen.set()

    def thaw(self) -> None:
        """Pass bytes again, the held ones first."""
        self._frozen.clear()

    def cut_after(self, sent_first: bytes, answered: bytes, unsent: bool = False,
                  then_freeze: bool = False) -> None:
        """On the first connection whose client sends `sent_first` and later `answered` (in one
        read each), pass that on, then close both ends instead of passing the server's answer
        (`unsent`: close them instead of passing it on); `cut_done` is set then, and with
        `then_freeze` the proxy freezes at that moment."""
        self._cut = (sent_first, answered)
        self._cut_unsent, self._freeze_after_cut = unsent, then_freeze

    def _run(self) -> None:
        while not self._stopped.is_set():
            for key, _ in self._selector.select(0.05):
                end = cast(socket.socket, key.fileobj)
                if end is self._listener:
                    self._accept()
                elif not self._frozen.is_set() and end.fileno() >= 0:  # not closed with its peer just now
                    self._forward(end, key.data)
            if self._frozen.is_set():
                time.sleep(0.02)  # held bytes keep their sockets readable: do not spin on them
        for key in list(self._selector.get_map().values()):
            cast(socket.socket, key.fileobj).close()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
        self._clients.add(client)
        self._upstreams.add(upstream)
        self._selector.register(client, selectors.EVENT_READ, upstream)
        self._selector.register(upstream, selectors.EVENT_READ, client)

    def _forward(self, source: socket.socket, target: socket.socket) -> None:
        try:
            data = source.recv(65536)
            if data and (source in self._answer_dropped or self._cuts_before(source, target, data)):
                data, self._cut = b"", None
                self._armed.clear()
                self._answer_dropped.clear()
                if self._freeze_after_cut:
                    self._frozen.set()
                self.cut_done.set()
            elif data:
                target.sendall(data)
        except OSError:  # a reset ends the connection as a close does
            data = b""
        if data:
            return
        for end in (source, target):
            self._selector.unregister(end)
            self._clients.discard(end)
            self._upstreams.discard(end)
            end.close()

    def _cuts_before(self, source: socket.socket, target: socket.socket, data: bytes) -> bool:
        """Whether the connection is cut before `data` from a client passes (else, maybe after
        the server's answer to it)."""
        if self._cut is None or source not in self._clients:
            return False
        sent_first, answered = self._cut
        if source in self._armed and answered in data:
            if self._cut_unsent:
                return True
            self._answer_dropped.add(target)
        elif sent_first in data:
            self._armed.add(source)
        return False


@contextmanager
def freezing_proxy(upstream_port: int) -> Iterator[FreezingProxy]:
    """A running proxy to a loopback port, stopped (its connections closed) on exit."""
    proxy = FreezingProxy(upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
