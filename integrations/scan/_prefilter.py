"""Which rules can match where: a native Aho-Corasick pass before any Python regular expression.

Running every rule's expression over every file is what made the scanner slow (a regex per rule,
~2 MB/s over library code). Instead each rule's *anchors* are read from its own expression (the
literals one of which every match must contain: ``sk-ant-`` for Anthropic, the scheme names for
database URLs, the credential words for the generic rule) and one automaton over all of them
(``ahocorasick-rs``, a core dependency) finds their occurrences in a segment at ~500 MB/s. A rule
then runs only in windows around its anchors' occurrences (bounded by the expression's own
widths before and after the anchor), so its results are those of a run over the whole segment for
every match that contains an anchor, which is every match. A rule without a usable anchor (none,
or shorter than three characters) runs over the whole segment as before.

The generic (context) rules' anchors are words common in code (``token``, ``client``...): an
occurrence counts only when an assignment follows the name it ends (``[:=]``; in ``.env``-like
files a blank too), and the rule is tried once, where that name starts (a generic rule is a
credential-named variable, then an assignment, then a value). With the native engine, a rule
with no anchor of three characters is left to Kingfisher's rules.
"""

from __future__ import annotations

import importlib
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ahocorasick_rs

from ._rules import ENV_LIKE, Rule

__all__ = ["Prefilter", "anchors"]

try:  # Python 3.11+
    _P: Any = importlib.import_module("re._parser")
    _C: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - Python 3.10
    _P = importlib.import_module("sre_parse")
    _C = importlib.import_module("sre_constants")

MIN_ANCHOR = 3
#: a small character class ([sbr], [pousr]) widens a literal into one literal per member
_MAX_FANOUT = 32
#: windows around an occurrence: the expression's own widths before and after it, capped (a
#: PEM block is the longest match; the generic rules' blanks are unbounded, their tail is a line)
_MAX_BEFORE = 1024
_MAX_AFTER = 16384
#: an unbounded repeat (``{20,}``): a token, never longer than this
_UNBOUNDED = 1 << 30
_UNBOUNDED_BEFORE = 256
_UNBOUNDED_AFTER = 1024
_GENERIC_AFTER = 320
_LOOKAHEAD = 64
#: the generic rules' names: at most this many characters before the anchor
_NAME_MAX = 96
#: the generic rules: the name that ends in the anchor, then an assignment
_ASSIGNED = re.compile(r"[\w.\-]*['\"]?\s*[:=]")
_ASSIGNED_ENV = re.compile(r"[\w.\-]*['\"]?[ \t]*(?:[:=]|[ \t]+\S)")

Literals = frozenset[str]
#: anchors and the most characters a match can have before the anchor
Anchored = tuple[Literals, int]


def _literal_char(op: Any, av: Any) -> list[str] | None:
    """The characters one element matches, when it is a literal or a small set of literals."""
    if op is _C.LITERAL:
        return [chr(av).lower()]
    if op is _C.IN and all(o is _C.LITERAL for o, _ in av) and len(av) <= 6:
        return sorted({chr(v).lower() for _, v in av})
    return None


def _pure_item(op: Any, av: Any) -> list[list[str]] | None:
    """An element made only of literals (characters, groups, alternatives of literals): its
    pieces, each a list of the strings it can be."""
    chars = _literal_char(op, av)
    if chars is not None:
        return [chars]
    if op is _C.SUBPATTERN:
        return _pure(av[-1])
    if op is _C.BRANCH:
        choices: set[str] = set()
        for branch in av[1]:
            pieces = _pure(branch)
            words = _expand(pieces) if pieces is not None else None
            if words is None:
                return None
            choices |= words
        return [sorted(choices)] if len(choices) <= _MAX_FANOUT else None
    return None


def _pure(items: Any) -> list[list[str]] | None:
    out: list[list[str]] = []
    for op, av in items:
        pieces = _pure_item(op, av)
        if pieces is None:
            return None
        out += pieces
    return out


