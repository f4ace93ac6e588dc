"""``LeaselineBackend``: Airflow's secrets-backend hooks mapped onto a :class:`leaseline.Resolver`.

Thin on purpose: caching (misses included), leases, renewal, masking and audit live in the core.
This module only turns a conn_id / variable key / config key into a reference, asks the resolver,
and translates the answer into what Airflow expects (``None`` = not here, fall through;
``AirflowSecretsBackendAccessDenied`` = denied, never fall through).

Where it runs matters, and each case is one :class:`leaseline._scope.Scope`. In a task process
the task's own backend resolves, and the task's scope holds its leases until it ends (and owns
the backend's resolvers: their per-task tokens end with it). In the long-running components
(api-server, scheduler, DAG processor, triggerer) each lookup is a scope of its own, so a dynamic
lease lives only for the lookup that needed it, and a request a task makes through the Execution
API (its own backend already missed) is not answered again here.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from airflow.sdk.bases.secrets_backend import BaseSecretsBackend
from leaseline import (
    AccessDenied,
    InvalidReference,
    LeaselineError,
    Resolver,
    SecretNotFound,
    parse,
)
from leaseline._scope import Resolvers, Scope

from . import _task

try:  # task-sdk >= 1.2.2
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
except ImportError:  # pragma: no cover - older task-sdk: Airflow catches PermissionError alike

    class AirflowSecretsBackendAccessDenied(PermissionError):  # type: ignore[no-redef]
        """Stand-in for Airflow's authoritative-deny exception."""


__all__ = ["LeaselineBackend"]

#: Connection fields Airflow's JSON form knows; other fields of a store secret go to ``extra``.
_CONN_FIELDS = ("conn_type", "host", "login", "password", "schema", "port", "extra", "description")
#: Fields that hold a whole serialized connection.
_URI_FIELDS = ("conn_uri", "uri")
#: A key is put into a reference only when it is made of these (no '?', '#', '..', spaces).
_SAFE_KEY = re.compile(r"[\w.\-/@+=,:]+")

#: one resolver per config file (``None``: environment and default file), shared by every
#: ``LeaselineBackend`` of the process (Airflow builds one per config lookup); a task's scope
#: closes them when the task ends
_resolvers: Resolvers[str | None] = Resolvers(
    lambda path: Resolver() if path is None else Resolver.from_config(path)
)

log = logging.getLogger("leaseline.airflow")
_warned_empty = False
#: modules of the api-server's Execution API: a lookup made for a task whose backend missed
_EXECUTION_API = "airflow.api_fastapi.execution_api"


def resolver_for(config_file: str | None) -> Resolver:
    """The process's resolver for ``config_file`` (``None``: environment and default file)."""
    return _resolvers.get(config_file)


def close_resolvers() -> None:
    """Close every resolver this module built (revoking their leases) and forget them."""
    _resolvers.close()


def _compile(pattern: str | None, what: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"LeaselineBackend {what}: not a regular expression: {exc}") from None


def _check_template(template: str | None, placeholder: str, what: str) -> str | None:
    if template is None:
        return None
    if "{" + placeholder + "}" not in template:
        raise ValueError(
            f"LeaselineBackend {what}={template!r} must contain {{{placeholder}}}, "
            f'e.g. "vault://secret/airflow/{what.split("_")[0]}/{{{placeholder}}}"'
        )
    parse(template.replace("{" + placeholder + "}", "probe"))  # fail at start-up, not per lookup
    return template


