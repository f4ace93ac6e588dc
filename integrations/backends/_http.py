"""HTTP for the Vault backend: one urllib3 connection pool per store.

urllib3 is what requests sends through; using it directly keeps the same connections, TLS
verification, proxies and timeouts while sparing ``leaseline run`` requests' import
(requests, charset-normalizer, idna, cookies: ~35 ms of every start). hvac, and with it a
requests session, is only loaded for login methods that need it.

Settings follow requests' conventions, so an environment that works for hvac works here:
``verify`` is ``True`` (CA bundle: ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, else certifi's,
else the system's), ``False``, or a CA file or directory; ``HTTPS_PROXY``/``HTTP_PROXY``/
``NO_PROXY`` are honoured. ``unix:/PATH`` addresses a server listening on a unix socket (a
node's ``leaseline proxy``).
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InsecureRequestWarning,
    MaxRetryError,
    NewConnectionError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

__all__ = ["Http", "HttpFailure", "Response", "abandon_pools"]


class HttpFailure(Exception):
    """The request did not get an answer. ``kind``: ``"tls"``, ``"timeout"`` or ``"connect"``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass(frozen=True)
class Response:
    status: int
    headers: Any  # urllib3's HTTPHeaderDict: case-insensitive
    data: bytes

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.data)


# Retries are the resolver's job (backoff inside a deadline); redirects are followed for writes
# (a standby node redirects to the active one) but not for reads, as before with requests.
_NO_RETRY = urllib3.Retry(total=0, connect=0, read=0, status=0, other=0, redirect=False)
_REDIRECTS = urllib3.Retry(
    total=None, connect=0, read=0, status=0, other=0, redirect=5, raise_on_redirect=False
)


def _ca_options(verify: bool | str) -> dict[str, Any]:
    if verify is False:
        return {"cert_reqs": "CERT_NONE"}
    if verify is True:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if not bundle:
            try:
                import certifi

                bundle = certifi.where()
            except ImportError:  # the system's store (ssl's defaults)
                return {"cert_reqs": "CERT_REQUIRED"}
        verify = bundle
    key = "ca_cert_dir" if os.path.isdir(verify) else "ca_certs"
    return {"cert_reqs": "CERT_REQUIRED", key: verify}


def _proxy_for(url: str) -> str | None:
    if not any(k.lower().endswith("_proxy") for k in os.environ):
        return None  # the common case, without importing urllib.request
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class _UnixConnection(HTTPConnection):
    """An HTTP connection over a unix socket (``socket_path``) instead of TCP."""

    def __init__(self, *args: Any, socket_path: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise NewConnectionError(self, f"{self.socket_path}: {exc.strerror or exc}") from exc
        return sock


class _UnixPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _UnixConnection  # type: ignore[assignment]


#: bumped when a signal handler is about to revoke: every ``Http`` then starts a new pool.
_generation = 0


def abandon_pools() -> None:
    """Make every ``Http`` use a new connection pool from its next request on.

    A signal handler runs on top of whatever the main thread was doing, and urllib3 may be in the
    middle of it with its pool's (non-reentrant) lock held: a request in flight, or its exit
    finalizer draining the pool. A revocation made through that pool would wait for the lock for
    ever; one made through a new pool does not. The old pool is left alone, not closed.
    """
    global _generation
    _generation += 1


class Http:
    """Requests to one server (``addr``: scheme, host and port), pooled, thread-safe."""

    def __init__(self, addr: str, *, verify: bool | str, timeout: float) -> None:
        self.addr = addr
        self.verify = verify
        self.timeout = urllib3.Timeout(connect=timeout, read=timeout)
        options: dict[str, Any] = {"maxsize": 10, "block": False}
        if addr.startswith("https:"):
            options.update(_ca_options(verify))
        if verify is False and addr.startswith("https:"):
            # asked for (tls_skip_verify) and logged once by the store; not once per request
            host = urllib3.util.parse_url(addr).host or ""
            warnings.filterwarnings(
                "ignore",
                message=f"Unverified HTTPS request is being made to host '{host}'",
                category=InsecureRequestWarning,
            )
        self._options = options
        self._socket = addr[len("unix:") :] if addr.startswith("unix:") else None
        self._proxy = None if self._socket else _proxy_for(addr)
        self._generation = _generation
        self._manager = self._new_manager()

    def _new_manager(self) -> urllib3.PoolManager | _UnixPool:
        if self._socket:
            return _UnixPool("localhost", maxsize=10, block=False, socket_path=self._socket)
        if self._proxy:
            return urllib3.ProxyManager(self._proxy, **self._options)
        return urllib3.PoolManager(**self._options)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Any = None,
    ) -> Response:
        """``method`` ``addr + path``; ``body`` is sent as JSON. Raises :class:`HttpFailure`."""
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers = {**headers, "Content-Type": "application/json"}
        if self._generation != _generation:  # a signal handler is revoking: see abandon_pools
            self._generation = _generation
            self._manager = self._new_manager()
        try:
            resp = self._manager.request(
                method,
                path if self._socket else self.addr + path,
                body=payload,
                headers=headers,
                timeout=self.timeout,
                retries=_NO_RETRY if method == "GET" else _REDIRECTS,
            )
        except MaxRetryError as exc:
            raise _failure(exc.reason or exc) from exc
        except HTTPError as exc:
            raise _failure(exc) from exc
        return Response(resp.status, resp.headers, resp.data)

    def close(self) -> None:
        if isinstance(self._manager, _UnixPool):
            self._manager.close()
        else:
            self._manager.clear()


def _failure(exc: BaseException) -> HttpFailure:
    if isinstance(exc, SSLError):
        return HttpFailure("tls", str(exc))
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError | TimeoutError):
        return HttpFailure("timeout", str(exc))
    if isinstance(exc, ProxyError):
        return HttpFailure("connect", f"through the proxy: {exc}")
    return HttpFailure("connect", str(exc))
