"""A moto server (AWS Secrets Manager, SSM, STS, ...) on a free loopback port."""

from __future__ import annotations

import secrets
from typing import Any

from tests.servers._util import ComponentMissing, free_port, track, untrack, wait_until

MOTO_MISSING = "moto server not installed: pip install 'moto[server]'"


class MotoServer:
    """``moto.server.ThreadedMotoServer`` in this process; start with ``MotoServer.start()``."""

    region = "us-east-1"

    def __init__(self, port: int) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise ComponentMissing(f"{MOTO_MISSING} ({exc})") from None
        self.host = "127.0.0.1"
        self.port = port
        self.endpoint = f"http://{self.host}:{port}"
        # moto accepts any credentials; make them unique per run so nothing real is ever used
        self.access_key_id = "AKIA" + secrets.token_hex(8).upper()
        self.secret_access_key = secrets.token_urlsafe(30)
        self._server = ThreadedMotoServer(ip_address=self.host, port=port, verbose=False)
        self._running = False

    @classmethod
    def start(cls, *, timeout: float = 20) -> MotoServer:
        server = cls(free_port())
        server._server.start()
        server._running = True
        track(server)
        wait_until(server._ready, timeout=timeout, what="moto server")
        return server

    def _ready(self) -> bool:
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as resp:
            return bool(resp.status == 200)

    def env(self) -> dict[str, str]:
        """Environment for AWS SDKs (boto3, CLI) to talk to this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` pointed at this server."""
        import boto3

        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def reset(self) -> None:
        """Drop every resource (POST /moto-api/reset)."""
        import urllib.request

        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=5):
            pass

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._server.stop()
        untrack(self)
