"""A local HTTPS fake of the Azure Key Vault secrets REST API, for the real Azure SDK to talk to.

No Key Vault emulator is installable here (Azure ships none for Key Vault), so the backend's
tests run ``azure-keyvault-secrets`` unmodified against this server on loopback. It speaks the
parts of the REST API (https://learn.microsoft.com/rest/api/keyvault/secrets) the backend uses:

- ``GET /{vault}/secrets/{name}[/{version}]?api-version=...`` -> a SecretBundle (``value``,
  ``id``, ``contentType``, ``attributes`` with ``created``/``updated``/``exp``/``nbf``/``enabled``);
  404 ``SecretNotFound``. Vaults live under a path prefix, so one server holds many vaults:
  point the store at it with ``url_template = "https://127.0.0.1:PORT/{vault}"``.
- Bearer-challenge auth as Key Vault does it: a request without the expected bearer token gets
  ``401`` with ``WWW-Authenticate: Bearer authorization="...", resource="https://vault.azure.net"``.
- ``403 Forbidden`` for names marked denied; ``429`` with ``Retry-After`` for the next N requests
  after :meth:`FakeKeyVault.throttle`; ``503`` after :meth:`FakeKeyVault.fail`.

TLS uses a certificate issued by a throwaway test CA (``trustme``); :attr:`FakeKeyVault.ca_bundle`
is the CA's PEM file for the client's ``verify`` option. Every request is recorded
(:attr:`FakeKeyVault.log`: time, path, status, authorized) so tests can count store reads and
measure retry spacing. Plain Python, no pytest imports.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.servers._util import ComponentMissing, track, untrack

RESOURCE = "https://vault.azure.net"
AUTHORITY = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000"


@dataclass
class _Version:
    id: str
    value: str
    created: int
    updated: int
    expires: int | None = None
    not_before: int | None = None
    enabled: bool = True
    content_type: str | None = None


@dataclass
class Request:
    """One request the fake received."""

    at: float  # time.monotonic() when it arrived
    method: str
    path: str  # without the query string
    status: int
    authorized: bool


@dataclass
class _State:
    token: str
    secrets: dict[tuple[str, str], list[_Version]] = field(default_factory=dict)
    denied: set[tuple[str, str]] = field(default_factory=set)
    throttled: int = 0
    retry_after: str = "1"
    failing: int = 0
    log: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeKeyVault:
    """The fake, served from a thread of this process; start with ``FakeKeyVault.start(dir)``.

    ``token`` is the bearer token the fake accepts (random per instance); give it to the client
    through a ``static-token`` credential.
    """

    def __init__(self, workdir: Path, *, token: str | None = None) -> None:
        try:
            import trustme
        except ImportError as exc:
            raise ComponentMissing(
                f"trustme is not installed: pip install trustme ({exc})"
            ) from None
        self._state = _State(token=token or secrets.token_urlsafe(32))
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle = workdir / "fake-key-vault-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_bundle))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        handler = type("Handler", (_Handler,), {"state": self._state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.host = "127.0.0.1"
        self.port = int(self._httpd.server_address[1])
        self.url = f"https://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, workdir: Path, *, token: str | None = None) -> FakeKeyVault:
        server = cls(workdir, token=token)
        server._thread = threading.Thread(
            target=server._httpd.serve_forever, name="fake-key-vault", daemon=True
        )
        server._thread.start()
        track(server)
        return server

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._thread = None
            untrack(self)

    # -- what a test arranges ---------------------------------------------------------------------

    @property
    def token(self) -> str:
        return self._state.token

    def url_template(self) -> str:
        """The store option that maps ``azure-kv://VAULT/...`` onto this server."""
        return f"{self.url}/{{vault}}"

    def set_secret(
        self,
        vault: str,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        expires: float | None = None,
        not_before: float | None = None,
        enabled: bool = True,
        created: float | None = None,
    ) -> str:
        """Add a new version of ``vault/name`` (as ``set_secret`` does); returns the version id."""
        now = int(time.time())
        version = _Version(
            id=uuid.uuid4().hex,
            value=value,
            created=int(created) if created is not None else now,
            updated=now,
            expires=None if expires is None else int(expires),
            not_before=None if not_before is None else int(not_before),
            enabled=enabled,
            content_type=content_type,
        )
        with self._state.lock:
            self._state.secrets.setdefault((vault, name), []).append(version)
        return version.id

    def deny(self, vault: str, name: str) -> None:
        """Answer 403 for ``vault/name``, as an RBAC role without ``secrets/get`` would."""
        with self._state.lock:
            self._state.denied.add((vault, name))

    def throttle(self, count: int, retry_after: float) -> None:
        """Answer the next ``count`` authorized requests with 429 and ``Retry-After``."""
        with self._state.lock:
            self._state.throttled = count
            self._state.retry_after = f"{retry_after:g}"

    def fail(self, count: int) -> None:
        """Answer the next ``count`` authorized requests with 503 (no ``Retry-After``)."""
        with self._state.lock:
            self._state.failing = count

    # -- what a test checks -----------------------------------------------------------------------

    @property
    def log(self) -> list[Request]:
        with self._state.lock:
            return list(self._state.log)

    def reads(self, vault: str, name: str) -> list[Request]:
        """Authorized GETs of ``vault/name`` (any version): the store reads the client made."""
        prefix = f"/{vault}/secrets/{name}"
        return [
            r
            for r in self.log
            if r.authorized
            and r.method == "GET"
            and (r.path == prefix or r.path.startswith(prefix + "/"))
        ]

    def challenges(self) -> int:
        """Requests answered with the 401 bearer challenge."""
        return sum(1 for r in self.log if r.status == 401)

    def clear_log(self) -> None:
        with self._state.lock:
            self._state.log.clear()


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"
    server_version = "FakeKeyVault/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .log instead
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = urlsplit(self.path).path
        state = self.state
        auth = self.headers.get("Authorization", "")
        authorized = secrets.compare_digest(auth.encode(), f"Bearer {state.token}".encode())
        status, body, headers = self._answer(method, path, authorized)
        with state.lock:
            state.log.append(Request(arrived, method, path, status, authorized))
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _answer(
        self, method: str, path: str, authorized: bool
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        state = self.state
        if not authorized:
            challenge = f'Bearer authorization="{AUTHORITY}", resource="{RESOURCE}"'
            return (
                401,
                _error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
                {"WWW-Authenticate": challenge},
            )
        parts = [p for p in path.split("/") if p]
        if method != "GET" or len(parts) not in (3, 4) or parts[1] != "secrets":
            return 400, _error("BadParameter", f"the fake does not serve {method} {path}"), {}
        vault, name = parts[0], parts[2]
        wanted = parts[3] if len(parts) == 4 else None
        with state.lock:
            if state.throttled > 0:
                state.throttled -= 1
                return (
                    429,
                    _error("Throttled", "Rate limit is exceeded. Try again later."),
                    {"Retry-After": state.retry_after},
                )
            if state.failing > 0:
                state.failing -= 1
                return 503, _error("ServiceUnavailable", "The service is unavailable."), {}
            if (vault, name) in state.denied:
                return (
                    403,
                    _error(
                        "Forbidden",
                        "Caller is not authorized to perform action on resource. "
                        f"Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action' "
                        f"Resource: '/vaults/{vault}/secrets/{name}' (fake Key Vault)",
                    ),
                    {},
                )
            versions = state.secrets.get((vault, name), [])
            found = versions[-1] if versions and wanted is None else None
            if wanted is not None:
                found = next((v for v in versions if v.id == wanted), None)
        if found is None:
            what = f"{name}/{wanted}" if wanted else name
            return (
                404,
                _error(
                    "SecretNotFound",
                    f"A secret with (name/id) {what} was not found in this key vault. (fake Key Vault)",
                ),
                {},
            )
        if not found.enabled:
            return (
                403,
                _error("Forbidden", "Operation get is not allowed on a disabled secret."),
                {},
            )
        attributes: dict[str, Any] = {
            "enabled": found.enabled,
            "created": found.created,
            "updated": found.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }
        if found.expires is not None:
            attributes["exp"] = found.expires
        if found.not_before is not None:
            attributes["nbf"] = found.not_before
        bundle: dict[str, Any] = {
            "value": found.value,
            # The SDK parses ids as https://HOST/secrets/NAME/VERSION (no path prefix).
            "id": f"https://{self.headers.get('Host', '127.0.0.1')}/secrets/{name}/{found.id}",
            "attributes": attributes,
            "tags": {},
        }
        if found.content_type is not None:
            bundle["contentType"] = found.content_type
        return 200, bundle, {}
