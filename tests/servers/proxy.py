"""A loopback TCP proxy whose availability a test controls (fault injection)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Literal

from tests.servers._util import free_port, track, untrack


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER 0): the peer sees ECONNRESET."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``(target_host, target_port)``.

    - ``refuse()``: stop listening (new connections get ECONNREFUSED) and reset open ones;
      ``refuse(mode="reset")`` keeps listening but resets every new connection (ECONNRESET).
    - ``accept()``: forward again, on the same port.
    - ``connections``: how many client connections were forwarded so far.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.connections = 0
        self._mode: Literal["forward", "reset", "closed"] = "closed"
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()

    @property
    def addr(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def start(cls, target_host: str, target_port: int) -> TcpProxy:
        proxy = cls(target_host, target_port)
        proxy.accept()
        track(proxy)
        return proxy

    # --- control ---------------------------------------------------------------------------------

    def accept(self) -> None:
        """Forward connections (again)."""
        with self._lock:
            self._mode = "forward"
            if self._listener is None:
                self._listen()

    def refuse(self, mode: Literal["close", "reset"] = "close") -> None:
        """Make the target unreachable; existing connections are reset either way."""
        with self._lock:
            if mode == "close":
                self._mode = "closed"
                self._close_listener()
            else:
                self._mode = "reset"
                if self._listener is None:
                    self._listen()
            conns, self._open = self._open, set()
        for s in conns:
            _reset(s)

    def stop(self) -> None:
        self.refuse("close")
        untrack(self)

    # --- internals -------------------------------------------------------------------------------

    def _listen(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(128)
        ls.settimeout(0.1)
        self._listener = ls
        self._thread = threading.Thread(
            target=self._accept_loop, args=(ls,), name=f"TcpProxy:{self.port}", daemon=True
        )
        self._thread.start()

    def _close_listener(self) -> None:
        ls, self._listener = self._listener, None
        if ls is not None:
            with contextlib.suppress(OSError):
                ls.close()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2)

    def _accept_loop(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except TimeoutError:
                if self._listener is not ls:
                    return
                continue
            except OSError:
                return
            if self._mode != "forward" or self._listener is not ls:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self.connections += 1
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                gone = src in self._open and dst not in self._open
                self._open.discard(src)
            if gone:
                with contextlib.suppress(OSError):
                    src.close()
                    dst.close()