def _expand(run: list[list[str]]) -> Literals | None:
    words = [""]
    for chars in run:
        words = [w + c for w in words for c in chars]
        if len(words) > _MAX_FANOUT:
            return None
    return frozenset(words)


def _best(cands: list[Anchored]) -> Anchored | None:
    if not cands:
        return None
    return max(cands, key=lambda c: (min(map(len, c[0])), -len(c[0])))


class _Widths:
    def __init__(self, state: Any) -> None:
        self.state = state

    def of(self, items: list[Any]) -> int:
        return int(_P.SubPattern(self.state, list(items)).getwidth()[1]) if items else 0


def _required(items: Any, w: _Widths) -> Anchored | None:
    """Lower-cased literals one of which every match of ``items`` contains (and how far into
    the match at most they start), or ``None``."""
    items = list(items)
    cands: list[Anchored] = []
    run: list[list[str]] = []
    run_at = 0  # index of the run's first element

    def flush(i: int) -> None:
        # the longest prefix of the run that expands to few enough literals
        for end in range(len(run), 0, -1):
            words = _expand(run[:end])
            if words is not None:
                cands.append((words, w.of(items[:run_at])))
                break
        run.clear()

    for i, (op, av) in enumerate(items):
        pure = _pure_item(op, av)
        if pure:
            if not run:
                run_at = i
            run.extend(pure)
            continue
        flush(i)
        inner: Anchored | None = None
        if op is _C.SUBPATTERN:
            inner = _required(av[-1], w)
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT) and av[0] >= 1:
            found = _required(av[2], w)
            # the match may start iterations earlier: the whole repeat's width is before it
            inner = (found[0], w.of([items[i]])) if found else None
        elif op is _C.BRANCH:
            sets = [_required(b, w) for b in av[1]]
            if all(sets):
                inner = (
                    frozenset().union(*(s[0] for s in sets if s)),
                    max(s[1] for s in sets if s),
                )
        if inner:
            cands.append((inner[0], w.of(items[:i]) + inner[1]))
    flush(len(items))
    return _best(cands)


def anchors(pattern: re.Pattern[str]) -> tuple[Literals | None, int, int]:
    """(anchors of ``pattern`` or ``None`` when it has no usable one, the most characters of a
    match before and after an anchor's start)."""
    tree = _P.parse(pattern.pattern, pattern.flags)
    found = _required(tree, _Widths(tree.state))
    width = int(tree.getwidth()[1])
    if found is None or min(map(len, found[0])) < MIN_ANCHOR:
        return None, 0, 0
    before = found[1] if found[1] < _UNBOUNDED else _UNBOUNDED_BEFORE
    after = width if width < _UNBOUNDED else _UNBOUNDED_AFTER
    return found[0], min(before, _MAX_BEFORE), min(after, _MAX_AFTER)


@dataclass(frozen=True, slots=True)
class _Entry:
    rule: Rule
    #: the anchors (lower case); empty when the rule runs over every segment
    words: Literals
    before: int
    after: int
    #: the automaton's indexes of ``words`` (set once the automaton is built)
    indexes: tuple[int, ...] = ()

    @property
    def anchored(self) -> bool:
        return bool(self.words)


