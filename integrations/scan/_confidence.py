"""How sure a finding is: ``high``, ``medium`` or ``low``; the default output shows medium and up.

- **high**: the value carries its provider's own prefix (``sk-ant-api03-``, ``hf_``, ``ghp_``,
  ``AKIA``, a PEM block), or Kingfisher rates its rule high (a checksum, a strict format).
- **medium**: a prefix-less key next to a name that says what it is (``COHERE_API_KEY=``), a
  password in a URL, a random-looking literal assigned to a credential-named variable.
- **low**: any finding in an example (near ``>>>``, a code fence, "for example", "looks like",
  or in a Python docstring) or whose value reads as a stand-in (words, ``xoxb-not-a-real-one``,
  a counting run); a keyword finding on a comment line is one level lower. And what is found
  by a keyword but reads as a stand-in: a password made of words
  (``guest``, ``SuperSecret``, ``my-token``), a template (``keyword.$1``), a counting run
  (``sk-1234567890``), base64 of readable text (a page token), a short or low-entropy value, or
  a keyword finding in a test, fixture, example or documentation file. Shown with ``--confidence low`` / ``--all``.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote

from .._detectors import is_placeholder, sayable, shannon_entropy

__all__ = ["KEYWORD_FAMILIES", "LEVELS", "at_least", "comment_line", "demote", "in_docs", "rank"]

LEVELS = ("low", "medium", "high")
#: families found by a keyword or a URL's shape rather than by a provider's own format
KEYWORD_FAMILIES = frozenset({"generic", "url", "database", "other"})

_WORDY = re.compile(r"(?i)[a-z]+(?:[-_./ ][a-z]+)*[-_]?[0-9]{0,4}[!?.]?")
#: ``$1``, ``$S2`` (a grammar's capture), ``%s``, ``{0}``: a template, not a value
_TEMPLATE = re.compile(
    r"\$[A-Za-z]?\d+(?![A-Za-z0-9])|%s(?=$|[/:@.,;\s-])|%d(?=[/:@.,;\s-])|\{\d*\}"
)
#: ``package.module:Name`` (an entry point, a class path): code, not a value
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.\w+)+(?::\w+(?:\.\w+)*)?|\w+:[A-Z]\w*")
_SEQUENCE = re.compile(r"012345|123456|234567|345678|456789|abcdef|qwerty|asdfgh")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CAMEL = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_VOWEL = re.compile(r"(?i)[aeiouy]")
_VERSION_WORDS = frozenset({"alpha", "beta", "rc", "dev", "post"})
#: an example nearby (``api.example.com`` is a host, not an example)
_EXAMPLE = re.compile(
    r"(?i)>>>|```|\bexamples?\b(?!\.\w)|\be\.g\.|\blooks? (?:a little |something )?like\b|"
    r"\bsuch as:|\bsamples?\b(?!\.\w)"
)
_HASH_COMMENT = re.compile(r"[ \t]*#(?!!)")
_SLASH_COMMENT = re.compile(r"[ \t]*(?://|/?\*)")
_SLASH_SUFFIXES = (
    ".js",
    ".jsx",
    ".ts",
    ".tsx",
    ".go",
    ".java",
    ".kt",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".cs",
    ".swift",
    ".rs",
    ".php",
    ".scala",
    ".dart",
    ".groovy",
)
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
    if is_placeholder(plain) or len(plain) < 8 or _words(plain):
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


def _words(value: str) -> bool:
    """Made of words (``guest``, ``SuperSecret``, ``my-token``), not of random letters: each
    run of letters splits into capitalised pieces of word length with a vowel."""
    if not _WORDY.fullmatch(value):
        return False
    for run in re.findall(r"[A-Za-z]+", value):
        pieces = _CAMEL.findall(run)
        if any(len(p) > 15 or (len(p) >= 3 and not _VOWEL.search(p)) for p in pieces):
            return False
        if sum(len(p) == 1 for p in pieces) > 1 or len(pieces) > 4:
            return False
        if not (run.isupper() and len(pieces) == 1) and not _sayable(pieces):
            return False
    return True


def _sayable(pieces: list[str]) -> bool:
    """CamelCase pieces read as words, as random letters rarely do: one short acronym at most
    (``HTTPS``, ``OAuth``), each other piece a word one can say (:func:`sayable`)."""
    acronyms = [p for p in pieces if len(p) > 1 and p.isupper()]
    if len(acronyms) > 1 or any(len(p) > 5 for p in acronyms):
        return False
    return all(sayable(p) for p in pieces if p.isalpha() and not p.isupper())


def _identifier(value: str) -> bool:
    """``V1SecretVolumeSource``, ``OAuthTokenProjection``: a type's name, made of words."""
    if not value.isalnum():
        return False
    pieces = _CAMEL.findall(value)
    if "".join(pieces) != value:
        return False
    words = [p for p in pieces if p.isalpha()]
    digits = sum(len(p) for p in pieces if p.isdigit())
    # past the first piece a name's words are capitalised (``getSecretValue``); a lowercase
    # one only as a version after a number (``V1beta1CronJob``), not as random letters do
    if any(
        p[0].islower() and not (pieces[i - 1].isdigit() and p in _VERSION_WORDS)
        for i, p in enumerate(pieces)
        if i
    ):
        return False
    return (
        len(words) >= 2
        and digits <= 2
        and all(len(w) >= 3 and _VOWEL.search(w) for w in words if len(w) > 1)
        and sum(len(w) == 1 for w in words) <= 1
        and _sayable(words)
    )


