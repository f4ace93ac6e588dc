"""``vault://PATH[?version=N][#field]``: HashiCorp Vault and OpenBao (urllib3; hvac for logins).

- KV v1 and v2 are detected once per mount (``sys/internal/ui/mounts``) and cached; any other
  path is a logical read whose lease (dynamic database credentials, PKI...) drives renewal.
- Per-task child token: when the login token may create child tokens, every read is made with a
  child token whose TTL is the task's expected life, renewed while the process lives, revoked at
  close with one call (which revokes every lease issued under it). After SIGKILL nothing
  outlives that TTL. The login token (when the store logged in itself) and the child token are
  renewed by the resolver's scheduler (``BackendContext.renew_token``), like leases: one
  renewal mechanism per process, and a forked child never renews its parent's tokens.
- ``child_token = { policies = "per-stage" }`` (or a map of stage to policies): a read made
  inside a pipeline stage uses that stage's own child token, whose only policy is the stage's
  (``vault_stages``), so the server refuses what the stage's plan does not name.
- ``proxy = true``: ``addr`` is a node's ``leaseline proxy`` (OpenBao/Vault Proxy; ``http://``
  on loopback or ``unix:/PATH``), which logs in, holds the node's token and caches leased
  responses. The store sends no token, takes no child token, and never renews or revokes a lease
  it was served (the proxy owns it): it re-reads when the lease ends, at its real remaining TTL
  (``sys/leases/lookup`` through the proxy, since a cached response repeats its first TTL).
- Rotation writes through the capability methods (``read_version``, ``write_version``,
  ``retire_version`` on KV v2; ``rotate_static_role`` for database static roles).
- Requests go straight through a urllib3 pool (``._http``; one request per read, no extra
  lookups); hvac, and requests with it, are imported only by the login methods that need them
  (not for a plain token).

Why one module of ~830 lines: error translation, tokens, the mount cache, the protocol and the
capability methods all work on one client state (token in use, per-task token, known mounts);
what stands alone is elsewhere (logins: ``vault_auth``; HTTP: ``_http``).
"""

from __future__ import annotations

import builtins
import importlib.util
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

from .._config import parse_duration
from .._exceptions import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    LeaseExpired,
    LeaselineError,
    SecretNotFound,
)
from .._logins import remember
from .._refs import SecretRef
from .._secret import Lease
from .._stage import StagedRef
from . import BackendContext, ReadResult, SecretMetadata, Version, options_of
from ._http import Http, HttpFailure, Response
from .vault_auth import Auth, auth_from_table
from .vault_stages import (
    StagePolicies,
    StageToken,
    StageTokenTable,
    child_token_options,
    policies_for,
    stage_denied,
)

__all__ = ["VaultBackend", "VaultConfig"]

# hvac is imported only when a login needs it (every auth method but a plain token): hvac and
# requests cost ~50 ms of start-up, and a token's requests go through urllib3 directly.
if importlib.util.find_spec("hvac") is None:  # pragma: no cover - hvac is a dependency
    raise ModuleNotFoundError("No module named 'hvac'", name="hvac")

log = logging.getLogger("leaseline.vault")

_OPTIONS = {
    "addr",
    "token",
    "namespace",
    "cacert",
    "tls_skip_verify",
    "timeout",
    "auth",
    "child_token",
    "proxy",
}
_STATIC_CREDS = re.compile(r"(?P<mount>.+)/static-creds/(?P<role>[^/]+)")


