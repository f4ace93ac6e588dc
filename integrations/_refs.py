"""Secret references: ``STORE://LOCATOR[?OPTIONS][#FIELD]``.

Parsing is pure and total: every string either parses or raises :class:`InvalidReference`.
A locator names one path: ``.``, ``..`` and empty segments and percent-encoded separators
(``%2F``, ``%5C``, ``%2E``, ``%25``) are refused, so the reference the audit trail and the ledger
record is the path the store reads. Option values are checked before any request: for the
built-in store types by the table below (``?version=`` of a KV v2 secret is a positive integer,
``aws-sts://`` takes a role ARN and a ``?duration=``...), for any store ``?duration=``.

Why ~400 lines: the grammar, the per-store option checks and the environment rule are all
"what a reference is"; each part is short.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from urllib.parse import quote, unquote

from ._config import parse_duration
from ._detectors import credential_shape, looks_like_credential, shannon_entropy
from ._exceptions import ConfigError, InvalidReference

__all__ = ["SecretRef", "environment_references", "is_reference", "parse"]

_STORE = re.compile(r"[a-z][a-z0-9-]*\Z")
_OPTION_KEY = re.compile(r"[a-z][a-z0-9_-]*\Z")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")
MAX_LENGTH = 4096
_SYNTAX = "STORE://LOCATOR[?OPTIONS][#FIELD], e.g. vault://secret/llm/openai#api_key"
#: percent-encoded '/', '\\', '.' and '%' (a double encoding): a store would decode them into
#: separators or dot segments that climb out of the path the reference names
_ENCODED = re.compile(r"%(2f|5c|2e|25)", re.IGNORECASE)
_ROLE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]{1,512}\Z")


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str] | None
    expected: str
    duration: tuple[float, float] | None = None


_POSITIVE = _Rule(re.compile(r"[1-9][0-9]{0,17}\Z"), "a positive integer, e.g. ?version=3")
#: option -> rule, per built-in store type; options of other built-in types are refused
_OPTIONS: Mapping[str, Mapping[str, _Rule]] = {
    "vault": {"version": _POSITIVE},
    "aws-sm": {
        "version-stage": _Rule(re.compile(r"[\w.-]{1,256}\Z"), "a staging label, e.g. AWSPREVIOUS"),
        "version-id": _Rule(re.compile(r"[A-Za-z0-9-]{32,64}\Z"), "a version id (a UUID)"),
    },
    "aws-ssm": {
        "version": _POSITIVE,
        "label": _Rule(re.compile(r"[\w.-]{1,100}\Z"), "a parameter label"),
    },
    "aws-sts": {
        "duration": _Rule(None, "a duration from 15m to 12h, e.g. 900 or 1h", (900, 43200)),
        "session-name": _Rule(re.compile(r"[\w+=,.@-]{2,64}\Z"), "2-64 of [A-Za-z0-9_+=,.@-]"),
        "external-id": _Rule(
            re.compile(r"[\w+=,.@:/-]{2,1224}\Z"), "2-1224 of [A-Za-z0-9_+=,.@:/-]"
        ),
    },
    "azure-kv": {"version": _Rule(re.compile(r"[A-Za-z0-9]{1,64}\Z"), "a Key Vault version id")},
    "env": {},
    "file": {},
    "memory": {},
}
#: rules that hold whatever the store's type (named stores: ``prod-aws://...?duration=``)
_ANY_STORE: Mapping[str, _Rule] = {
    "duration": _Rule(None, "a duration such as 900, 15m or 1h", (1, 10 * 365 * 86400)),
}


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A parsed reference. ``str(ref)`` gives its canonical form; ``ref.key`` drops the field.

    >>> ref = parse("vault://database/creds/reader#password")
    >>> ref.store, ref.locator, ref.field, ref.key
    ('vault', 'database/creds/reader', 'password', 'vault://database/creds/reader')
    """

    store: str
    locator: str
    options: tuple[tuple[str, str], ...] = ()
    field: str | None = None
    _key: str = dc_field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in self.options)
        key = f"{self.store}://{self.locator}" + (f"?{query}" if query else "")
        object.__setattr__(self, "_key", key)

    @property
    def key(self) -> str:
        """The reference without its field: the cache key, shared by every field of one read."""
        return self._key

    def option(self, name: str, default: str | None = None) -> str | None:
        """The value of option ``name``, or ``default``."""
        for key, value in self.options:
            if key == name:
                return value
        return default

    def without_field(self) -> SecretRef:
        return SecretRef(self.store, self.locator, self.options) if self.field else self

    def with_field(self, name: str | None) -> SecretRef:
        return SecretRef(self.store, self.locator, self.options, name)

    def __str__(self) -> str:
        return self._key + (f"#{self.field}" if self.field else "")