def in_docs(text: str, start: int, path: str) -> bool:
    """Is ``start`` in an example: near ``>>>``, a fence, "for example", "looks like"... (the
    line and the five before it), or inside a Python docstring?"""
    lo = start
    for _ in range(6):
        lo = text.rfind("\n", 0, max(lo - 1, 0))
        if lo < 0:
            lo = 0
            break
    end = text.find("\n", start)
    if _EXAMPLE.search(text, lo, end if end >= 0 else len(text)):
        return True
    return path.endswith(".py") and _in_docstring(text, start)


def _in_docstring(text: str, start: int) -> bool:
    for quote in ('"""', "'''"):
        if text.count(quote, 0, start) % 2 == 0:
            continue
        opener = text.rfind(quote, 0, start)
        line = text.rfind("\n", 0, opener) + 1
        if text[line:opener].strip(" \trRuU"):
            return False  # NAME = """...""": a value, not a docstring
        before = text[:line].rstrip()
        return not before or before.endswith(":") or before.lstrip().startswith("#!")
    return False


def comment_line(text: str, start: int, path: str = "") -> bool:
    """Is ``start`` on a comment line (``#``; ``//`` and ``*`` in C-like sources)?"""
    line = text.rfind("\n", 0, start) + 1
    if _HASH_COMMENT.match(text, line):
        return True
    return path.lower().endswith(_SLASH_SUFFIXES) and bool(_SLASH_COMMENT.match(text, line))


def demote(
    level: str, family: str, value: str, path: str, *, docs: bool = False, comment: bool = False
) -> str:
    """``level`` adjusted by what the value and the file say; ``path`` is the file's path under
    the scanned root; ``docs``: the value sits in an example (:func:`in_docs`), ``comment``: on
    a comment line."""
    if docs:
        return "low"
    if family not in KEYWORD_FAMILIES:
        # a provider's format: a commented-out key is still a key
        return "low" if _stand_in(value) else level
    if _stand_in(value):
        return "low"
    if family not in ("database", "url") and _identifier(value):
        return "low"  # a type's name; a URL's password slot holds no type names
    if family == "generic" and shannon_entropy(value) < 3.3:
        return "low"
    if comment:
        level = _lower(level)
    if family != "other" and _DOCS_PATH.search(path.replace("\\", "/")):
        return _lower(level)
    return level