class LeaselineBackend(BaseSecretsBackend):
    """Airflow secrets backend that resolves connections, variables and config through leaseline.

    ``airflow.cfg``::

        [secrets]
        backend = leaseline.airflow.LeaselineBackend
        backend_kwargs = {"variables_ref": "vault://secret/airflow/variables/{key}",
                          "connections": {"etl_db": {"conn_type": "postgres", "host": "db",
                              "login": "vault://database/creds/etl#username",
                              "password": "vault://database/creds/etl#password"}}}

    - ``connections_ref`` / ``variables_ref`` / ``config_ref``: reference templates with
      ``{conn_id}`` / ``{key}``. A connection secret is either one value (a URI or Airflow's
      JSON form), or fields (``conn_type``, ``host``, ``login``, ``password``, ``port``, ...;
      ``conn_uri`` for a whole URI). A variable secret without ``#field`` is its only field, or
      its ``value`` field.
    - ``connections``: conn_id -> a reference, or a dict of connection fields whose string
      values may be references (fields from one dynamic lease share that lease: one read).
    - ``*_lookup_pattern``: a regular expression (``re.match``); keys that do not match never
      reach a store.
    - ``config_file``: a leaseline config file; default: ``$LEASELINE_CONFIG``, ``leaseline.toml``,
      environment.

    A missing secret returns ``None``, so Airflow falls through to environment variables and
    the metastore; a denied one raises ``AirflowSecretsBackendAccessDenied``. Every value is
    handed to ``airflow.sdk.log.mask_secret``.
    """

    def __init__(
        self,
        connections_ref: str | None = None,
        variables_ref: str | None = None,
        config_ref: str | None = None,
        connections: Mapping[str, str | Mapping[str, Any]] | None = None,
        connections_lookup_pattern: str | None = None,
        variables_lookup_pattern: str | None = None,
        config_lookup_pattern: str | None = None,
        config_file: str | None = None,
    ) -> None:
        super().__init__()
        patterns = (connections_lookup_pattern, variables_lookup_pattern, config_lookup_pattern)
        if _nothing_configured(connections_ref, variables_ref, config_ref, connections, *patterns):
            inherited = _secrets_section_kwargs()
            connections_ref = inherited.get("connections_ref")
            variables_ref = inherited.get("variables_ref")
            config_ref = inherited.get("config_ref")
            connections = inherited.get("connections")
            connections_lookup_pattern = inherited.get("connections_lookup_pattern")
            variables_lookup_pattern = inherited.get("variables_lookup_pattern")
            config_lookup_pattern = inherited.get("config_lookup_pattern")
            config_file = config_file or inherited.get("config_file")
            if _nothing_configured(connections_ref, variables_ref, config_ref, connections):
                _warn_empty()
        self.connections_ref = _check_template(connections_ref, "conn_id", "connections_ref")
        self.variables_ref = _check_template(variables_ref, "key", "variables_ref")
        self.config_ref = _check_template(config_ref, "key", "config_ref")
        self.connections = dict(connections or {})
        for conn_id, spec in self.connections.items():
            if isinstance(spec, str):
                parse(spec)  # a bad reference fails at start-up, naming itself
            elif not isinstance(spec, Mapping):
                raise ValueError(
                    f"LeaselineBackend connections[{conn_id!r}]: expected a reference or a dict "
                    "of connection fields"
                )
        self._patterns = {
            "connection": _compile(connections_lookup_pattern, "connections_lookup_pattern"),
            "variable": _compile(variables_lookup_pattern, "variables_lookup_pattern"),
            "config": _compile(config_lookup_pattern, "config_lookup_pattern"),
        }
        self.config_file = config_file
        #: (kind, key) -> reference or None: keys are checked once, not on every warm lookup
        self._memo: dict[tuple[str, str], str | None] = {}
        _task.install()

    def __repr__(self) -> str:
        return (
            f"LeaselineBackend(connections_ref={self.connections_ref!r}, "
            f"variables_ref={self.variables_ref!r}, config_ref={self.config_ref!r}, "
            f"connections={sorted(self.connections)!r})"
        )

    @property
    def resolver(self) -> Resolver:
        return resolver_for(self.config_file)

    # -- Airflow's hooks --------------------------------------------------------------------

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        """The connection as a URI or Airflow's JSON form, or ``None`` when it is not here."""
        spec = self.connections.get(conn_id)
        if spec is None:
            ref = self._ref(self.connections_ref, "conn_id", conn_id, "connection")
            if ref is None:
                return None
            return self._lookup(conn_id, "connection", lambda s, r: _conn_from_ref(s, r, ref))
        if isinstance(spec, str):
            return self._lookup(conn_id, "connection", lambda s, r: _conn_from_ref(s, r, spec))
        fields = spec
        return self._lookup(conn_id, "connection", lambda s, r: _conn_from_fields(s, r, fields))

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        """The variable's value, or ``None`` when it is not here."""
        ref = self._ref(self.variables_ref, "key", key, "variable")
        if ref is None:
            return None
        return self._lookup(key, "variable", lambda s, r: _value(s, r, ref))

    def get_config(self, key: str) -> str | None:
        """An Airflow config value (``[section] key_secret = ...``), or ``None``."""
        ref = self._ref(self.config_ref, "key", key, "config")
        if ref is None:
            return None
        return self._lookup(key, "config", lambda s, r: _value(s, r, ref))

    # -- mapping ----------------------------------------------------------------------------

    def _ref(self, template: str | None, placeholder: str, key: str, kind: str) -> str | None:
        if template is None:
            return None
        if (kind, key) in self._memo:
            return self._memo[(kind, key)]
        ref = self._build_ref(template, placeholder, key, kind)
        if len(self._memo) > 10_000:
            self._memo.clear()
        self._memo[(kind, key)] = ref
        return ref

    def _build_ref(self, template: str, placeholder: str, key: str, kind: str) -> str | None:
        pattern = self._patterns[kind]
        if pattern is not None and pattern.match(key) is None:
            return None
        if _SAFE_KEY.fullmatch(key) is None or ".." in key:
            return None  # cannot name a secret: keep it from steering the reference
        return template.replace("{" + placeholder + "}", key)

    def _lookup(self, key: str, kind: str, read: _Read) -> str | None:
        task = _task.on_lookup()
        if task is None and _answering_for_a_task():
            # The task's own backend asked the store and missed: asking again here would take
            # the lease in the api-server, outside the task's life and audit context.
            return None
        if task is not None:
            task.own(_resolvers)  # the task's end closes them: per-task tokens end with it
            return self._read(key, kind, read, task)
        with Scope(f"airflow {kind} lookup") as lookup:  # outside a task: no lease outlives it
            return self._read(key, kind, read, lookup)

    def _read(self, key: str, kind: str, read: _Read, scope: Scope) -> str | None:
        try:
            return read(scope, self.resolver)
        except SecretNotFound:
            return None
        except InvalidReference:
            return None
        except AccessDenied as exc:
            raise AirflowSecretsBackendAccessDenied(
                f"leaseline: access to {kind} {key!r} was denied by the store: {exc}"
            ) from None