def _fail(ref: str, pos: int, why: str) -> InvalidReference:
    pointer = " " * (len("invalid reference '") + pos) + "^"
    return InvalidReference(
        f"invalid reference '{ref}'\n{pointer} {why}\nexpected {_SYNTAX}", ref=ref
    )


def is_reference(text: str) -> bool:
    """True when ``text`` has the shape of a reference (``store://...``); it may still be invalid."""
    head, sep, _ = text.partition("://")
    return bool(sep) and bool(_STORE.match(head))


def _wordlike(name: str) -> bool:
    """Made of words, as alias names are (``trainer_db``, ``openai-key-2``): no part of 16+
    characters, none of 8+ with a digit in it (``canary-dfcfa689566da4b65c6ac6bb`` is a value)."""
    parts = re.split(r"[-_.]", name)
    return all(len(p) < 16 and not (len(p) >= 8 and any(c.isdigit() for c in p)) for p in parts)


def parse(ref: str, *, aliases: Mapping[str, str] | None = None) -> SecretRef:
    """Parse ``ref`` into a :class:`SecretRef`.

    ``aliases`` maps short names to full references (the config's ``[aliases]``); an alias may
    carry its own ``#field``, or take one: ``openai#org`` with ``openai = "vault://secret/llm/openai"``.

    Raises :class:`InvalidReference` quoting the reference, pointing at the bad part and saying what
    was expected. A string that looks like a credential is refused without being quoted.
    """
    if not isinstance(ref, str):
        raise InvalidReference(f"a reference must be a string, not {type(ref).__name__}")
    if len(ref) > MAX_LENGTH:
        raise InvalidReference(
            f"reference is {len(ref)} characters long; the limit is {MAX_LENGTH}"
        )
    if "://" not in ref:
        return _parse_alias(ref, aliases)
    name = credential_shape(ref)
    if name is not None:
        raise InvalidReference(
            f"the string given as a reference contains what looks like a credential ({name}); "
            "store the value in a secret store and pass its reference instead, "
            f"as {_SYNTAX}"
        )
    bad = _BAD_CHAR.search(ref)
    if bad:
        raise _fail(ref, bad.start(), "whitespace and control characters are not allowed")

    store, _, rest = ref.partition("://")
    if not store:
        raise _fail(ref, 0, "missing store name before '://'")
    if not _STORE.match(store):
        lowered = store.lower()
        hint = f" (did you mean '{lowered}'?)" if _STORE.match(lowered) else ""
        raise _fail(
            ref,
            0,
            f"store name must be lowercase letters, digits and '-', starting with a letter{hint}",
        )
    offset = len(store) + 3

    fld: str | None = None
    if "#" in rest:
        rest, _, fld = rest.partition("#")
        fpos = offset + len(rest) + 1
        if not fld:
            raise _fail(ref, fpos, "empty field name after '#'")
        if "#" in fld:
            raise _fail(ref, fpos + fld.index("#"), "only one '#FIELD' is allowed")
        if "?" in fld:
            raise _fail(ref, fpos + fld.index("?"), "options ('?...') go before '#FIELD'")

    options: list[tuple[str, str]] = []
    positions: dict[str, int] = {}
    if "?" in rest:
        rest, _, query = rest.partition("?")
        qpos = offset + len(rest) + 1
        if not query:
            raise _fail(ref, qpos, "empty options after '?'")
        seen: set[str] = set()
        for part in query.split("&"):
            key, eq, value = part.partition("=")
            if not _OPTION_KEY.match(key):
                raise _fail(
                    ref, qpos, f"option name {key!r} must be lowercase letters, digits, '_', '-'"
                )
            if not eq or not value:
                raise _fail(ref, qpos, f"option '{key}' needs a value: '{key}=VALUE'")
            if key in seen:
                raise _fail(ref, qpos, f"option '{key}' is given twice")
            seen.add(key)
            options.append((key, unquote(value)))
            positions[key] = qpos + len(key) + 1
            qpos += len(part) + 1
    if not rest:
        raise _fail(ref, offset, "missing locator after '://' (the path or name of the secret)")
    _check_locator(ref, store, rest, offset)
    _check_options(ref, store, options, positions)
    return SecretRef(store, rest, tuple(sorted(options)), fld)


