"""``azure-kv://VAULT/NAME[?version=V]``: Azure Key Vault secrets (azure-keyvault-secrets).

``VAULT`` is a vault name, read at ``https://VAULT.vault.azure.net`` (the store option
``url_template`` changes that, e.g. ``"https://{vault}.vault.azure.cn"``); a store with a fixed
``vault_url`` takes references ``STORE://NAME``. Credentials come from ``azure-identity``
(``credential = "default"``: environment, workload identity, managed identity, Azure CLI...).
JSON-object secrets expose their keys as fields; any other value is the field ``value``.

The SDK's own retries are off: the resolver retries transient errors (429 with ``Retry-After``,
5xx, connection failures) once, inside its deadline, and its cache and single flight keep a task's
reads to one per secret, which Key Vault's throttling needs.

Why ~500 lines: most of it is the credential choices and the translation of the SDK's errors
(throttling, denial, sovereign clouds) into messages that say what to fix; both serve one client.
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import KeyVaultSecret, SecretClient

from .. import masking
from .._config import parse_duration
from .._exceptions import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    InvalidReference,
    LeaselineError,
    SecretNotFound,
)
from .._refs import SecretRef, parse
from .._secret import Lease
from . import BackendContext, ReadResult, SecretMetadata, options_of

__all__ = ["KeyVaultBackend"]

DEFAULT_URL_TEMPLATE = "https://{vault}.vault.azure.net"
_VAULT = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{1,22}[A-Za-z0-9]\Z")  # Azure: 3-24 chars
_NAME = re.compile(r"[A-Za-z0-9-]{1,127}\Z")
_VERSION = re.compile(r"[A-Za-z0-9]{1,64}\Z")
_OPTIONS = {
    "api_version",
    "client_id",
    "connection_timeout",
    "credential",
    "read_timeout",
    "tenant_id",
    "token",
    "url_template",
    "vault_url",
    "verify",
    "verify_challenge_resource",
}
_GRANT_HINT = (
    "grant the identity the 'Key Vault Secrets User' role on the vault (Azure RBAC) or the "
    "'get' secret permission in the vault's access policy"
)


class _StaticToken:
    """A bearer token taken from a reference (``token = "env://AZURE_TEST_TOKEN"``).

    Re-resolved on every ``get_token`` so a rotated token is picked up; the resolver's cache
    keeps that cheap. Never shows the token.
    """

    def __init__(self, ref: str, resolve: Callable[[str], str], clock: Callable[[], float]) -> None:
        self._ref = ref
        self._resolve = resolve
        self._clock = clock

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        try:
            token = self._resolve(self._ref)
        except LeaselineError as exc:
            # surfaces as AccessDenied naming the vault, with this reason
            raise ClientAuthenticationError(
                message=f"the token reference {self._ref} could not be resolved ({exc})"
            ) from exc
        return AccessToken(token, int(self._clock()) + 3600)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<static token from {self._ref}>"


def _default(opts: Mapping[str, Any]) -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    kwargs: dict[str, Any] = {}
    if opts.get("client_id"):
        kwargs["managed_identity_client_id"] = str(opts["client_id"])
        kwargs["workload_identity_client_id"] = str(opts["client_id"])
    if opts.get("tenant_id"):
        kwargs["workload_identity_tenant_id"] = str(opts["tenant_id"])
    return DefaultAzureCredential(**kwargs)


def _environment(opts: Mapping[str, Any]) -> TokenCredential:
    from azure.identity import EnvironmentCredential

    return EnvironmentCredential()


def _workload_identity(opts: Mapping[str, Any]) -> TokenCredential:
    from azure.identity import WorkloadIdentityCredential

    kwargs = {k: str(opts[k]) for k in ("client_id", "tenant_id") if opts.get(k)}
    return WorkloadIdentityCredential(**kwargs)


def _managed_identity(opts: Mapping[str, Any]) -> TokenCredential:
    from azure.identity import ManagedIdentityCredential

    client_id = opts.get("client_id")
    return (
        ManagedIdentityCredential(client_id=str(client_id))
        if client_id
        else ManagedIdentityCredential()
    )


def _azure_cli(opts: Mapping[str, Any]) -> TokenCredential:
    from azure.identity import AzureCliCredential

    return (
        AzureCliCredential(tenant_id=str(opts["tenant_id"]))
        if opts.get("tenant_id")
        else AzureCliCredential()
    )


#: ``credential = "..."`` -> how to build it; ``static-token`` is handled by the backend (it
#: needs the resolver to resolve its ``token`` reference).
CREDENTIALS: Mapping[str, Callable[[Mapping[str, Any]], TokenCredential]] = {
    "azure-cli": _azure_cli,
    "default": _default,
    "environment": _environment,
    "managed-identity": _managed_identity,
    "workload-identity": _workload_identity,
}


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def retry_after_seconds(
    headers: Mapping[str, str] | None, now: float | None = None
) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``*retry-after-ms``."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("x-ms-retry-after-ms", 1000.0)):
        if name in lowered:
            try:
                return max(0.0, float(lowered[name]) / scale)
            except ValueError:
                pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def fields_of(value: str) -> dict[str, str]:
    """A JSON object's keys as fields (non-string values JSON-encoded); otherwise ``value``."""
    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            data = None
        if isinstance(data, dict) and data:
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    return {"value": value}