@dataclass(frozen=True)
class VaultConfig:
    addr: str
    namespace: str | None
    verify: bool | str
    timeout: float
    auth: Auth
    child_token: bool
    child_ttl: float | None
    #: ``addr`` is a node's ``leaseline proxy``: no token, no child token, leases are its own
    proxy: bool = False
    #: ``child_token.policies``: ``"per-stage"``, a stage -> policies map, or ``None``
    stage_policies: StagePolicies = None
    #: ``child_token.role``: the token role stage tokens are made with
    token_role: str = "leaseline"

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any], task_ttl: float | None) -> VaultConfig:
        where = f"[stores.{name}]"
        opts = options_of(table, _OPTIONS, where)
        env = os.environ
        addr = str(
            opts.get("addr")
            or env.get("VAULT_ADDR")
            or env.get("BAO_ADDR")
            or "https://127.0.0.1:8200"
        )
        proxy = _flag(opts.get("proxy", False))
        if proxy and addr.startswith("unix:"):
            if not addr[len("unix:") :].startswith("/"):
                raise ConfigError(f"{where} addr: expected unix:/ABSOLUTE/PATH, got {addr!r}")
        elif not addr.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where} addr: expected http(s)://HOST:PORT"
                + (" or unix:/PATH (with proxy = true)" if proxy else "")
                + f", got {addr!r}"
            )
        skip = opts.get("tls_skip_verify", False)
        if not isinstance(skip, bool):
            skip = str(skip).lower() in {"true", "1", "yes"}
        cacert = opts.get("cacert") or env.get("VAULT_CACERT") or env.get("BAO_CACERT")
        verify: bool | str = False if skip else (str(cacert) if cacert else True)
        auth_table = opts.get("auth")
        if "token" in opts:
            if auth_table:
                raise ConfigError(f"{where}: give either 'token' or 'auth', not both")
            auth_table = {"method": "token", "token": opts["token"]}
        child = opts.get("child_token", {})
        if isinstance(child, bool):
            child = {"enabled": child}
        if not isinstance(child, Mapping):
            raise ConfigError(f'{where} child_token: expected a table such as {{ ttl = "6h" }}')
        stage_policies, role = child_token_options(child, where)
        if stage_policies is not None and (proxy or not _flag(child.get("enabled", True))):
            raise ConfigError(
                f"{where} child_token.policies needs per-task child tokens: "
                + (
                    "behind a node proxy (proxy = true) the proxy holds the only token"
                    if proxy
                    else "remove enabled = false"
                )
            )
        enabled = _flag(child.get("enabled", True)) and not proxy
        ttl = (
            parse_duration(child["ttl"], f"{where} child_token.ttl") if "ttl" in child else task_ttl
        )
        return cls(
            addr=addr.rstrip("/"),
            namespace=str(opts.get("namespace") or env.get("VAULT_NAMESPACE") or "") or None,
            verify=verify,
            timeout=parse_duration(opts.get("timeout", 5.0), f"{where} timeout"),
            auth=auth_from_table(auth_table, where),
            child_token=enabled,
            child_ttl=ttl,
            proxy=proxy,
            stage_policies=stage_policies,
            token_role=role,
        )


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in {"true", "1", "yes"}


class _TokenHolder:
    """Stands in for ``hvac.Client`` for token auth, which only sets ``client.token``."""

    token: str | None = None


@dataclass(frozen=True)
class _Mount:
    path: str  # with trailing slash
    kind: str  # "kv1", "kv2" or "other"