def _check_locator(ref: str, store: str, locator: str, offset: int) -> None:
    encoded = _ENCODED.search(locator)
    if encoded:
        raise _fail(
            ref,
            offset + encoded.start(),
            f"percent-encoded '{unquote(encoded.group())}' ({encoded.group()}) is not allowed in "
            "the path: the store would decode it; write the path itself",
        )
    # one leading '/' is part of absolute locators (file:///run/..., aws-ssm:///ml/...)
    pos = offset + 1 if locator.startswith("/") else offset
    body = locator[1:] if locator.startswith("/") else locator
    for segment in body.split("/"):
        if segment in {"", ".", ".."}:
            what = (
                "empty path segment ('//' or a trailing '/')"
                if not segment
                else (f"'{segment}' path segment")
            )
            raise _fail(
                ref, pos, f"{what}: a reference names one path; write it without '.', '..' or '//'"
            )
        pos += len(segment) + 1
    if store == "aws-sts" and not _ROLE_ARN.match(locator):
        raise _fail(
            ref,
            offset,
            "aws-sts takes a role ARN: arn:aws:iam::<12-digit account>:role/<name>",
        )


def _check_options(
    ref: str, store: str, options: list[tuple[str, str]], positions: Mapping[str, int]
) -> None:
    rules = _OPTIONS.get(store)
    for key, value in options:
        rule = (rules or {}).get(key) or _ANY_STORE.get(key)
        if rule is None:
            if rules is None:
                continue  # a named store: its backend knows its options
            known = ", ".join(f"?{k}=" for k in sorted(rules)) or "none"
            raise _fail(
                ref,
                positions[key] - len(key) - 1,
                f"unknown option '{key}' for store type '{store}'; known options: {known}",
            )
        if _valid(rule, value):
            continue
        raise _fail(ref, positions[key], f"option '{key}' must be {rule.expected}")


def _valid(rule: _Rule, value: str) -> bool:
    if rule.duration is not None:
        try:
            seconds = parse_duration(value, "duration")
        except ConfigError:
            return False
        low, high = rule.duration
        return low <= seconds <= high
    return rule.pattern is not None and bool(rule.pattern.match(value))