#: reads one lookup's answer, holding its leases in the scope
_Read = Callable[[Scope, Resolver], str]


def _answering_for_a_task() -> bool:
    """True when this lookup serves an Execution API request (a task's fall-through)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_EXECUTION_API):
            return True
        frame = frame.f_back
    return False


def _nothing_configured(*kwargs: object) -> bool:
    return all(value is None for value in kwargs)


def _secrets_section_kwargs() -> dict[str, Any]:
    """``[secrets] backend_kwargs`` when ``[secrets] backend`` is leaseline too, else ``{}``.

    Airflow builds ``[workers] secrets_backend`` with ``[workers] secrets_backend_kwargs`` only;
    set without them, the worker's backend would get no references at all and every lookup
    would fall through to the api-server. The kwargs of the same backend apply instead.
    """
    try:
        from airflow.sdk.configuration import conf

        if conf.getimport("secrets", "backend", fallback=None) is not LeaselineBackend:
            return {}
        kwargs = conf.getjson("secrets", "backend_kwargs", fallback=None) or {}
    except Exception:  # an unreadable [secrets] section: Airflow itself reports it
        return {}
    if not isinstance(kwargs, dict):
        return {}
    try:  # per-key overrides, AIRFLOW__SECRETS__BACKEND_KWARG__<NAME>, as Airflow reads them
        from airflow.sdk._shared.configuration.parser import (
            _build_kwarg_env_prefix,
            _collect_kwarg_env_vars,
        )

        kwargs.update(_collect_kwarg_env_vars(_build_kwarg_env_prefix("secrets", "backend_kwargs")))
    except ImportError:
        pass
    return kwargs


def _warn_empty() -> None:
    global _warned_empty
    if _warned_empty:
        return
    _warned_empty = True
    log.warning(
        "leaseline: LeaselineBackend was built with no references configured (no variables_ref, "
        "connections_ref, config_ref or connections), so it answers nothing and Airflow falls "
        "through to its other sources. Give it backend kwargs where it is set: [workers] "
        "secrets_backend_kwargs (AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS) next to [workers] "
        "secrets_backend, or [secrets] backend_kwargs (AIRFLOW__SECRETS__BACKEND_KWARGS) next "
        "to [secrets] backend, which workers also use when [workers] has no kwargs."
    )


def _value(scope: Scope, resolver: Resolver, ref: str) -> str:
    parsed = resolver.parse(ref)
    secret = scope.get(resolver, parsed)
    if parsed.field is not None:
        return str(secret.reveal(parsed.field))
    try:
        return str(secret.reveal())  # the only field
    except LeaselineError:
        pass
    if "value" in secret:
        return str(secret.reveal("value"))
    return json.dumps({name: secret.reveal(name) for name in secret.fields})


def _conn_from_ref(scope: Scope, resolver: Resolver, ref: str) -> str:
    parsed = resolver.parse(ref)
    if parsed.field is not None:
        return scope.resolve(resolver, parsed)
    secret = scope.get(resolver, parsed)
    for name in _URI_FIELDS:
        if name in secret:
            return str(secret.reveal(name))
    if len(secret.fields) == 1:
        return str(secret.reveal())
    conn: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name in secret.fields:
        (conn if name in _CONN_FIELDS else extra)[name] = secret.reveal(name)
    if extra:
        base = json.loads(conn["extra"]) if conn.get("extra") else {}
        conn["extra"] = json.dumps({**extra, **base})
    return json.dumps(conn)


def _maybe_ref(scope: Scope, resolver: Resolver, raw: Any) -> Any:
    """``raw`` resolved when it is a reference to a known store, else ``raw`` itself."""
    if not isinstance(raw, str) or "://" not in raw:
        return raw
    try:
        parsed = resolver.parse(raw)
    except InvalidReference:
        return raw
    if parsed.store not in resolver.store_names():
        return raw  # e.g. a host given as https://...
    return scope.resolve(resolver, parsed)


def _conn_from_fields(scope: Scope, resolver: Resolver, spec: Mapping[str, Any]) -> str:
    conn = {name: _maybe_ref(scope, resolver, raw) for name, raw in spec.items()}
    if isinstance(conn.get("extra"), Mapping):
        conn["extra"] = json.dumps(conn["extra"])
    return json.dumps(conn)
