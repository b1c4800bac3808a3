"""A TCP proxy on loopback that can freeze: while frozen it accepts connections and keeps every
one open but passes no byte either way, as a PostgreSQL host that stopped answering looks to its
clients (a stopped server process, a network path that drops everything). One thread in all, so a
test can count the threads of the code under test."""

from __future__ import annotations

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

    def start(self) -> None:
        """Start forwarding (in one thread)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop, closing every connection."""
        self._stopped.set()
        self._thread.join(timeout=5)

    def freeze(self) -> None:
        """Stop passing bytes; what is sent meanwhile waits in the sockets' buffers."""
        self._frozen.set()

    def thaw(self) -> None:
        """Pass bytes again, the held ones first."""
        self._frozen.clear()

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
        self._selector.register(client, selectors.EVENT_READ, upstream)
        self._selector.register(upstream, selectors.EVENT_READ, client)

    def _forward(self, source: socket.socket, target: socket.socket) -> None:
        try:
            data = source.recv(65536)
            if data:
                target.sendall(data)
        except OSError:  # a reset ends the connection as a close does
            data = b""
        if data:
            return
        for end in (source, target):
            self._selector.unregister(end)
            end.close()


@contextmanager
def freezing_proxy(upstream_port: int) -> Iterator[FreezingProxy]:
    """A running proxy to a loopback port, stopped (its connections closed) on exit."""
    proxy = FreezingProxy(upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