class VaultBackend:
    """The Vault/OpenBao store."""

    type: ClassVar[str] = "vault"

    def __init__(self, name: str, options: Mapping[str, Any], context: BackendContext) -> None:
        self.name = name
        self.config = VaultConfig.from_table(name, options, context.task_ttl)
        self._context = context
        self._clock = context.clock
        self._lock = threading.RLock()
        self._mounts: dict[str, _Mount] = {}
        self._http = Http(self.config.addr, verify=self.config.verify, timeout=self.config.timeout)
        self._client: Any = None
        self._token: str | None = None  # the token reads are made with (child when possible)
        self._login_token: str | None = None
        self._accessor: str | None = None
        self._child: str | None = None
        self._child_failed = False
        self._stages = StageTokenTable()
        self._unrevoked_child: str | None = None  # after close: the per-task token left valid
        self._final_denial = False  # a stage's denial: logging in again cannot change it
        if self.config.verify is False:
            log.warning("leaseline: TLS verification is off for store %s (tls_skip_verify)", name)

    # -- HTTP -------------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, ref: str, token: str | None = None, body: Any = None
    ) -> dict[str, Any]:
        headers = {"X-Vault-Request": "true"}
        if not self.config.proxy:  # behind the proxy, its token is forced on every request
            token = token or self._ensure_token()
            headers["X-Vault-Token"] = token
        if self.config.namespace:
            headers["X-Vault-Namespace"] = self.config.namespace
        try:
            resp = self._http.request(method, f"/v1/{path}", headers=headers, body=body)
        except HttpFailure as exc:
            if exc.kind == "tls":
                raise BackendUnavailable(
                    f"TLS verification failed for Vault at {self.config.addr}: set "
                    f"[stores.{self.name}] cacert (or VAULT_CACERT) to the CA that signed its "
                    "certificate",
                    ref=ref,
                    store=self.name,
                    transient=False,
                ) from exc
            if self.config.proxy:
                raise BackendUnavailable(
                    f"cannot reach the leaseline proxy at {self.config.addr} ({exc.kind}): start "
                    f"it on this node with `leaseline proxy --listen {_listen(self.config.addr)}`, "
                    f"or set [stores.{self.name}] proxy = false to talk to Vault directly",
                    ref=ref,
                    store=self.name,
                ) from exc
            if exc.kind == "timeout":
                raise BackendUnavailable(
                    f"Vault at {self.config.addr} did not answer within {self.config.timeout:g}s",
                    ref=ref,
                    store=self.name,
                ) from exc
            raise BackendUnavailable(
                f"cannot reach Vault at {self.config.addr} (connection refused or reset); "
                "is it running, and is VAULT_ADDR right?",
                ref=ref,
                store=self.name,
            ) from exc
        status = resp.status
        if status == 204:
            return {}
        if 200 <= status < 300:
            try:
                data: dict[str, Any] = resp.json()
            except ValueError:
                return {}
            return data
        self._raise_for(status, resp, path, ref, method, token)
        raise AssertionError("unreachable")

    def _raise_for(
        self, status: int, resp: Response, path: str, ref: str, method: str, token: str | None
    ) -> None:
        try:
            errors = resp.json().get("errors") or []
        except ValueError:
            errors = []
        detail = "; ".join(str(e) for e in errors)[:300]
        where = f"{path} at {self.config.addr}"
        if status == 404:
            raise SecretNotFound(f"{ref}: nothing at {where}", ref=ref, store=self.name)
        if status in (401, 403) and self.config.proxy:
            raise AccessDenied(
                f"{ref}: Vault refused {path.partition('?')[0]} to the leaseline proxy at "
                f"{self.config.addr} ({status}): the node's token (the proxy's store config) "
                "needs that capability, or it expired: check the proxy's log",
                ref=ref,
                store=self.name,
            )
        if status in (401, 403):
            if self._token_rejected(status, detail, path, token):
                raise AccessDenied(
                    f"{ref}: Vault at {self.config.addr} does not accept the token (invalid, "
                    "expired or revoked): give a valid one (VAULT_TOKEN, or the store's auth "
                    f"settings in [stores.{self.name}]) and check it with `bao token lookup`",
                    ref=ref,
                    store=self.name,
                )
            capability = {"GET": "read", "LIST": "list"}.get(method, "update")
            policy_path = path.partition("?")[0]
            stage = self._stages.of_token(token)
            if stage is not None:
                self._final_denial = True
                raise stage_denied(ref, policy_path, capability, stage, self.config.addr, self.name)
            raise AccessDenied(
                f"{ref}: permission denied on {policy_path} at {self.config.addr}: the token "
                f"needs '{capability}' on \"{policy_path}\" in its policy (check with "
                f"`bao token capabilities {policy_path}`)" + self._kv_hint(policy_path),
                ref=ref,
                store=self.name,
            )
        if status == 429 or status >= 500 or status == 412:
            sealed = "sealed" in detail or status == 503
            retry_after = resp.headers.get("Retry-After")
            raise BackendUnavailable(
                f"Vault at {self.config.addr} answered {status}"
                + (" (sealed or standby)" if sealed else "")
                + (f": {detail}" if detail and not sealed else ""),
                ref=ref,
                store=self.name,
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        raise LeaselineError(
            f"{ref}: Vault refused the request on {where} ({status}): {detail}",
            ref=ref,
            store=self.name,
        )

    def _token_rejected(self, status: int, detail: str, path: str, token: str | None) -> bool:
        """Whether a 401/403 is about the token itself rather than a missing capability."""
        if status == 401 or "invalid token" in detail or "token expired" in detail:
            return True
        token = token or self._token
        if path == "auth/token/lookup-self" or token is None:
            return False
        headers = {"X-Vault-Request": "true", "X-Vault-Token": token}
        if self.config.namespace:
            headers["X-Vault-Namespace"] = self.config.namespace
        try:  # every valid token may look itself up (the default policy)
            resp = self._http.request(
                "GET", "/v1/auth/token/lookup-self", headers=headers, body=None
            )
        except HttpFailure:
            return False
        return resp.status in (401, 403)

    def _kv_hint(self, path: str) -> str:
        """For a path whose mount could not be looked up: the KV v2 form of the policy path."""
        first, _, rest = path.partition("/")
        if not rest or rest.startswith(("data/", "metadata/")) or first in ("sys", "auth"):
            return ""
        if any(path.startswith(prefix) for prefix in self._mounts):
            return ""  # the mount is known: the path above is the one Vault checks
        return f'; if {first}/ is a KV v2 mount, the policy path is "{first}/data/{rest}"'

    # -- tokens -----------------------------------------------------------------------------------

    def _ensure_token(self) -> str:
        if self.config.proxy:
            return ""  # the proxy's token is used
        token = self._token
        if token is not None:
            return token
        with self._lock:
            if self._token is None:
                self._login()
                self._make_child()
            assert self._token is not None
            return self._token

    def _hvac_client(self) -> Any:
        """The hvac client (made on first use), over this backend's HTTP session."""
        if self._client is None:
            import hvac

            self._client = hvac.Client(
                url=self.config.addr,
                namespace=self.config.namespace,
                verify=self.config.verify,
                timeout=self.config.timeout,
            )
        return self._client

    def _login(self) -> None:
        auth = self.config.auth
        # a token needs no client: it is only stored (TokenAuth.login sets ``client.token``)
        client = _TokenHolder() if auth.method == "token" else self._hvac_client()
        try:
            auth.login(client, self._context.resolve)
        except Exception as exc:
            transport = sys.modules.get("requests.exceptions")  # loaded with hvac, if at all
            if transport is not None and isinstance(exc, transport.RequestException):
                raise BackendUnavailable(
                    f"cannot reach Vault at {self.config.addr} to log in", store=self.name
                ) from None
            errors = sys.modules.get("hvac.exceptions")
            if errors is None or not isinstance(exc, errors.VaultError):
                raise
            status = getattr(exc, "status_code", None) or 0
            if isinstance(exc, errors.Forbidden | errors.InvalidRequest | errors.Unauthorized):
                raise AccessDenied(
                    f"Vault login with method '{auth.method}' was refused at {self.config.addr}: "
                    "check the role and credentials in [stores." + self.name + "] auth",
                    store=self.name,
                ) from None
            raise BackendUnavailable(
                f"Vault login at {self.config.addr} failed ({status or type(exc).__name__})",
                store=self.name,
            ) from None
        self._login_token = client.token
        remember(self._login_token)  # masked, and kept out of `leaseline run` children
        self._token = self._login_token
        self._accessor = None
        if auth.owns_token:
            self._schedule_token_renewal(self._login_token, "login")

    def _make_child(self) -> None:
        if not self.config.child_token or self._child_failed:
            return
        body: dict[str, Any] = {
            "display_name": "leaseline-task",
            "meta": {"leaseline": "per-task", "pid": str(os.getpid())},
            "renewable": True,
        }
        if self.config.child_ttl:
            body["ttl"] = f"{int(self.config.child_ttl)}s"
            body["explicit_max_ttl"] = "0"
        try:
            data = self._request(
                "POST",
                "auth/token/create",
                ref="auth/token/create",
                token=self._login_token,
                body=body,
            )
        except AccessDenied:
            self._child_failed = True
            log.info(
                "leaseline: token for store %s cannot create child tokens; "
                "leases are issued under the login token",
                self.name,
            )
            return
        auth = data["auth"]
        self._child = auth["client_token"]
        remember(self._child)
        self._accessor = auth.get("accessor")
        self._token = self._child
        self._schedule_token_renewal(
            self._child, "child", ttl=float(auth.get("lease_duration") or 0)
        )

    def _stage_token(self, ref: SecretRef) -> StageToken | None:
        """The token of the stage ``ref`` was read in (made on its first read), ``None`` outside
        a stage or without ``child_token.policies``."""
        if not isinstance(ref, StagedRef) or self.config.stage_policies is None:
            return None
        found = self._stages.get(ref.stage)
        if found is not None:
            return found
        self._ensure_token()
        with self._stages.lock:
            found = self._stages.get(ref.stage)
            if found is None:
                try:
                    found = self._make_stage_token(ref.stage)
                except AccessDenied:
                    self._final_denial = True  # the role or the map says no: so would a re-login
                    raise
                self._stages.add(found)
            return found

    def _make_stage_token(self, stage: str) -> StageToken:
        policies = policies_for(self.config.stage_policies, stage, self.name)
        role = self.config.token_role
        body: dict[str, Any] = {
            "policies": list(policies),
            "display_name": "leaseline-stage",
            "meta": {"leaseline": "per-stage", "stage": stage, "pid": str(os.getpid())},
            "renewable": True,
        }
        if self.config.child_ttl:
            body["ttl"] = f"{int(self.config.child_ttl)}s"
        parent = self._child or self._login_token
        where = f"auth/token/create/{role}"
        try:
            data = self._request("POST", where, ref=where, token=parent, body=body)
        except (AccessDenied, SecretNotFound) as exc:
            denied = isinstance(exc, AccessDenied) and "does not accept" not in exc.message
            raise AccessDenied(
                f"stage '{stage}': store {self.name} cannot make its per-stage token at "
                f"{self.config.addr}: "
                + (
                    f'the worker\'s token needs "update" on "{where}" in its policy (the login '
                    "policy `leaseline plan --apply` prints)"
                    if denied
                    else f"{exc.message}"
                ),
                store=self.name,
            ) from None
        except BackendUnavailable:
            raise
        except LeaselineError as exc:  # 400: no such role, or the policy is not allowed by it
            raise AccessDenied(
                f"stage '{stage}': the token role '{role}' at {self.config.addr} does not exist "
                f"or does not allow the policies {', '.join(policies)}: run `leaseline plan "
                "--apply` on the pipeline (it writes each stage's policy and the role) "
                f"[{exc.message.rpartition(': ')[2][:200]}]",
                store=self.name,
            ) from None
        auth = data["auth"]
        token = str(auth["client_token"])
        remember(token)  # masked, and kept out of `leaseline run` children
        made = StageToken(
            stage, token, str(auth.get("accessor") or ""), policies, bool(self._child)
        )
        log.info(
            "leaseline: stage %s reads store %s under its own token (policies %s)",
            stage,
            self.name,
            ", ".join(policies),
        )
        self._schedule_token_renewal(
            token, f"stage:{stage}", ttl=float(auth.get("lease_duration") or 0)
        )
        return made

    def _schedule_token_renewal(
        self, token: str | None, kind: str, ttl: float | None = None
    ) -> None:
        schedule = self._context.renew_token
        if token is None or schedule is None:
            return
        if ttl is None:
            try:
                info = self._request(
                    "GET", "auth/token/lookup-self", ref="auth/token/lookup-self", token=token
                )["data"]
            except LeaselineError:
                return
            if not info.get("renewable"):
                return
            ttl = float(info.get("ttl") or 0)
            if kind == "login":
                self._accessor = self._accessor or info.get("accessor")
        if not ttl:
            return  # a token with no TTL (root) needs no renewal
        increment = f"{int(ttl)}s"

        def renew() -> float | None:
            if token not in (self._login_token, self._child) and not self._stages.holds(token):
                return None  # replaced (re-login) or revoked (close): nothing to renew
            data = self._request(
                "POST",
                "auth/token/renew-self",
                ref="auth/token/renew-self",
                token=token,
                body={"increment": increment},
            )
            return float(data["auth"]["lease_duration"]) or None

        schedule(f"{self.name}/{kind}", self._clock(), ttl, renew)

    def reauthenticate(self) -> None:
        """Log in again (the resolver calls this once after a 401/403 before giving up)."""
        if self._final_denial:  # a stage's policy lacks the path: a new login grants no more
            self._final_denial = False
            return
        with self._lock:
            self._stages.abandon()
            self._token = None
            self._child = None
            self._login()
            self._make_child()

    def node_token(self) -> str:
        """Log in and take a child token, and return it: the token ``leaseline proxy`` hands to
        OpenBao Proxy. Revoked by :meth:`close` (with every lease minted under it)."""
        if self.config.proxy:
            raise ConfigError(
                f"[stores.{self.name}] proxy = true: the proxy itself needs the server's address "
                "and a login; run `leaseline proxy` with a config where proxy is false"
            )
        self._ensure_token()
        if not self._child:
            raise AccessDenied(
                f"the token of store {self.name} cannot create child tokens at "
                f"{self.config.addr}: the proxy needs a per-node child token (grant "
                '"auth/token/create" create/update, and do not set child_token = false)',
                store=self.name,
            )
        return self._child

    def node_token_ttl(self) -> float | None:
        """Seconds the token of :meth:`node_token` has left, its login's included (``None``: no
        expiry); raises
        :class:`AccessDenied` when it is gone, :class:`BackendUnavailable` when Vault is."""
        child, login = self._child, self._login_token
        if not child or not login:
            raise AccessDenied(f"store {self.name} holds no node token", store=self.name)
        ttls = []
        for token in (child, login):  # a child token ends with its parent, whatever its own TTL
            info = self._request(
                "GET", "auth/token/lookup-self", ref="auth/token/lookup-self", token=token
            )["data"]
            if info.get("ttl"):
                ttls.append(float(info["ttl"]))
        return min(ttls, default=None)

    @property
    def leases_served(self) -> bool:
        """Behind a node's proxy, leases are the proxy's (see :class:`ServedLeases`)."""
        return self.config.proxy

    @property
    def accessor(self) -> str | None:
        """The accessor of the token reads are made with (safe to log; not the token)."""
        return self._accessor

    @property
    def child_token_accessor(self) -> str | None:
        """The per-task token's accessor (for the lease ledger), ``None`` without one; after
        :meth:`close`, the accessor of a per-task token whose revocation failed."""
        return self._accessor if self._child else self._unrevoked_child

    @property
    def addr(self) -> str:
        return self.config.addr

    @property
    def per_stage(self) -> bool:
        """Reads inside a stage use the stage's own token (``child_token.policies``)."""
        return self.config.stage_policies is not None

    @property
    def stage_token_accessors(self) -> dict[str, str]:
        """Stage -> accessor of each per-stage token (after close: those not revoked)."""
        return self._stages.accessors()

    # -- mounts -----------------------------------------------------------------------------------

    def _mount_for(self, path: str, ref: str, token: str | None = None) -> tuple[_Mount, str]:
        for prefix, mount in self._mounts.items():
            if path.startswith(prefix):
                return mount, path[len(prefix) :]
        try:
            lookup = f"sys/internal/ui/mounts/{quote(path)}"
            data = self._request("GET", lookup, ref=ref, token=token)["data"]
            prefix = str(data.get("path") or "")
            kind = "other"
            if data.get("type") in {"kv", "generic"}:
                version = str((data.get("options") or {}).get("version") or "1")
                kind = "kv2" if version == "2" else "kv1"
        except (AccessDenied, SecretNotFound, KeyError, TypeError):
            # No mount info visible: treat the path as a plain logical read.
            return _Mount("", "other"), path
        if not prefix:
            return _Mount("", "other"), path
        mount = _Mount(prefix, kind)
        self._mounts[prefix] = mount
        return mount, path[len(prefix) :]

    # -- the protocol -----------------------------------------------------------------------------

    def read(self, ref: SecretRef) -> ReadResult:
        key = ref.key
        path = ref.locator.strip("/")
        stage = self._stage_token(ref)
        token = stage.token if stage is not None else None
        mount, rest = self._mount_for(path + "/", key, token)
        rest = rest.rstrip("/")
        version = ref.option("version")
        if version is not None and mount.kind != "kv2":
            raise LeaselineError(f"{key}: ?version= only applies to KV v2 mounts", ref=key)
        accessor = stage.accessor if stage is not None else self._accessor
        identity = f"vault-accessor:{accessor}" if accessor else None
        if mount.kind == "kv2":
            url = f"{mount.path}data/{rest}" + (f"?version={quote(version)}" if version else "")
            body = self._request("GET", url, ref=key, token=token)
            data = body.get("data") or {}
            meta = data.get("metadata") or {}
            if data.get("data") is None:
                raise SecretNotFound(
                    f"{key}: version {meta.get('version', '?')} was deleted or destroyed", ref=key
                )
            return ReadResult(
                _stringify(data["data"]), None, version=str(meta.get("version")), identity=identity
            )
        body = self._request("GET", path, ref=key, token=token)
        data = body.get("data")
        if data is None:
            raise SecretNotFound(f"{key}: {path} returned no data", ref=key)
        fields = _stringify(data)
        lease_id = body.get("lease_id") or None
        if lease_id and stage is not None:
            self._stages.issued(lease_id, stage)
        duration = float(body.get("lease_duration") or 0)
        lease = None
        if self.config.proxy and lease_id and duration > 0:
            return ReadResult(fields, self._served(lease_id, duration, key), identity=identity)
        if mount.kind == "other" and duration > 0:
            lease = Lease.starting(
                lease_id,
                duration,
                renewable=bool(body.get("renewable")) and bool(lease_id),
                now=self._clock(),
            )
        return ReadResult(fields, lease, identity=identity)

    def _served(self, lease_id: str, duration: float, ref: str) -> Lease:
        """A lease the proxy served (perhaps from its cache, with the TTL of its first response):
        not ours to renew; it ends when the server says (``sys/leases/lookup``, when allowed)."""
        try:
            info = self._request(
                "PUT", "sys/leases/lookup", ref=ref, body={"lease_id": lease_id}
            ).get("data")
            duration = float((info or {}).get("ttl") or duration)
        except BackendUnavailable:
            raise
        except LeaselineError:  # not allowed to look leases up: the served TTL it is
            pass
        return Lease.starting(lease_id, duration, renewable=False, now=self._clock())

    def renew(self, lease: Lease) -> Lease:
        if not lease.id or self.config.proxy:
            return lease
        stage = self._stages.for_lease(lease.id)
        try:
            body = self._request(
                "PUT",
                "sys/leases/renew",
                ref=lease.id,
                token=stage.token if stage is not None else None,
                body={"lease_id": lease.id, "increment": int(lease.ttl)},
            )
        except (SecretNotFound, LeaselineError) as exc:
            if isinstance(exc, BackendUnavailable | AccessDenied):
                raise
            raise LeaseExpired(
                f"lease {lease.id} can no longer be renewed: {exc.message}"
            ) from None
        return lease.renewed(float(body.get("lease_duration") or 0), now=self._clock())

    def revoke(self, lease: Lease) -> None:
        if not lease.id or self.config.proxy:
            return  # the proxy's lease: it ends with the node's token
        stage = self._stages.for_lease(lease.id)
        try:
            self._request(
                "PUT",
                "sys/leases/revoke",
                ref=lease.id,
                token=stage.token if stage is not None else None,
                body={"lease_id": lease.id},
            )
        except SecretNotFound:
            return
        except LeaselineError as exc:
            if isinstance(exc, BackendUnavailable):
                raise
            if self._child or stage is not None:  # revoke-self of the token at close covers it
                log.debug(
                    "leaseline: lease revoke refused (%s); child token revocation covers it", exc
                )
                return
            raise

    def lookup_lease(self, lease_id: str) -> dict[str, Any] | None:
        """The server's view of a lease (``sys/leases/lookup``), or ``None`` when it is gone."""
        try:
            return self._request(
                "PUT", "sys/leases/lookup", ref=lease_id, body={"lease_id": lease_id}
            ).get("data")
        except (SecretNotFound, LeaselineError):
            return None

    def revoke_accessor(self, accessor: str) -> None:
        """Revoke a token by its accessor (and every lease issued under it); gone is fine.

        ``leaseline leases revoke --orphaned`` uses it for per-task tokens of killed runs.
        """
        try:
            self._request(
                "POST",
                "auth/token/revoke-accessor",
                ref="auth/token/revoke-accessor",
                token=self._login_token or self._ensure_token(),
                body={"accessor": accessor},
            )
        except SecretNotFound:
            return
        except LeaselineError as exc:
            if "invalid accessor" in exc.message or "not found" in exc.message:
                return
            raise

    def check(self) -> dict[str, Any]:
        """For ``leaseline doctor``: reachable (sys/health), authenticated, the token's TTL."""
        row: dict[str, Any] = {"reachable": False, "authenticated": False, "token_ttl": None}
        try:
            health = self._http.request("GET", "/v1/sys/health", headers={}).json()
        except (HttpFailure, ValueError) as exc:
            row["detail"] = f"cannot reach {self.config.addr} ({type(exc).__name__})"
            return row
        row["reachable"] = True
        if health.get("sealed"):
            row["detail"] = "sealed"
            return row
        row["version"] = health.get("version")
        try:
            self._ensure_token()
            info = self._request(
                "GET",
                "auth/token/lookup-self",
                ref="auth/token/lookup-self",
                token=self._login_token,
            )["data"]
        except LeaselineError as exc:
            row["detail"] = str(exc).splitlines()[0]
            return row
        row["authenticated"] = True
        ttl = info.get("ttl")
        row["token_ttl"] = "never expires" if not ttl else f"{int(ttl)}s"
        row["policies"] = info.get("policies")
        return row

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        key = ref.key
        path = ref.locator.strip("/")
        stage = self._stage_token(ref)
        token = stage.token if stage is not None else None
        mount, rest = self._mount_for(path + "/", key, token)
        rest = rest.rstrip("/")
        if mount.kind == "kv2":
            url = f"{mount.path}metadata/{rest}"
            data = self._request("GET", url, ref=key, token=token)["data"]
            current = str(data.get("current_version"))
            versions = data.get("versions") or {}
            updated = _ts(data.get("updated_time")) or _ts(
                (versions.get(current) or {}).get("created_time")
            )
            return SecretMetadata(
                key,
                updated_at=updated,
                created_at=_ts(data.get("created_time")),
                version=current,
                extra={"versions": sorted(versions, key=int)},
            )
        body = self._request("GET", path, ref=key, token=token)
        data = body.get("data") or {}
        if "last_vault_rotation" in data:  # database static role credentials
            return SecretMetadata(
                key,
                updated_at=_ts(data["last_vault_rotation"]),
                extra={"rotation_period": data.get("rotation_period"), "ttl": data.get("ttl")},
            )
        return SecretMetadata(key)

    def list(self, prefix: str) -> builtins.list[str]:
        """Locators one level under ``prefix`` (sub-folders end with ``/``); ``[]`` when empty.

        KV v1/v2 list their keys (v2 through ``metadata/``); under a database mount,
        ``static-creds/`` and ``creds/`` list the static roles and roles. Used by rotation checks.
        """
        path = prefix.strip("/")
        mount, rest = self._mount_for(path + "/", f"vault://{path}/")
        rest = rest.strip("/")
        if mount.kind == "kv2":
            url = f"{mount.path}metadata/{rest}"
        elif mount.kind == "kv1":
            url = f"{mount.path}{rest}"
        else:
            head, _, tail = rest.partition("/")
            roles = {"static-creds": "static-roles", "creds": "roles"}.get(head)
            url = f"{mount.path}{roles}/{tail}" if roles else path
        try:
            body = self._request("LIST", url.rstrip("/"), ref=f"vault://{path}/")
        except SecretNotFound:
            return []
        keys = (body.get("data") or {}).get("keys") or []
        return [f"{path}/{key}" if path else str(key) for key in keys]

    # -- rotation (capabilities Versioned and StaticRoles) ----------------------------------------

    def _kv2(self, ref: SecretRef) -> tuple[str, str]:
        """(mount path, path beneath it) of a KV v2 secret; rotation needs versions."""
        path = ref.locator.strip("/")
        mount, rest = self._mount_for(path + "/", ref.key)
        if mount.kind != "kv2":
            raise ConfigError(
                f"{ref.key}: rotation writes new versions, which needs a KV v2 mount "
                f"({mount.path or path} is {mount.kind}); KV v1 keeps no previous version"
            )
        return mount.path, rest.rstrip("/")

    def read_version(self, ref: SecretRef) -> Version:
        """The current KV v2 version (``raw``: the fields with their JSON types)."""
        mount, rest = self._kv2(ref)
        data = self._request("GET", f"{mount}data/{rest}", ref=ref.key)["data"]
        raw = data.get("data") or {}
        return Version(_stringify(raw), str(data["metadata"]["version"]), raw=raw)

    def write_version(
        self, ref: SecretRef, data: Mapping[str, Any], *, expected: str | None
    ) -> str | None:
        """Write the next KV v2 version, check-and-set on ``expected`` (``None``: must not exist)."""
        mount, rest = self._kv2(ref)
        body = {"options": {"cas": int(expected or 0)}, "data": dict(data)}
        out = self._request("POST", f"{mount}data/{rest}", ref=ref.key, body=body)
        return str((out.get("data") or {}).get("version"))

    def retire_version(self, ref: SecretRef, version: str, *, destroy: bool = False) -> None:
        """Soft-delete KV v2 ``version`` (``destroy``: its data is removed for good)."""
        mount, rest = self._kv2(ref)
        self._request(
            "POST",
            f"{mount}{'destroy' if destroy else 'delete'}/{rest}",
            ref=ref.key,
            body={"versions": [int(version)]},
        )

    def rotate_static_role(self, ref: SecretRef) -> None:
        """``vault://MOUNT/static-creds/ROLE``: ``POST MOUNT/rotate-role/ROLE``."""
        m = _STATIC_CREDS.fullmatch(ref.locator.strip("/"))
        if m is None:
            raise ConfigError(
                f"{ref.key}: vault-db-static-role rotates vault://MOUNT/static-creds/ROLE"
            )
        self._request("POST", f"{m['mount']}/rotate-role/{m['role']}", ref=ref.key)

    def close(self) -> None:
        """Revoke the per-stage tokens, the per-task token (every lease under them goes too)
        and an owned login token.

        Raises the :class:`LeaselineError` of a failed token revocation (after closing
        everything else); :attr:`child_token_accessor` and :attr:`stage_token_accessors` then
        name what is left, so the resolver can keep it as pending.
        """
        child, login = self._child, self._login_token
        failed = self._close_stage_tokens()
        self._child = None
        self._token = None
        if child:
            try:
                self._request(
                    "POST", "auth/token/revoke-self", ref="auth/token/revoke-self", token=child
                )
            except LeaselineError as exc:
                failed = failed or exc
                self._unrevoked_child = self._accessor
            else:  # the stage tokens made under it went with it
                self._stages.unrevoked = {}
        if login and self.config.auth.owns_token:
            try:
                self._request(
                    "POST", "auth/token/revoke-self", ref="auth/token/revoke-self", token=login
                )
            except LeaselineError:
                pass
        self._login_token = None
        self._http.close()
        if failed is not None:
            raise failed

    def _close_stage_tokens(self) -> LeaselineError | None:
        """Revoke every per-stage token (and its leases); those that fail stay listed in
        :attr:`stage_token_accessors`. Once the store is unreachable, the rest are not tried."""
        failed: LeaselineError | None = None
        unrevoked: dict[str, str] = {}
        for made in self._stages.take_all():
            if isinstance(failed, BackendUnavailable):
                unrevoked[made.stage] = made.accessor
                continue
            try:
                self._request(
                    "POST",
                    "auth/token/revoke-self",
                    ref="auth/token/revoke-self",
                    token=made.token,
                )
            except LeaselineError as exc:
                if isinstance(exc, AccessDenied) and "does not accept the token" in exc.message:
                    continue  # already gone (expired, or revoked with its parent)
                failed = failed or exc
                unrevoked[made.stage] = made.accessor
        self._stages.unrevoked = {s: a for s, a in unrevoked.items() if a}
        return failed


def _listen(addr: str) -> str:
    """The ``--listen`` form of a proxy address: ``unix:/PATH`` or ``HOST:PORT``."""
    return addr if addr.startswith("unix:") else addr.split("://", 1)[-1]


def _stringify(data: Mapping[str, Any]) -> dict[str, str]:
    import json

    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def _ts(value: Any) -> float | None:
    if not value or not isinstance(value, str):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # Vault gives nanoseconds; datetime takes microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
