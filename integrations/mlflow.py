"""MLflow request-auth provider: tracking-server credentials from secret references.

MLflow reads ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN`` once, as static values, and
never retries a 401. With ``MLFLOW_TRACKING_AUTH=leaseline`` MLflow asks this provider for the
auth of *every* request instead, so the credential can be short-lived::

    MLFLOW_TRACKING_AUTH=leaseline
    LEASELINE_MLFLOW_TOKEN=vault://secret/mlflow/ci#token          # a bearer token, or
    LEASELINE_MLFLOW_USERNAME=vault://secret/mlflow/trainer#username
    LEASELINE_MLFLOW_PASSWORD=vault://secret/mlflow/trainer#password

(or ``token``/``username``/``password`` in the ``[mlflow]`` section of ``leaseline.toml``; the
environment wins). The username may also be a plain name; token and password must be references.

Each request's header comes from ``Resolver.resolve`` (a warm cache hit inside the lease; the
resolver refreshes ahead of expiry). When the server answers 401 — the credential was rotated
before the lease said so — the auth hands the refusal to :func:`leaseline.retry_on_rotation`
(which invalidates the references and waits a jittered moment, at most 50 ms), resolves them
again and resends the request once; the retry is audited as an ``auth_retry`` event.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar as _extract_cookies_to_jar

from . import ConfigError, LeaselineError, Resolver, SecretRef, default_resolver, retry_on_rotation

__all__ = ["LeaselineAuth", "LeaselineAuthProvider", "MlflowCredentials"]

if TYPE_CHECKING:  # mlflow ships no type information; requests' stubs are optional
    _AuthBase = object
    _ProviderBase = object
else:
    _AuthBase = AuthBase
    _ProviderBase = RequestAuthProvider

_extract_cookies: Any = _extract_cookies_to_jar

log = logging.getLogger("leaseline.mlflow")

ENV_TOKEN = "LEASELINE_MLFLOW_TOKEN"
ENV_USERNAME = "LEASELINE_MLFLOW_USERNAME"
ENV_PASSWORD = "LEASELINE_MLFLOW_PASSWORD"

# Attributes set on a PreparedRequest: "this is already the one resend", "body started here".
_RESENT = "_leaseline_resent"
_BODY_POS = "_leaseline_body_pos"

_HOW = (
    f"set {ENV_TOKEN}=<reference>, or {ENV_USERNAME} and {ENV_PASSWORD}, or token / username + "
    "password in the [mlflow] section of leaseline.toml"
)


@dataclass(frozen=True, slots=True)
class MlflowCredentials:
    """Where the tracking credential comes from: a token reference, or username + password."""

    token: SecretRef | None = None
    username: SecretRef | str | None = None
    password: SecretRef | None = None

    @classmethod
    def load(
        cls, resolver: Resolver, environ: Mapping[str, str] | None = None
    ) -> MlflowCredentials:
        """Read the references from the environment, else from ``[mlflow]`` in the config.

        Raises :class:`ConfigError` when none or an ambiguous mix is given, and
        :class:`InvalidReference` when a token or password is not a reference.
        """
        env = os.environ if environ is None else environ
        section = resolver.config.section("mlflow")
        unknown = sorted(set(section) - {"token", "username", "password"})
        if unknown:
            raise ConfigError(
                f"[mlflow]: unknown key(s) {', '.join(unknown)}; known: password, token, username"
            )

        def pick(env_name: str, key: str) -> str | None:
            value = env.get(env_name) or section.get(key)
            return str(value) if value else None

        token = pick(ENV_TOKEN, "token")
        username = pick(ENV_USERNAME, "username")
        password = pick(ENV_PASSWORD, "password")
        if token and (username or password):
            raise ConfigError(
                "MLflow credentials: give either a token or a username and password, not both "
                f"({ENV_TOKEN} / [mlflow] token, or {ENV_USERNAME} + {ENV_PASSWORD})"
            )
        if token:
            return cls(token=resolver.parse(token))
        if username and password:
            user: SecretRef | str = resolver.parse(username) if "://" in username else username
            return cls(username=user, password=resolver.parse(password))
        if username or password:
            missing = ENV_PASSWORD if username else ENV_USERNAME
            raise ConfigError(f"MLflow credentials: {missing} is not set; {_HOW}")
        raise ConfigError(f"MLFLOW_TRACKING_AUTH=leaseline but no credential is configured: {_HOW}")

    def references(self) -> list[SecretRef]:
        """The references behind the credential (what a 401 invalidates)."""
        refs = [self.token, self.username, self.password]
        return [r for r in refs if isinstance(r, SecretRef)]

    def describe(self) -> str:
        """The main reference, for audit events and messages (never a value)."""
        main = self.token or self.password
        return str(main) if main is not None else "?"


class LeaselineAuth(_AuthBase):
    """``requests`` auth: sets ``Authorization`` from the resolver; on 401 re-resolves, resends once.

    >>> requests.get(url, auth=LeaselineAuth(resolver, creds))  # doctest: +SKIP
    """

    def __init__(self, resolver: Resolver, credentials: MlflowCredentials) -> None:
        self._resolver = resolver
        self._credentials = credentials

    def __repr__(self) -> str:
        return f"<LeaselineAuth {self._credentials.describe()}>"

    def header(self) -> str:
        """The current ``Authorization`` value (resolved; a warm hit inside the lease)."""
        creds, resolve = self._credentials, self._resolver.resolve
        if creds.token is not None:
            return f"Bearer {resolve(creds.token)}"
        assert creds.password is not None
        user = creds.username
        name = resolve(user) if isinstance(user, SecretRef) else str(user)
        pair = f"{name}:{resolve(creds.password)}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self.header()
        prepared: Any = r  # requests' private parts are untyped
        tell = getattr(prepared.body, "tell", None)
        if tell is not None:  # a file upload: remember where to rewind to for a resend
            try:
                setattr(prepared, _BODY_POS, tell())
            except OSError:
                setattr(prepared, _BODY_POS, None)
        prepared.register_hook("response", self._on_response)
        return r

    def _on_response(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        sent: Any = r.request
        if r.status_code != 401 or getattr(sent, _RESENT, False):
            return r
        target = f"{sent.method} {urlsplit(sent.url or '').path}"
        # the core's rotation window: every reference of the credential invalidated, a short
        # jittered wait; ``attempts=2``: this resend is the only one
        rotation = retry_on_rotation(
            self._credentials.references(), resolver=self._resolver, attempts=2
        )
        rotation.rejected()
        try:
            fresh = self.header()
        except LeaselineError as exc:
            log.warning(
                "leaseline: the MLflow server refused the credential and re-reading %s failed: %s",
                self._credentials.describe(),
                exc,
            )
            self._audit("error", target, error=type(exc).__name__)
            return r
        if hmac.compare_digest(fresh, sent.headers.get("Authorization", "")):
            # The store still holds the refused credential: resending it cannot help.
            self._audit("unchanged", target)
            return r
        pos = getattr(sent, _BODY_POS, None)
        if pos is not None:
            sent.body.seek(pos)
        elif hasattr(sent.body, "read"):
            self._audit("not_replayable", target)
            return r
        r.content  # noqa: B018 - read the body so the connection goes back to the pool
        r.close()
        prep: Any = sent.copy()
        _extract_cookies(prep._cookies, sent, r.raw)
        prep.prepare_cookies(prep._cookies)
        prep.headers["Authorization"] = fresh
        setattr(prep, _RESENT, True)
        connection: Any = getattr(r, "connection")  # noqa: B009 - set by requests' adapter
        resent: requests.Response = connection.send(prep, **kwargs)
        resent.history.append(r)
        resent.request = prep
        self._audit(
            "ok" if resent.status_code != 401 else "denied", target, status=resent.status_code
        )
        return resent

    def _audit(self, outcome: str, target: str, error: str | None = None, **extra: Any) -> None:
        refs = self._credentials.references()
        self._resolver.auditor.emit(
            "auth_retry",
            ref=self._credentials.describe(),
            store=refs[-1].store if refs else None,
            outcome=outcome,
            error=error,
            extra={"target": target, **extra},
        )


class LeaselineAuthProvider(_ProviderBase):
    """MLflow's ``mlflow.request_auth_provider`` plugin named ``leaseline``.

    MLflow builds one instance when it loads its plugins and calls :meth:`get_auth` for every
    tracking request (``MLFLOW_TRACKING_AUTH=leaseline``). The credential references are read on
    each call, so a changed environment applies to the next request.
    """

    def __init__(self, resolver: Resolver | None = None) -> None:
        # MLflow instantiates plugins at import time: build nothing here.
        self._resolver = resolver

    def get_name(self) -> str:
        return "leaseline"

    def get_auth(self) -> LeaselineAuth:
        """A fresh :class:`LeaselineAuth` for one request.

        Raises :class:`ConfigError` when no credential references are configured.
        """
        resolver = self._resolver or default_resolver()
        return LeaselineAuth(resolver, MlflowCredentials.load(resolver))
