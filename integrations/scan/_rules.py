"""The scanner's rules: the credential formats of :data:`leaseline._detectors.DETECTORS` (the one
table, shared with ``parse`` and the adapters' checks), plus the context rules (:data:`GENERIC`):
a literal assigned to a credential-named variable.

Each rule is a regular expression run over a whole text segment (not line by line) with one group,
``s``, capturing the secret, and a ``check`` that rejects look-alikes (placeholders, hashes,
words).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .._detectors import DETECTORS, REFERENCE, Detector, dense

__all__ = ["GENERIC", "RULES", "Rule", "redact"]

#: a rule is a detector; the scanner adds only context rules of its own
Rule = Detector

ENV_LIKE = frozenset({"env", "docker", "yaml", "ini", "shell"})

RULES: tuple[Rule, ...] = DETECTORS


def _r(
    id_: str,
    name: str,
    family: str,
    pattern: str,
    check: Callable[[str], bool],
    kinds: frozenset[str] | None = None,
) -> Rule:
    return Rule(id_, name, family, re.compile(pattern), check, kinds)


#: the catch-all: a literal assigned to a name that ends in password/secret/token/key
_GENERIC_NAME = (
    r"(?P<name>(?<![\w.\-])(?:[A-Za-z_][\w.\-]{0,60}?)?(?i:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|"
    r"access[_-]?key|secret[_-]?key|private[_-]?key|auth[_-]?key|client[_-]?secret|credentials?))"
)
GENERIC: tuple[Rule, ...] = (
    _r(
        "generic-secret",
        "secret assigned to a credential-named variable",
        "generic",
        _GENERIC_NAME + r"['\"]?\s*(?::|=|:=)\s*[rbuf]?(?P<q>['\"])(?P<s>[^'\"\s]{8,200})(?P=q)",
        dense(3.0),
    ),
    _r(
        "generic-secret-unquoted",
        "secret assigned to a credential-named variable",
        "generic",
        r"(?m)^[ \t]*(?:-[ \t]+|export[ \t]+|(?:ENV|ARG)[ \t]+)?"
        + _GENERIC_NAME
        + r"[ \t]*(?:=|:[ \t]|[ \t])[ \t]*(?P<s>[^'\"\s#]{8,200})[ \t]*$",
        dense(3.0),
        kinds=ENV_LIKE,
    ),
)

_HASHY_NAME = re.compile(r"(?i)(hash|digest|checksum|sha\d*|md5|fingerprint|etag|salt|_id|_url)$")


def generic_ok(name: str, value: str) -> bool:
    """Extra checks for the catch-all: no hashes by name, no references, no code."""
    if _HASHY_NAME.search(name) or REFERENCE.match(value):
        return False
    if re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", value):
        return False  # a bare digest: too many checksums look exactly like this
    return not re.search(r"[()\[\]{}]|^(?:os|env|self|settings|config)\.", value)


def redact(value: str) -> str:
    """A form that identifies a finding without showing it: ``sk-p…(51 chars)``."""
    head = value[:4] if len(value) >= 16 else ""
    return f"{head}…({len(value)} chars)"
