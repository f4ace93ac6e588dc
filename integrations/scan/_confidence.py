"""How sure a finding is: ``high``, ``medium`` or ``low``; the default output shows medium and up.

- **high**: the value carries its provider's own prefix (``sk-ant-api03-``, ``hf_``, ``ghp_``,
  ``AKIA``, a PEM block), or Kingfisher rates its rule high (a checksum, a strict format).
- **medium**: a prefix-less key next to a name that says what it is (``COHERE_API_KEY=``), a
  password in a URL, a random-looking literal assigned to a credential-named variable.
- **low**: what is found by a keyword but reads as a stand-in: a password made of words
  (``guest``, ``SuperSecret``, ``my-token``), a short or low-entropy value, or a keyword finding
  in a test, fixture, example or documentation file. Shown with ``--confidence low`` / ``--all``.
"""

from __future__ import annotations

import re

from .._detectors import is_placeholder, shannon_entropy

__all__ = ["LEVELS", "at_least", "demote", "rank"]

LEVELS = ("low", "medium", "high")
#: families found by a keyword or a URL's shape rather than by a provider's own format
KEYWORD_FAMILIES = frozenset({"generic", "url", "database", "other"})

_WORDY = re.compile(r"(?i)[a-z]+(?:[-_. ]?[a-z]+)*[-_]?[0-9]{0,4}[!?.]?")
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


def demote(level: str, family: str, value: str, path: str) -> str:
    """``level`` adjusted by what the value and the file say (keyword findings only)."""
    if family not in KEYWORD_FAMILIES:
        return level
    if is_placeholder(value) or _WORDY.fullmatch(value) or len(value) < 8:
        return "low"
    if family == "generic" and shannon_entropy(value) < 3.3:
        return "low"
    if _DOCS_PATH.search(path.replace("\\", "/")):
        return _lower(level)
    return level
