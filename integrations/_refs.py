"""Secret references: ``STORE://LOCATOR[?OPTIONS][#FIELD]``.

Parsing is pure and total: every string either parses or raises :class:`InvalidReference`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from urllib.parse import quote, unquote

from ._detectors import PATTERNS, looks_like_credential, shannon_entropy
from ._exceptions import InvalidReference

__all__ = ["SecretRef", "is_reference", "parse"]

_STORE = re.compile(r"[a-z][a-z0-9-]*\Z")
_OPTION_KEY = re.compile(r"[a-z][a-z0-9_-]*\Z")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")
MAX_LENGTH = 4096
_SYNTAX = "STORE://LOCATOR[?OPTIONS][#FIELD], e.g. vault://secret/llm/openai#api_key"


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
    for name, pattern in PATTERNS:
        if pattern.search(ref):
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
            qpos += len(part) + 1
    if not rest:
        raise _fail(ref, offset, "missing locator after '://' (the path or name of the secret)")
    return SecretRef(store, rest, tuple(sorted(options)), fld)


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
    if _ALIAS.match(name) and len(ref) <= 32 and shannon_entropy(ref) < 3.5:
        raise InvalidReference(
            f"'{ref}' is neither a reference nor a configured alias: expected {_SYNTAX}{known}",
            ref=ref,
        )
    # Not quoted: a string without 'store://' may well be a value passed by mistake.
    raise InvalidReference(
        f"the string given is not a reference (no 'STORE://' prefix): expected {_SYNTAX}{known}"
    )
