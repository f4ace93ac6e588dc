"""Configuration: one TOML file plus its environment form.

Where the file comes from: ``$LEASELINE_CONFIG``, else ``./leaseline.toml``, else
``[tool.leaseline]`` in ``./pyproject.toml``; none is fine (zero config). Every key also has an
environment form, ``LEASELINE_<SECTION>__<KEY>...`` with ``__`` between levels, which wins over
the file: ``LEASELINE_STORES__VAULT__ADDR=https://vault:8200``. In store names ``_`` stands for
``-`` (``LEASELINE_STORES__PROD_AWS__REGION`` configures ``[stores.prod-aws]``).

Trust, as ssh treats its config: a file that is writable by group or others, or owned by
another user (root excepted), is refused, naming the file and the ``chmod``/``chown`` that fixes
it. A config found *implicitly* in the working directory (``./leaseline.toml``,
``[tool.leaseline]`` in ``./pyproject.toml``) comes with whatever repository was cloned there, so
it may not decide where credentials go: it may not set a store's address, auth, token, TLS, proxy,
endpoint, region, profile, roots or any other key outside :data:`IMPLICIT_STORE_KEYS`. Opting in is
explicit: name the file (``LEASELINE_CONFIG=/path/leaseline.toml`` or ``--config``), or set the
key in the environment (``LEASELINE_STORES__VAULT__ADDR``).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ._exceptions import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["IMPLICIT_STORE_KEYS", "Config", "ResolverSettings", "load_config", "parse_duration"]

#: store keys a config found in the working directory may set: none of them decides where a
#: request goes or which credential it carries
IMPLICIT_STORE_KEYS = frozenset(
    {
        "type",
        "refresh_after",
        "timeout",
        "connect_timeout",
        "read_timeout",
        "max_attempts",
        "child_token",
    }
)

SECTIONS = frozenset(
    {"stores", "aliases", "resolver", "rotation", "audit", "masking", "mlflow", "ledger", "scan"}
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object, where: str = "duration") -> float:
    """Seconds in ``"90d"``, ``"12h"``, ``"30s"``, ``"1h30m"``, or a plain number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f'{where}: expected a duration such as "30s", "5m", "90d", got {value!r}')
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{where}: a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        total, pos = 0.0, 0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return total
    raise ConfigError(f'{where}: expected a duration such as "30s", "5m", "90d", got {value!r}')


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """``[resolver]``: cache and retry behaviour."""

    cache: bool = True
    #: static (KV) secrets are re-read after this long; dynamic ones follow their lease
    refresh_after: float = 300.0
    #: an entry is never served closer than this to its lease's end (capped at 10% of the TTL)
    safety_margin: float = 30.0
    #: how long a "not found" is remembered
    negative_ttl: float = 5.0
    #: total time one store request may take, retries included
    deadline: float = 30.0
    #: expected life of the task, for per-task child tokens
    task_ttl: float = 6 * 3600.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ResolverSettings:
        known = {"cache", "refresh_after", "safety_margin", "negative_ttl", "deadline", "task_ttl"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"[resolver]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = {}
        for key, value in table.items():
            if key == "cache":
                kwargs[key] = as_bool(value, "resolver.cache")
            else:
                kwargs[key] = parse_duration(value, f"resolver.{key}")
        return cls(**kwargs)


def as_bool(value: object, where: str) -> bool:
    """A boolean setting: ``true``/``false`` (TOML), or ``true|false|yes|no|on|off|1|0`` as text
    (the environment form). Anything else is a :class:`ConfigError` naming the setting (the value
    is not quoted: a setting may be where someone pasted a secret)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
    raise ConfigError(
        f"{where}: expected true or false (or yes/no, on/off, 1/0), "
        f"got {'a ' + type(value).__name__ if not isinstance(value, str) else 'another word'}"
    )


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class Config:
    """The loaded configuration. Sections other than ``resolver`` stay as plain tables, read by
    the part that owns them (stores by their backends, ``rotation`` by the rotation engine...)."""

    stores: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    resolver: ResolverSettings = field(default_factory=ResolverSettings)
    sections: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.sections.get(name, {})
        return value if isinstance(value, Mapping) else {}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str | None = None) -> Config:
        where = source or "config"
        unknown = sorted(set(data) - SECTIONS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown section(s) {', '.join(unknown)}; "
                f"known sections: {', '.join(sorted(SECTIONS))}"
            )
        stores = data.get("stores", {})
        if not isinstance(stores, Mapping):
            raise ConfigError(f"{where}: [stores] must be a table of stores")
        for name, table in stores.items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"{where}: stores.{name} must be a table, e.g. [stores.{name}]")
            if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
                raise ConfigError(
                    f"{where}: store name '{name}' must be lowercase letters, digits and '-'"
                )
        aliases = data.get("aliases", {})
        if not isinstance(aliases, Mapping) or not all(
            isinstance(v, str) for v in aliases.values()
        ):
            raise ConfigError(f"{where}: [aliases] must map names to reference strings")
        resolver_table = data.get("resolver", {})
        if not isinstance(resolver_table, Mapping):
            raise ConfigError(f"{where}: [resolver] must be a table")
        try:
            settings = ResolverSettings.from_table(resolver_table)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        sections = {k: v for k, v in data.items() if k not in {"stores", "aliases", "resolver"}}
        return cls(
            stores=MappingProxyType({k: dict(v) for k, v in stores.items()}),
            aliases=MappingProxyType(dict(aliases)),
            resolver=settings,
            sections=MappingProxyType(sections),
            source=source,
        )


def _check_trust(path: Path, info: os.stat_result) -> None:
    """Refuse a file others could have written (checked on the opened file, not its name)."""
    if os.name != "posix":  # pragma: no cover
        return
    me = os.geteuid()
    if info.st_uid not in {me, 0}:
        raise ConfigError(
            f"{path}: refusing a config file owned by {_user(info.st_uid)}, not by you "
            f"({_user(me)}) or root: whoever owns it decides where your credentials are sent. "
            f"Fix: chown {me} {path} (or copy it to a file you own)"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(
            f"{path}: refusing a config file that group or others can write (mode {mode:04o}): "
            f"anyone who can write it decides where your credentials are sent. "
            f"Fix: chmod go-w {path}"
        )


def _user(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            _check_trust(path, os.fstat(fh.fileno()))
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (from LEASELINE_CONFIG or the command line)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None


def find_config_file(environ: Mapping[str, str] | None = None) -> tuple[Path | None, bool]:
    """The config file to use and whether it is a ``pyproject.toml``."""
    env = os.environ if environ is None else environ
    explicit = env.get("LEASELINE_CONFIG")
    if explicit:
        return Path(explicit), Path(explicit).name == "pyproject.toml"
    local = Path("leaseline.toml")
    if local.is_file():
        return local, False
    pyproject = Path("pyproject.toml")
    if pyproject.is_file():
        return pyproject, True
    return None, False


def _env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in "[{" or text in {"true", "false"}:
        try:
            return json.loads(text)
        except ValueError:
            return raw
    return raw


def environment_overlay(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``LEASELINE_SECTION__KEY=...`` variables as a nested table."""
    overlay: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("LEASELINE_") or "__" not in name:
            continue
        parts = [p.lower() for p in name[len("LEASELINE_") :].split("__")]
        if not all(parts):
            raise ConfigError(f"environment variable {name}: empty level between '__'")
        if parts[0] == "stores" and len(parts) > 1:
            parts[1] = parts[1].replace("_", "-")
        node = overlay
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"environment variable {name}: '{part}' is both a value and a table"
                )
            node = child
        node[parts[-1]] = _env_value(raw)
    return overlay


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the config file (explicit ``path``, or the usual places) with the environment on top.

    Raises :class:`ConfigError` naming the file, the key path and what was expected.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source: str | None = None
    implicit = False
    if path is not None and Path(path).name == "pyproject.toml":
        data, source = _read_pyproject(Path(path)), f"{path} [tool.leaseline]"
    elif path is not None:
        data, source = _read_toml(Path(path)), str(path)
    else:
        found, is_pyproject = find_config_file(env)
        if found is not None:
            implicit = not env.get("LEASELINE_CONFIG")
            if is_pyproject:
                data = _read_pyproject(found)
                source = f"{found} [tool.leaseline]" if data else None
            else:
                data, source = _read_toml(found), str(found)
    overlay = environment_overlay(env)
    if implicit and source:
        _refuse_routing(source, data, overlay)
    if overlay:
        data = _merge(data, overlay)
        source = f"{source} + environment" if source else "environment"
    return Config.from_mapping(data, source)


