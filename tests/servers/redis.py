"""A throwaway Redis (Debian's ``redis-server``) on a free loopback port: Celery's broker.

No persistence, no config file: everything on the command line. ``scripts/test`` installs
``redis-server`` with apt-get when it is missing and it runs as root.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers._util import (
    ComponentMissing,
    die_with_parent,
    free_port,
    stop_process,
    tail,
    track,
    untrack,
    wait_until,
)


@dataclass
class Redis:
    host: str
    port: int
    log_path: Path
    _proc: subprocess.Popen[bytes] = field(repr=False)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @classmethod
    def start(cls, workdir: Path, *, timeout: float = 20) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ComponentMissing(
                "redis-server is not installed (Debian: apt-get install redis-server; "
                "scripts/test installs it when run as root)"
            )
        port = free_port()
        log_path = workdir / "redis.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                    "--protected-mode",
                    "yes",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        server = cls("127.0.0.1", port, log_path, proc)
        track(server)
        try:
            wait_until(server._ping, timeout=timeout, what="redis-server", alive=server._dead)
        except (RuntimeError, TimeoutError) as exc:
            server.stop()
            raise RuntimeError(f"{exc}\n--- redis log ---\n{tail(log_path)}") from None
        return server

    def _dead(self) -> str | None:
        rc = self._proc.poll()
        return None if rc is None else f"redis-server exited with code {rc}"

    def _ping(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        stop_process(self._proc, grace=5)
        untrack(self)