class Prefilter:
    """Per segment: the rules worth running and, for each, the spans of text to run it on."""

    def __init__(self, rules: Iterable[Rule], *, native: bool = False) -> None:
        #: with the native engine, rules without an anchor are left to it (Kingfisher's catalogue
        #: has them: legacy Vault tokens...); without it they run over every segment
        self.native = native
        self.entries: list[_Entry] = []
        words: dict[str, set[int]] = {}
        for i, rule in enumerate(rules):
            found, before, after = anchors(rule.pattern)
            if rule.family == "generic":
                after = min(after, _GENERIC_AFTER)
            self.entries.append(_Entry(rule, found or frozenset(), before, after))
            for word in found or ():
                words.setdefault(word, set()).add(i)
        self._words = sorted(words)
        position = {w: i for i, w in enumerate(self._words)}
        for entry in self.entries:
            object.__setattr__(entry, "indexes", tuple(sorted(position[w] for w in entry.words)))
        self._automaton = (
            ahocorasick_rs.BytesAhoCorasick([w.encode("ascii", "replace") for w in self._words])
            if self._words
            else None
        )

    @property
    def unanchored(self) -> list[str]:
        """Ids of the rules that run over every segment (no anchor of three characters)."""
        return [e.rule.id for e in self.entries if not e.anchored]

    def plan(self, text: str, kind: str) -> Iterator[tuple[Rule, list[tuple[int, int]], bool]]:
        """(rule, spans of ``text``, whether a match starts exactly at a span's start), in rule
        order, for the rules that can match: run the rule over each span (``finditer``), or
        only at its start (``match``) for the generic rules."""
        by_word: dict[int, list[tuple[int, int]]] = {}
        if self._automaton is not None:
            # one byte per character (anything not ASCII is "?"): offsets are str offsets
            hay = text.encode("ascii", "replace").lower()
            for index, start, end in self._automaton.find_matches_as_indexes(hay, overlapping=True):
                found_at = by_word.get(index)
                if found_at is None:
                    by_word[index] = [(start, end)]
                else:
                    found_at.append((start, end))
        names: dict[frozenset[int], list[tuple[int, int]]] = {}  # rules sharing their words
        for entry in self.entries:
            rule = entry.rule
            if rule.kinds is not None and kind not in rule.kinds:
                continue
            if not entry.anchored:
                if not self.native:
                    yield rule, [(0, len(text))], False
                continue
            present = [w for w in entry.indexes if w in by_word]
            if not present:
                continue
            found = [h for w in present for h in by_word[w]]
            if rule.family == "generic":
                key = frozenset(present) | {-entry.after}
                spans = names.get(key)
                if spans is None:
                    spans = names[key] = list(_names(text, found, kind, entry.after))
                if spans:
                    yield rule, spans, True
                continue
            yield rule, _windows(text, found, entry.before, entry.after), False


_NAME_CHARS = string.ascii_letters + string.digits + "_.-"


def _names(
    text: str, hits: list[tuple[int, int]], kind: str, after: int
) -> Iterator[tuple[int, int]]:
    """The generic rules' spans: a name ending in the anchor, then an assignment. A match can
    only start where the name does (the start of its run of name characters) or, for the line
    forms, where its line does, so the rule is tried there, not at every position of a window
    (its expression is the slowest)."""
    check = _ASSIGNED_ENV if kind in ENV_LIKE else _ASSIGNED
    last = -1
    for start, end in sorted(hits):
        if not check.match(text, end):
            continue
        ahead = text[max(start - _NAME_MAX, 0) : start]
        lo = start - len(ahead) + len(ahead.rstrip(_NAME_CHARS))
        if lo == last:
            continue  # two anchors in one name (client_secret): one try
        last = lo
        hi = min(end + after + _LOOKAHEAD, len(text))
        yield lo, hi
        line = text.rfind("\n", 0, lo) + 1
        if line != lo and lo - line <= _NAME_MAX:
            yield line, hi  # a line form: `ENV NAME value`, `export NAME=value`, `- NAME=value`


def _windows(
    text: str, hits: list[tuple[int, int]], before: int, after: int
) -> list[tuple[int, int]]:
    """Merged spans around each occurrence: from ``before`` characters ahead of it to ``after``
    past its start, then to the end of the line when that is near (a minified bundle's line is
    megabytes). A search from a position still sees what precedes it (lookbehinds, ``\\b``,
    ``^``), so only the end needs room: lookaheads get ``_LOOKAHEAD`` characters more."""
    spans: list[tuple[int, int]] = []
    size = len(text)
    for start, _ in sorted(hits):
        lo = max(start - before, 0)
        hi = min(start + after + _LOOKAHEAD, size)
        eol = text.find("\n", hi, hi + _LOOKAHEAD)
        hi = eol if eol >= 0 else min(hi + _LOOKAHEAD, size)
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(hi, spans[-1][1]))
        else:
            spans.append((lo, hi))
    return spans