def _read_pyproject(path: Path) -> dict[str, Any]:
    """``[tool.leaseline]`` of a ``pyproject.toml``; its trust only matters when it has one."""
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raw = {}
    except OSError:
        raw = {"tool": {"leaseline": True}}  # let _read_toml say what is wrong
    tool = raw.get("tool", {})
    if not (isinstance(tool, Mapping) and tool.get("leaseline")):
        return {}
    table = _read_toml(path).get("tool", {})  # again, through the trust check on the open file
    section = table.get("leaseline", {}) if isinstance(table, Mapping) else {}
    return dict(section) if isinstance(section, Mapping) else {}


def _refuse_routing(source: str, data: Mapping[str, Any], overlay: Mapping[str, Any]) -> None:
    """An implicit config may not decide where credentials go (unless the environment does)."""
    stores = data.get("stores")
    if not isinstance(stores, Mapping):
        return
    env_stores = overlay.get("stores")
    env_stores = env_stores if isinstance(env_stores, Mapping) else {}
    bad: list[tuple[str, str]] = []
    for name, table in stores.items():
        if not isinstance(table, Mapping):
            continue  # from_mapping reports it
        from_env = env_stores.get(name)
        from_env = from_env if isinstance(from_env, Mapping) else {}
        for key in table:
            if key not in IMPLICIT_STORE_KEYS and key not in from_env:
                bad.append((str(name), str(key)))
    if not bad:
        return
    keys = ", ".join(f"stores.{n}.{k}" for n, k in bad)
    file = source.removesuffix(" [tool.leaseline]")
    absolute = Path(file).resolve()
    name, key = bad[0]
    env_name = f"LEASELINE_STORES__{name.upper().replace('-', '_')}__{key.upper()}"
    raise ConfigError(
        f"{source}: {keys}: a config found in the working directory may not decide where "
        "credentials are sent (a cloned repository could point your VAULT_TOKEN, cloud or "
        "store credentials at its own server), so leaseline does not take this from it. "
        f"If you trust this file, name it: LEASELINE_CONFIG={absolute} (or --config "
        f"{absolute}); or set the value in the environment ({env_name}=...). Keys such a "
        f"file may set in a store: {', '.join(sorted(IMPLICIT_STORE_KEYS))}"
    )