class KeyVaultBackend:
    """Reads Key Vault secrets through ``SecretClient``; one client per vault URL.

    Store options: ``vault_url`` or ``url_template``; ``credential`` (``default``,
    ``environment``, ``workload-identity``, ``managed-identity``, ``azure-cli``, ``static-token``
    with ``token`` a reference); ``client_id``/``tenant_id``; ``verify`` (CA bundle path: TLS
    verification cannot be turned off); ``verify_challenge_resource``; ``connection_timeout``,
    ``read_timeout``; ``api_version``.
    """

    type: ClassVar[str] = "azure-kv"

    def __init__(self, name: str, options: Mapping[str, Any], context: BackendContext) -> None:
        where = f"[stores.{name}]"
        opts = options_of(options, _OPTIONS, where)
        self.name = name
        self._context = context
        self._opts = opts
        if opts.get("vault_url") and opts.get("url_template"):
            raise ConfigError(f"{where}: give either vault_url or url_template, not both")
        self._vault_url: str | None = (
            str(opts["vault_url"]).rstrip("/") if opts.get("vault_url") else None
        )
        self._template = str(opts.get("url_template") or DEFAULT_URL_TEMPLATE)
        if self._vault_url is None and "{vault}" not in self._template:
            raise ConfigError(
                f"{where}: url_template must contain '{{vault}}', e.g. {DEFAULT_URL_TEMPLATE!r}; "
                "for one fixed vault use vault_url"
            )
        for url in (self._vault_url, self._template):
            if url is not None and not url.lower().startswith("https://"):
                raise ConfigError(f"{where}: Key Vault URLs must use https:// (got {url!r})")
        self._credential_kind = str(opts.get("credential", "default"))
        if self._credential_kind == "static-token":
            token = opts.get("token")
            if not isinstance(token, str):
                raise ConfigError(
                    f"{where}: credential 'static-token' needs token = a reference, "
                    'e.g. token = "env://AZURE_TEST_TOKEN"'
                )
            try:
                parse(token)
            except InvalidReference as exc:
                raise ConfigError(
                    f"{where}: token must be a reference such as "
                    f'"env://AZURE_TEST_TOKEN", never the token itself: {exc}'
                ) from None
        elif self._credential_kind not in CREDENTIALS:
            known = ", ".join(sorted([*CREDENTIALS, "static-token"]))
            raise ConfigError(
                f"{where}: unknown credential {self._credential_kind!r}; known: {known}"
            )
        elif "token" in opts:
            raise ConfigError(f'{where}: token is only used with credential = "static-token"')
        verify = opts.get("verify", True)
        if verify is False:
            raise ConfigError(
                f"{where}: TLS verification cannot be turned off; set verify to the "
                "path of a CA bundle that signs the vault's certificate"
            )
        if verify is not True and not isinstance(verify, str):
            raise ConfigError(f"{where}: verify must be the path of a CA bundle (PEM)")
        check_resource = opts.get("verify_challenge_resource", True)
        if not isinstance(check_resource, bool):
            raise ConfigError(f"{where}: verify_challenge_resource must be true or false")
        self._client_kwargs: dict[str, Any] = {
            "verify_challenge_resource": check_resource,
            # The resolver retries (honouring Retry-After) inside its deadline: one retry layer.
            "retry_total": 0,
        }
        if isinstance(verify, str):
            self._client_kwargs["connection_verify"] = verify
        for key in ("connection_timeout", "read_timeout"):
            if key in opts:
                self._client_kwargs[key] = parse_duration(opts[key], f"stores.{name}.{key}")
        if opts.get("api_version"):
            self._client_kwargs["api_version"] = str(opts["api_version"])
        self._lock = threading.Lock()
        self._credential: Any = None
        self._clients: dict[str, SecretClient] = {}

    # -- references ---------------------------------------------------------------------------

    def _target(self, ref: SecretRef) -> tuple[str, str, str, str | None]:
        """``(vault label, vault URL, secret name, version)`` of ``ref``."""
        unknown = sorted(k for k, _ in ref.options if k != "version")
        if unknown:
            raise InvalidReference(
                f"reference {ref.key}: unknown option(s) {', '.join(unknown)}; "
                "Key Vault references take only ?version=VERSION",
                ref=ref.key,
            )
        version = ref.option("version")
        if version is not None and not _VERSION.match(version):
            raise InvalidReference(
                f"reference {ref.key}: version must be a Key Vault version id (letters and digits)",
                ref=ref.key,
            )
        parts = ref.locator.split("/")
        if self._vault_url is not None:
            if len(parts) != 1:
                raise InvalidReference(
                    f"reference {ref.key}: store '{self.name}' reads the fixed vault "
                    f"{self._vault_url}; write {ref.store}://NAME",
                    ref=ref.key,
                )
            vault, name, url = self._vault_url, parts[0], self._vault_url
        else:
            if len(parts) != 2:
                raise InvalidReference(
                    f"reference {ref.key}: expected {ref.store}://VAULT/NAME[?version=V]",
                    ref=ref.key,
                )
            vault, name = parts
            if not _VAULT.match(vault):
                raise InvalidReference(
                    f"reference {ref.key}: '{vault}' is not a vault name "
                    "(3-24 letters, digits and '-')",
                    ref=ref.key,
                )
            url = self._template.replace("{vault}", vault)
        if not _NAME.match(name):
            raise InvalidReference(
                f"reference {ref.key}: '{name}' is not a Key Vault secret name "
                "(1-127 letters, digits and '-')",
                ref=ref.key,
            )
        return vault, url, name, version

    # -- clients ------------------------------------------------------------------------------

    def _client(self, url: str) -> SecretClient:
        client = self._clients.get(url)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                if self._credential is None:
                    self._credential = self._make_credential()
                client = SecretClient(url, self._credential, **self._client_kwargs)
                self._clients[url] = client
            return client

    def _make_credential(self) -> Any:
        if self._credential_kind == "static-token":
            return _StaticToken(
                str(self._opts["token"]), self._context.resolve, self._context.clock
            )
        return CREDENTIALS[self._credential_kind](self._opts)

    def _get(self, ref: SecretRef) -> tuple[str, str, KeyVaultSecret]:
        vault, url, name, version = self._target(ref)
        try:
            return vault, name, self._client(url).get_secret(name, version)
        except Exception as exc:
            raise self._translate(exc, ref, vault, url, name, version) from exc

    def _translate(
        self, exc: Exception, ref: SecretRef, vault: str, url: str, name: str, version: str | None
    ) -> LeaselineError:
        what = (
            f"secret '{name}'"
            + (f" version {version}" if version else "")
            + f" in Key Vault '{vault}'"
        )
        key, store = ref.key, self.name
        if isinstance(exc, ResourceNotFoundError):
            return SecretNotFound(f"no {what} (reference {key})", ref=key, store=store)
        if isinstance(exc, ClientAuthenticationError):
            return AccessDenied(
                f"Key Vault '{vault}' did not accept the {self._credential_kind!r} credential "
                f"reading {what}: {_sdk_message(exc)}; check the store's credential option and "
                "the identity's environment (AZURE_CLIENT_ID, AZURE_TENANT_ID, "
                "AZURE_FEDERATED_TOKEN_FILE)",
                ref=key,
                store=store,
            )
        if isinstance(exc, HttpResponseError):
            status = exc.status_code or 0
            headers = dict(getattr(exc.response, "headers", None) or {})
            if status == 403:
                return AccessDenied(
                    f"Key Vault '{vault}' denied get on {what} (HTTP 403: {_sdk_message(exc)}); "
                    f"{_GRANT_HINT}",
                    ref=key,
                    store=store,
                )
            if status == 401:
                return AccessDenied(
                    f"Key Vault '{vault}' rejected the token reading {what} (HTTP 401)",
                    ref=key,
                    store=store,
                )
            if status in (408, 429) or status >= 500:
                wait = retry_after_seconds(headers)
                hint = f"; the vault asks to retry after {wait:g}s" if wait is not None else ""
                reason = "throttled the request" if status == 429 else f"answered HTTP {status}"
                return BackendUnavailable(
                    f"Key Vault '{vault}' {reason} reading {what}{hint}",
                    ref=key,
                    store=store,
                    transient=True,
                    retry_after=wait,
                )
            return LeaselineError(
                f"Key Vault '{vault}' answered HTTP {status} reading {what}: {_sdk_message(exc)}",
                ref=key,
                store=store,
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
                return BackendUnavailable(
                    f"the TLS certificate of Key Vault '{vault}' ({url}) is not trusted; set the "
                    f"store's verify option to the CA bundle that signs it",
                    ref=key,
                    store=store,
                    transient=False,
                )
            return BackendUnavailable(
                f"cannot reach Key Vault '{vault}' at {url} reading {what} ({type(exc).__name__})",
                ref=key,
                store=store,
                transient=True,
            )
        if isinstance(exc, ValueError) and "challenge" in str(exc).lower():
            return ConfigError(
                f"Key Vault '{vault}' at {url} sent an authentication challenge for another "
                f"resource: {_sdk_message(exc)}; if {url} is a private endpoint or a test server, "
                f"set verify_challenge_resource = false in [stores.{self.name}]",
                ref=key,
                store=store,
            )
        return LeaselineError(f"reading {what} failed: {type(exc).__name__}", ref=key, store=store)

    # -- the backend protocol -----------------------------------------------------------------

    def read(self, ref: SecretRef) -> ReadResult:
        """Get the secret (latest version, or ``?version=``); JSON objects become fields."""
        _, _, secret = self._get(ref)
        if secret.value is None:
            raise SecretNotFound(
                f"Key Vault returned no value for {ref.key}", ref=ref.key, store=self.name
            )
        return ReadResult(fields_of(secret.value), None, version=secret.properties.version)

    def renew(self, lease: Lease) -> Lease:
        return lease

    def revoke(self, lease: Lease) -> None:
        pass

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        """``updated_on``/``created_on``/``expires_on``/``version`` from the vault, for rotation."""
        vault, name, secret = self._get(ref)
        props = secret.properties
        return SecretMetadata(
            ref.key,
            updated_at=_timestamp(props.updated_on),
            created_at=_timestamp(props.created_on),
            version=props.version,
            expires_at=_timestamp(props.expires_on),
            extra={
                "vault": vault,
                "name": name,
                "updated_on": _iso(props.updated_on),
                "created_on": _iso(props.created_on),
                "expires_on": _iso(props.expires_on),
                "not_before": _iso(props.not_before),
                "enabled": props.enabled,
                "content_type": props.content_type,
                "recovery_level": props.recovery_level,
            },
        )

    def reauthenticate(self) -> None:
        """Drop clients and credential so the next read gets a fresh token (after a 401/403)."""
        self.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            credential, self._credential = self._credential, None
        for client in clients:
            client.close()
        close = getattr(credential, "close", None)
        if callable(close):
            close()


def _sdk_message(exc: Exception) -> str:
    """The SDK's own explanation, first line, masked and shortened (no values, no bodies)."""
    error = getattr(exc, "error", None)
    text = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return masking.masker().mask(first[:300])