def _parse_alias(ref: str, aliases: Mapping[str, str] | None) -> SecretRef:
    name, _, fld = ref.partition("#")
    if aliases and name in aliases and _ALIAS.match(name):
        target = aliases[name]
        if "://" not in target:
            raise InvalidReference(f"alias '{name}' must map to a full reference ({_SYNTAX})")
        parsed = parse(target)
        if fld:
            if parsed.field and parsed.field != fld:
                raise InvalidReference(f"alias '{name}' already selects field '{parsed.field}'")
            parsed = parsed.with_field(fld)
        return parsed
    kind = looks_like_credential(ref)
    if kind:
        raise InvalidReference(
            f"a value that looks like a credential ({kind}) was given where a reference is "
            "expected; store it in a secret store and pass its reference instead, as " + _SYNTAX
        )
    known = f"; known aliases: {', '.join(sorted(aliases))}" if aliases else ""
    # Quote only short, word-like names (a mistyped alias); anything denser may be a value.
    if _ALIAS.match(name) and len(ref) <= 32 and shannon_entropy(ref) < 3.5 and _wordlike(ref):
        raise InvalidReference(
            f"'{ref}' is neither a reference nor a configured alias: expected {_SYNTAX}{known}",
            ref=ref,
        )
    # Not quoted: a string without 'store://' may well be a value passed by mistake.
    raise InvalidReference(
        f"the string given is not a reference (no 'STORE://' prefix): expected {_SYNTAX}{known}"
    )


# -- which environment variables are references ------------------------------------------------

#: stores never resolved implicitly from the environment unless configured: `file://` and
#: `env://` are also ordinary URL shapes a program may expect to receive as they are.
NOT_IMPLICIT = frozenset({"file", "env"})
#: URL schemes that are never store types for implicit resolution (and need no entry-point scan)
URL_SCHEMES = frozenset(
    [
        "http",
        "https",
        "ws",
        "wss",
        "ftp",
        "ftps",
        "sftp",
        "ssh",
        "git",
        "s3",
        "s3a",
        "gs",
        "gcs",
        "az",
        "abfs",
        "abfss",
        "wasbs",
        "hdfs",
        "dbfs",
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "mssql",
        "oracle",
        "sqlite",
        "mongodb",
        "mongodb+srv",
        "redis",
        "rediss",
        "amqp",
        "amqps",
        "kafka",
        "nats",
        "grpc",
        "grpcs",
        "tcp",
        "udp",
        "unix",
        "jdbc",
        "ldap",
        "ldaps",
        "smtp",
        "imap",
        "runs",
        "models",
        "mlflow-artifacts",
    ]
)
#: leaseline's own configuration (``LEASELINE_AUDIT__HMAC_KEY=vault://...``): leaseline reads
#: these itself; resolving them would hand its own credentials to the program it runs
CONFIG_PREFIX = "LEASELINE_"


def environment_references(
    environ: Mapping[str, str],
    *,
    configured: Collection[str],
    store_names: Callable[[], Iterable[str]],
) -> dict[str, str]:
    """The variables of ``environ`` whose value is a reference to a store: the one rule for
    ``leaseline run`` and the KFP task wrapper.

    A store counts when it is ``configured`` or a built-in type other than ``file``/``env``
    (those are also ordinary URLs unless configured), or, checked only when needed (it scans
    entry points), one of ``store_names()``. URL schemes (``https://``, ``s3://``...) and
    ``LEASELINE_*`` variables never count.

    >>> environment_references(
    ...     {"K": "vault://secret/x", "VAULT_ADDR": "http://v:8200"}, configured=(), store_names=list
    ... )
    {'K': 'vault://secret/x'}
    """
    from ._registry import BUILTIN

    fixed = set(configured) | (set(BUILTIN) - NOT_IMPLICIT)
    found: dict[str, str] = {}
    others: set[str] | None = None
    for name, value in environ.items():
        if name.startswith(CONFIG_PREFIX) or "://" not in value or not is_reference(value):
            continue
        store = value.split("://", 1)[0]
        if store in URL_SCHEMES or (store in NOT_IMPLICIT and store not in fixed):
            continue
        if store not in fixed:
            if others is None:  # entry-point store types: only looked up when needed (slow)
                others = set(store_names())
            if store not in others:
                continue
        found[name] = value
    return found
