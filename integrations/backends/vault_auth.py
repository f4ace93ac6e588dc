"""How the Vault backend logs in: one small class per auth method.

``[stores.vault] auth = { method = "approle", role_id = "...", secret_id = "env://SECRET_ID" }``.
Credential values may be references (``env://``, ``file://``): they are resolved at login.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .._exceptions import AccessDenied, ConfigError
from .._logins import remember
from .._refs import is_reference

if TYPE_CHECKING:  # hvac is imported when a login needs it (see backends/vault.py)
    import hvac

__all__ = ["AUTH_METHODS", "Auth", "auth_from_table"]

Resolve = Callable[[str], str]

K8S_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def _value(raw: object, resolve: Resolve) -> str:
    text = str(raw)
    return resolve(text) if is_reference(text) else text


class Auth(Protocol):
    method: ClassVar[str]
    #: True when the token came from a login (and is ours to renew and revoke)
    owns_token: ClassVar[bool]

    def login(self, client: hvac.Client, resolve: Resolve) -> None: ...


@dataclass(frozen=True)
class TokenAuth:
    """A token given directly: ``token`` in config, ``VAULT_TOKEN``/``BAO_TOKEN``, or ``~/.vault-token``."""

    method: ClassVar[str] = "token"
    owns_token: ClassVar[bool] = False
    token: str | None = None

    def login(self, client: hvac.Client, resolve: Resolve) -> None:
        token = _value(self.token, resolve) if self.token else None
        token = token or os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")
        if not token:
            path = Path.home() / ".vault-token"
            if path.is_file():
                token = path.read_text().strip()
        if not token:
            raise AccessDenied(
                "no Vault token: set VAULT_TOKEN (or BAO_TOKEN), or configure "
                '[stores.vault] auth = { method = "approle" | "jwt" | "ci" | "kubernetes" | "userpass", ... }'
            )
        client.token = token


@dataclass(frozen=True)
class AppRoleAuth:
    method: ClassVar[str] = "approle"
    owns_token: ClassVar[bool] = True
    role_id: str
    secret_id: str | None = None
    mount: str = "approle"

    def login(self, client: hvac.Client, resolve: Resolve) -> None:
        secret_id = _value(self.secret_id, resolve) if self.secret_id else None
        remember(secret_id)
        client.auth.approle.login(
            role_id=_value(self.role_id, resolve), secret_id=secret_id, mount_point=self.mount
        )


@dataclass(frozen=True)
class JwtAuth:
    """JWT/OIDC login, e.g. a CI job's identity token: ``jwt = "env://CI_JOB_JWT_V2"``."""

    method: ClassVar[str] = "jwt"
    owns_token: ClassVar[bool] = True
    role: str
    jwt: str | None = None
    jwt_file: str | None = None
    mount: str = "jwt"

    def login(self, client: hvac.Client, resolve: Resolve) -> None:
        if self.jwt:
            token = _value(self.jwt, resolve)
        elif self.jwt_file:
            token = Path(self.jwt_file).read_text().strip()
        else:
            raise ConfigError(
                "auth method jwt needs 'jwt' (a reference such as env://CI_JWT) or 'jwt_file'"
            )
        remember(token)
        client.auth.jwt.jwt_login(role=self.role, jwt=token, path=self.mount)


@dataclass(frozen=True)
class CiAuth:
    """JWT login with the CI job's own identity token: no Vault secret stored in CI.

    ``auth = { method = "ci", role = "training-ci", audience = "https://vault.example" }``:
    GitHub Actions' OIDC token (requested with ``audience``), else GitLab's ``id_tokens``
    variable (``token_env``, default ``VAULT_ID_TOKEN``). See ``leaseline.runtime.ci.identity_token``.
    """

    method: ClassVar[str] = "ci"
    owns_token: ClassVar[bool] = True
    role: str
    audience: str | None = None
    token_env: str | None = None
    mount: str = "jwt"

    def login(self, client: hvac.Client, resolve: Resolve) -> None:
        from ..runtime.ci import identity_token

        token = identity_token(self.audience, token_env=self.token_env)
        remember(token)
        client.auth.jwt.jwt_login(role=self.role, jwt=token, path=self.mount)


@dataclass(frozen=True)
class KubernetesAuth:
    """In-pod login with the service-account token file."""

    method: ClassVar[str] = "kubernetes"
    owns_token: ClassVar[bool] = True
    role: str
    jwt_file: str = K8S_TOKEN
    mount: str = "kubernetes"

    def login(self, client: hvac.Client, resolve: Resolve) -> None:
        try:
            token = Path(self.jwt_file).read_text().strip()
        except OSError as exc:
            raise AccessDenied(
                f"Kubernetes auth: cannot read the service-account token {self.jwt_file} "
                f"({exc.strerror}); is the pod's token mounted?"
            ) from None
        remember(token)
        client.auth.kubernetes.login(role=self.role, jwt=token, mount_point=self.mount)


@dataclass(frozen=True)
class UserpassAuth:
    method: ClassVar[str] = "userpass"
    owns_token: ClassVar[bool] = True
    username: str
    password: str
    mount: str = "userpass"

    def login(self, client: hvac.Client, resolve: Resolve) -> None:
        password = _value(self.password, resolve)
        remember(password)
        client.auth.userpass.login(
            username=_value(self.username, resolve), password=password, mount_point=self.mount
        )


AUTH_METHODS: Mapping[str, type[Any]] = {
    cls.method: cls
    for cls in (TokenAuth, AppRoleAuth, JwtAuth, CiAuth, KubernetesAuth, UserpassAuth)
}
AUTH_METHODS = {**AUTH_METHODS, "oidc": JwtAuth}


def auth_from_table(table: Mapping[str, Any] | None, where: str) -> Auth:
    """Build the auth strategy from ``auth = {...}``; a missing table means token auth."""
    if not table:
        return TokenAuth()
    if not isinstance(table, Mapping):
        raise ConfigError(f'{where}.auth: expected a table such as {{ method = "approle", ... }}')
    options = dict(table)
    method = str(options.pop("method", "token"))
    cls = AUTH_METHODS.get(method)
    if cls is None:
        raise ConfigError(
            f"{where}.auth.method: unknown method '{method}'; known: {', '.join(sorted(AUTH_METHODS))}"
        )
    fields = set(cls.__dataclass_fields__)
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(
            f"{where}.auth: unknown option(s) {', '.join(unknown)} for method '{method}'; "
            f"known: {', '.join(sorted(fields))}"
        )
    try:
        auth: Auth = cls(**{k: str(v) for k, v in options.items()})
    except TypeError:
        required = [
            n
            for n, f in cls.__dataclass_fields__.items()
            if f.default is f.default_factory  # MISSING for both: a required field
        ]
        raise ConfigError(f"{where}.auth: method '{method}' needs {', '.join(required)}") from None
    return auth
