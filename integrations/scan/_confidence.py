"""How sure a finding is: ``high``, ``medium`` or ``low``; the default output shows medium and up.

- **high**: the value carries its provider's own prefix (``sk-ant-api03-``, ``hf_``, ``ghp_``,
  ``AKIA``, a PEM block), or Kingfisher rates its rule high (a checksum, a strict format).
- **medium**: a prefix-less key next to a name that says what it is (``COHERE_API_KEY=``), a
  password in a URL, a random-looking literal assigned to a credential-named variable.
- **low**: what is found by a keyword but reads as a stand-in: a password made of words
  (``guest``, ``SuperSecret``, ``my-token``), a template (``keyword.$1``), a counting run
  (``sk-1234567890``), base64 of readable text (a page token), a short or low-entropy value, or
  a keyword finding in a test, fixture, example or documentation file. Shown with ``--confidence low`` / ``--all``.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote

from .._detectors import is_placeholder, shannon_entropy

__all__ = ["KEYWORD_FAMILIES", "LEVELS", "at_least", "demote", "rank"]

LEVELS = ("low", "medium", "high")
#: families found by a keyword or a URL's shape rather than by a provider's own format
KEYWORD_FAMILIES = frozenset({"generic", "url", "database", "other"})

_WORDY = re.compile(r"(?i)[a-z]+(?:[-_./ ][a-z]+)*[-_]?[0-9]{0,4}[!?.]?")
#: ``$1``, ``$S2`` (a grammar's capture), ``%s``, ``{0}``: a template, not a value
_TEMPLATE = re.compile(r"\$\w|%[sd]|\{\d*\}")
#: ``package.module:Name`` (an entry point, a class path): code, not a value
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.\w+)+(?::\w+(?:\.\w+)*)?|\w+:[A-Z]\w*")
_SEQUENCE = re.compile(r"0123|1234|2345|3456|4567|5678|6789|abcd|qwer|asdf")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_DOCS_PATH = re.compile(
    r"(?i)(?:^|[\\/])(?:tests?|testing|fixtures?|examples?|samples?|docs?|"
    r"test_[^\\/]*|example_[^\\/]*|[^\\/]*_test\.[a-z]+|conftest\.py)(?:[\\/]|$)|\.(?:md|rst|txt|adoc)$"
)


def rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else 1


def at_least(level: str, threshold: str) -> bool:
    return rank(level) >= rank(threshold)


def _lower(level: str) -> str:
    return LEVELS[max(rank(level) - 1, 0)]


def _stand_in(value: str) -> bool:
    """A value that reads as an example: words, a template, a counting run, encoded text."""
    plain = unquote(value).strip(",;:()[]{}<>'\"")
    if is_placeholder(plain) or len(plain) < 8 or _WORDY.fullmatch(plain):
        return True
    if _DOTTED.fullmatch(plain) and not any(c.isdigit() for c in plain):
        return True
    if _TEMPLATE.search(value) or _SEQUENCE.search(plain.lower()):
        return True
    return _encoded_text(value)


def _encoded_text(value: str) -> bool:
    """Base64 of short readable text (a page token: ``{"index": 11}``), not of key bytes."""
    if len(value) % 4 or not _BASE64.fullmatch(value):
        return False
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return data.isascii() and data[:1] in (b"{", b"[", b'"') and data.decode().isprintable()


def demote(level: str, family: str, value: str, path: str) -> str:
    """``level`` adjusted by what the value and the file say (keyword findings only); ``path``
    is the file's path under the scanned root."""
    if family not in KEYWORD_FAMILIES:
        return level
    if _stand_in(value):
        return "low"
    if family == "generic" and shannon_entropy(value) < 3.3:
        return "low"
    if family != "other" and _DOCS_PATH.search(path.replace("\\", "/")):
        return _lower(level)
    return level
