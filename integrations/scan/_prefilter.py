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

The generic (context) rules' anchors are read from their ``name`` group: the credential words,
common in code (``token``, ``client``...). An occurrence counts only when the rule's own text
after the name follows it (the name's rest, then ``=``/``:``/``=>``/``">``/``', '``...: read
from the expression, so a new context is known here the day it is a rule), and the rule is
tried once, where that name starts, or searched from the few characters before it that the
rule has ahead of its name (``<``, ``define('``, ``--``, ``key="``). A digit class (``\\dQ~``)
widens a literal into ten. With the native engine, a rule with no anchor of three characters is
left to Kingfisher's rules.

Why ~510 lines: reading anchors, widths and what must follow an anchor out of an expression's
parse tree (and writing that part back as an expression) is one idea that needs the whole tree
walk; split, each half would need the other's walk.
"""

from __future__ import annotations

import importlib
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ahocorasick_rs

from ._rules import Rule

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
#: a rule whose matches start at most this many characters ahead of an anchor is tried at those
#: positions only (``match``), not searched through its window: a search tries every position
#: of a ~1 KB window, most of which cannot start a match
_MAX_EXACT_BEFORE = 16
#: the generic rules' names: at most this many characters before the anchor
_NAME_MAX = 96
#: the generic rules: what a name ending in an anchor can still have before the rule's own
#: text after its ``name`` group (the rest of a keyword: ``api`` + ``_key``)
_NAME_REST = r"[\w.\-]*"
#: a rule with text before its name (``<``, ``define('``, ``--``, ``key="``): at most this much
_MAX_LEAD = 64
_LEAD_MARGIN = 16

Literals = frozenset[str]
#: anchors, the most characters a match can have before the anchor, and (when known) the
#: elements that must follow the anchor
Anchored = tuple[Literals, int, list[Any] | None]


def _literal_char(op: Any, av: Any) -> list[str] | None:
    """The characters one element matches, when it is a literal or a small set of literals."""
    if op is _C.LITERAL:
        return [chr(av).lower()]
    if op is _C.IN and all(o is _C.LITERAL for o, _ in av) and len(av) <= 6:
        return sorted({chr(v).lower() for _, v in av})
    if op is _C.IN and len(av) == 1:
        # a digit (``\d``, ``[0-9]``): ten literals (``\dQ~``, an Entra ID secret's marker)
        ((sub_op, sub_av),) = av
        if sub_op is _C.CATEGORY and str(sub_av) == "CATEGORY_DIGIT":
            return list(string.digits)
        if sub_op is _C.RANGE and sub_av[1] - sub_av[0] < 10:
            return sorted({chr(c).lower() for c in range(sub_av[0], sub_av[1] + 1)})
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
                cands.append((words, w.of(items[:run_at]), items[i:] if end == len(run) else None))
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
            if inner and inner[2] is not None and not av[1] and not av[2]:
                # a group without flags of its own: what follows it follows the anchor too
                inner = (inner[0], inner[1], inner[2] + items[i + 1 :])
            elif inner:
                inner = (inner[0], inner[1], None)
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT) and av[0] >= 1:
            found = _required(av[2], w)
            # the match may start iterations earlier: the whole repeat's width is before it
            inner = (found[0], w.of([items[i]]), None) if found else None
        elif op is _C.BRANCH:
            sets = [_required(b, w) for b in av[1]]
            if all(sets):
                inner = (
                    frozenset().union(*(s[0] for s in sets if s)),
                    max(s[1] for s in sets if s),
                    None,
                )
        if inner:
            cands.append((inner[0], w.of(items[:i]) + inner[1], inner[2]))
    flush(len(items))
    return _best(cands)


def anchors(pattern: re.Pattern[str]) -> tuple[Literals | None, int, int]:
    """(anchors of ``pattern`` or ``None`` when it has no usable one, the most characters of a
    match before and after an anchor's start)."""
    found, before, after, _ = _analyse(pattern)
    return found, before, after


def _analyse(
    pattern: re.Pattern[str],
) -> tuple[Literals | None, int, int, re.Pattern[str] | None]:
    found, before, after, tail, _ = _analysed(pattern)
    return found, before, after, tail


def _analysed(
    pattern: re.Pattern[str],
) -> tuple[Literals | None, int, int, re.Pattern[str] | None, bool]:
    """:func:`_analyse`, and whether ``before`` is exact: no match starts further than that
    ahead of an anchor (a bounded width, not a cap)."""
    tree = _P.parse(pattern.pattern, pattern.flags)
    found = _required(tree, _Widths(tree.state))
    width = int(tree.getwidth()[1])
    if found is None or min(map(len, found[0])) < MIN_ANCHOR:
        return None, 0, 0, None, False
    exact = found[1] <= _MAX_EXACT_BEFORE
    before = found[1] if found[1] < _UNBOUNDED else _UNBOUNDED_BEFORE
    after = width if width < _UNBOUNDED else _UNBOUNDED_AFTER
    tail = None
    if found[2] is not None:
        text = _serialize_prefix(found[2])
        if text:
            tail = re.compile(text, pattern.flags & ~re.VERBOSE)
    return found[0], min(before, _MAX_BEFORE), min(after, _MAX_AFTER), tail, exact


def _named(
    pattern: re.Pattern[str],
) -> tuple[Literals, int, re.Pattern[str]] | None:
    """A generic rule's anchors read from its ``name`` group alone (the credential words), the
    most characters the rule has before that group (``<``, ``define('``, ``--``), and what must
    follow an anchor: the rest of the name, then the rule's own text after the group (``=``,
    ``">``...). ``None``: no top-level ``name`` group."""
    tree = _P.parse(pattern.pattern, pattern.flags)
    group = tree.state.groupdict.get("name")
    items = list(tree)
    for i, (op, av) in enumerate(items):
        if op is _C.SUBPATTERN and av[0] == group:
            found = _required(av[-1], _Widths(tree.state))
            if found is None or min(map(len, found[0])) < MIN_ANCHOR:
                return None
            lead = int(_P.SubPattern(tree.state, items[:i]).getwidth()[1]) if i else 0
            after = _NAME_REST + _serialize_prefix(items[i + 1 :])
            return found[0], min(lead, _MAX_LEAD), re.compile(after, pattern.flags & ~re.VERBOSE)
    return None


_CATEGORIES = {
    "CATEGORY_DIGIT": r"\d",
    "CATEGORY_NOT_DIGIT": r"\D",
    "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S",
    "CATEGORY_WORD": r"\w",
    "CATEGORY_NOT_WORD": r"\W",
}
_ATS = {
    "AT_BOUNDARY": r"\b",
    "AT_NON_BOUNDARY": r"\B",
    "AT_BEGINNING": "^",
    "AT_BEGINNING_LINE": "^",
    "AT_BEGINNING_STRING": r"\A",
    "AT_END": "$",
    "AT_END_LINE": "$",
    "AT_END_STRING": r"\Z",
}


def _serialize_prefix(items: list[Any]) -> str:
    """The longest leading part of ``items`` written back as a regular expression: what must
    follow an anchor (a necessary condition, checked with one ``match`` per occurrence)."""
    out = []
    for op, av in items:
        piece = _serialize(op, av)
        if piece is None:
            break
        out.append(piece)
    return "".join(out)


def _serialize_all(items: Any) -> str | None:
    pieces = [_serialize(op, av) for op, av in items]
    return None if any(p is None for p in pieces) else "".join(p or "" for p in pieces)


def _serialize(op: Any, av: Any) -> str | None:
    name = str(op)
    if op is _C.LITERAL:
        return re.escape(chr(av))
    if op is _C.NOT_LITERAL:
        return "[^" + re.escape(chr(av)) + "]"
    if op is _C.ANY:
        return "."
    if op is _C.IN:
        parts: list[str] = []
        for sub_op, sub_av in av:
            if sub_op is _C.NEGATE:
                parts.insert(0, "^")
            elif sub_op is _C.LITERAL:
                parts.append(re.escape(chr(sub_av)))
            elif sub_op is _C.RANGE:
                parts.append(re.escape(chr(sub_av[0])) + "-" + re.escape(chr(sub_av[1])))
            elif sub_op is _C.CATEGORY and str(sub_av) in _CATEGORIES:
                parts.append(_CATEGORIES[str(sub_av)])
            else:
                return None
        return "[" + "".join(parts) + "]"
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT):
        lo, hi, sub = av
        inner = _serialize_all(sub)
        if inner is None:
            return None
        top = "" if hi >= _C.MAXREPEAT else str(hi)
        lazy = "?" if op is _C.MIN_REPEAT else ""
        return f"(?:{inner}){{{lo},{top}}}{lazy}"
    if op is _C.SUBPATTERN:
        if av[1] or av[2]:
            return None  # local flags: stop here
        inner = _serialize_all(av[-1])
        return None if inner is None else f"(?:{inner})"
    if op is _C.BRANCH:
        branches = [_serialize_all(b) for b in av[1]]
        if any(b is None for b in branches):
            return None
        return "(?:" + "|".join(b or "" for b in branches) + ")"
    if op is _C.AT and str(av) in _ATS:
        return _ATS[str(av)]
    if name in ("ASSERT", "ASSERT_NOT"):
        direction, sub = av
        inner = _serialize_all(sub)
        if inner is None:
            return None
        kind = (
            ("=" if name == "ASSERT" else "!")
            if direction == 1
            else ("<=" if name == "ASSERT" else "<!")
        )
        return f"(?{kind}{inner})"
    return None


@dataclass(frozen=True, slots=True)
class _Entry:
    rule: Rule
    #: the anchors (lower case); empty when the rule runs over every segment
    words: Literals
    before: int
    after: int
    #: the automaton's indexes of ``words`` (set once the automaton is built)
    indexes: tuple[int, ...] = ()
    #: the expression starts at a line's start (``(?m)^``): generic matches start there
    at_line: bool = False
    #: what must follow an anchor, as an expression of its own (``None``: not known)
    tail: re.Pattern[str] | None = None
    #: has anchors (else it runs over every segment)
    anchored: bool = False
    #: a generic rule: its anchors are in its ``name`` group; what precedes the group, at most
    lead: int = 0
    #: a generic rule: what follows an anchor in its name (the name's rest, the rule's context)
    assigned: re.Pattern[str] | None = None
    #: no match starts more than ``before`` characters ahead of an anchor (:func:`_analysed`)
    exact: bool = False


class Prefilter:
    """Per segment: the rules worth running and, for each, the spans of text to run it on."""

    def __init__(self, rules: Iterable[Rule], *, native: bool = False) -> None:
        #: with the native engine, rules without an anchor are left to it (Kingfisher's catalogue
        #: has them: legacy Vault tokens...); without it they run over every segment
        self.native = native
        self.entries: list[_Entry] = []
        words: dict[str, set[int]] = {}
        for i, rule in enumerate(rules):
            found, before, after, tail, exact = _analysed(rule.pattern)
            lead, assigned = 0, None
            named = _named(rule.pattern) if rule.family == "generic" else None
            if named is not None:
                found, lead, assigned = named
                tail = None
            if rule.family == "generic":
                after = min(after, _GENERIC_AFTER)
            self.entries.append(
                _Entry(
                    rule,
                    found or frozenset(),
                    before,
                    after,
                    at_line=_at_line(rule.pattern),
                    tail=tail,
                    anchored=bool(found),
                    lead=lead,
                    assigned=assigned,
                    exact=exact and assigned is None,
                )
            )
            for word in found or ():
                words.setdefault(word, set()).add(i)
        self._words = sorted(words)
        position = {w: i for i, w in enumerate(self._words)}
        for entry in self.entries:
            object.__setattr__(entry, "indexes", tuple(sorted(position[w] for w in entry.words)))
        #: the rules each anchor belongs to, and the rules that run over every segment
        self._rules_of: dict[int, tuple[int, ...]] = {}
        for i, entry in enumerate(self.entries):
            for w in entry.indexes:
                self._rules_of[w] = (*self._rules_of.get(w, ()), i)
        self._always = tuple(
            i for i, e in enumerate(self.entries) if not e.anchored and not self.native
        )
        self._checks, self._slots = _shared_checks(self.entries)
        self._automaton = (
            ahocorasick_rs.BytesAhoCorasick(
                [w.encode("ascii", "replace") for w in self._words],
                # a DFA: three times the default's speed, the same matches (~100 short words)
                implementation=ahocorasick_rs.Implementation.DFA,
            )
            if self._words
            else None
        )

    @property
    def unanchored(self) -> list[str]:
        """Ids of the rules that run over every segment (no anchor of three characters)."""
        return [e.rule.id for e in self.entries if not e.anchored]

    def plan(
        self, text: str, kind: str, data: bytes | None = None
    ) -> Iterator[tuple[Rule, list[tuple[int, int]], bool]]:
        """(rule, spans of ``text``, whether a match starts exactly at a span's start), in rule
        order, for the rules that can match: run the rule over each span (``finditer``), or
        only at its start (``match``) for the generic rules."""
        by_word: dict[int, list[tuple[int, int]]] = {}
        if self._automaton is not None:
            # one byte per character (anything not ASCII is "?"): offsets are str offsets
            # (``data``: the text's own bytes, when it is ASCII: the same offsets, no encoding)
            hay = (data if data is not None else text.encode("ascii", "replace")).lower()
            for index, start, end in self._automaton.find_matches_as_indexes(hay, overlapping=True):
                found_at = by_word.get(index)
                if found_at is None:
                    by_word[index] = [(start, end)]
                else:
                    found_at.append((start, end))
        if not by_word and not self._always:
            return
        wanted = set(self._always)
        for w in by_word:
            wanted.update(self._rules_of[w])
        names: dict[object, list[tuple[int, int]]] = {}  # rules sharing their words and context
        marked: dict[int, list[_Hit]] = {}  # the generic rules' anchors, with their checks' results
        for i in sorted(wanted):  # rule order; a rule none of whose anchors is here cannot match
            entry = self.entries[i]
            rule = entry.rule
            if rule.kinds is not None and kind not in rule.kinds:
                continue
            if not entry.anchored:
                yield rule, [(0, len(text))], False
                continue
            present = [w for w in entry.indexes if w in by_word]
            found = [h for w in present for h in by_word[w]]
            tail = entry.tail
            if tail is not None:
                found = [h for h in found if tail.match(text, h[1])]
                if not found:
                    continue
            slot = self._slots[i]
            if entry.assigned is not None and slot is not None:
                key = (frozenset(present), entry.assigned.pattern, entry.after, entry.at_line)
                spans = names.get(key)
                if spans is None:
                    hits = marked.get(slot[0])
                    if hits is None:
                        hits = marked[slot[0]] = _mark(text, found, self._checks[slot[0]])
                    spans = names[key] = list(_names(text, hits, entry, slot[1]))
                if spans:
                    # a rule with text before its name: searched from just before the name
                    yield rule, spans, not entry.lead or entry.at_line
                continue
            if entry.exact:
                yield rule, _starts(text, found, entry.before, entry.after), True
            else:
                yield rule, _windows(text, found, entry.before, entry.after), False


#: an anchor's (start, end), where its name starts, and which rules' checks pass after it
_Hit = tuple[int, int, int, tuple[tuple[int, int], ...]]
_SCOPED = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))


def _shared_checks(
    entries: list[_Entry],
) -> tuple[list[re.Pattern[str]], list[tuple[int, int] | None]]:
    """One expression per set of generic rules with the same anchors: what must follow an
    anchor for each rule, as optional lookaheads that capture, so that one ``match`` after an
    occurrence tells which rules can match there (their group took part), instead of one
    ``match`` per rule. When no rule's context can begin with a name character, the rest of the
    name is read once, possessively (``[\\w.\\-]*+``: a context must start where the name ends,
    so giving characters back could never help), not once per rule with backtracking. Returns
    the expressions and, per entry, (expression, group)."""
    parts: dict[tuple[Literals, int, bool], list[str]] = {}
    slots: list[tuple[int, int] | None] = []
    keys: list[tuple[Literals, int, bool]] = []
    for i, entry in enumerate(entries):
        if entry.assigned is None:
            slots.append(None)
            continue
        flags = entry.assigned.flags
        local = "".join(c for flag, c in _SCOPED if flags & flag)
        base = flags & ~(re.IGNORECASE | re.MULTILINE | re.DOTALL)
        rest = entry.assigned.pattern.removeprefix(_NAME_REST)
        own = rest != entry.assigned.pattern and _starts_after_name(rest, flags)
        key = (entry.words, base, own)
        if key not in parts:
            parts[key] = []
            keys.append(key)
        context = rest if own else entry.assigned.pattern
        parts[key].append(f"(?:(?=(?P<r{i}>(?{local}:{context})))|)")
        slots.append((keys.index(key), i))
    checks = [
        re.compile((_NAME_REST + "+" if key[2] else "") + "".join(parts[key]), key[1])
        for key in keys
    ]
    return checks, [
        None if s is None else (s[0], checks[s[0]].groupindex[f"r{s[1]}"]) for s in slots
    ]


def _starts_after_name(rest: str, flags: int) -> bool:
    """Must every match of ``rest`` begin with a character that is not a name character (not
    ``[\\w.\\-]``)? Then a match of ``[\\w.\\-]*`` + ``rest`` has its name run whole."""
    name = re.compile(r"[\w.\-]", flags & ~(re.IGNORECASE | re.MULTILINE | re.DOTALL))
    may_name, may_empty = _first(_P.parse(rest, flags), name)
    return not may_name and not may_empty


def _first(items: Any, name: re.Pattern[str]) -> tuple[bool, bool]:
    """(may the first character ``items`` consume be a name character, may they consume
    nothing): ``True`` when not known."""
    for op, av in items:
        may_name, may_empty = _first_of(op, av, name)
        if may_name:
            return True, True
        if not may_empty:
            return False, False
    return False, True


def _first_of(op: Any, av: Any, name: re.Pattern[str]) -> tuple[bool, bool]:
    if op is _C.LITERAL:
        return bool(name.match(chr(av))) or chr(av).isalnum(), False
    if op is _C.IN:
        for sub_op, sub_av in av:
            if sub_op is _C.LITERAL:
                if name.match(chr(sub_av)) or chr(sub_av).isalnum():
                    return True, False
            elif sub_op is _C.RANGE and sub_av[1] - sub_av[0] <= 256:
                if any(name.match(chr(c)) for c in range(sub_av[0], sub_av[1] + 1)):
                    return True, False
            elif not (sub_op is _C.CATEGORY and str(sub_av) == "CATEGORY_SPACE"):
                return True, False  # a negation, a wide range, another class: not known
        return False, False
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT):
        may_name, may_empty = _first(av[2], name)
        return may_name, may_empty or av[0] == 0
    if op is _C.SUBPATTERN:
        return _first(av[-1], name)
    if op is _C.BRANCH:
        results = [_first(branch, name) for branch in av[1]]
        return any(r[0] for r in results), any(r[1] for r in results)
    if op is _C.AT or str(op) in ("ASSERT", "ASSERT_NOT"):
        return False, True  # consumes nothing: the next element's first character counts
    return True, True


def _mark(text: str, hits: list[tuple[int, int]], check: re.Pattern[str]) -> list[_Hit]:
    """The anchors after which at least one rule's check passes, in order, with where the name
    they end starts (the start of its run of name characters) and the check's group spans."""
    out: list[_Hit] = []
    match = check.match
    for start, end in sorted(hits):
        m = match(text, end)
        if m is None or m.lastindex is None:
            continue  # no rule's context follows
        ahead = text[max(start - _NAME_MAX, 0) : start]
        out.append((start, end, start - len(ahead) + len(ahead.rstrip(_NAME_CHARS)), m.regs))
    return out


def _at_line(pattern: re.Pattern[str]) -> bool:
    tree = _P.parse(pattern.pattern, pattern.flags)
    return (
        bool(tree.data)
        and tree.data[0][0] is _C.AT
        and tree.data[0][1] in (_C.AT_BEGINNING, _C.AT_BEGINNING_LINE)
    )


_NAME_CHARS = string.ascii_letters + string.digits + "_.-"


def _names(text: str, hits: list[_Hit], entry: _Entry, group: int) -> Iterator[tuple[int, int]]:
    """The generic rules' spans: a name ending in the anchor, then the rule's context (its
    ``group`` of the shared check took part: :func:`_mark`). A match can only start where the
    name does (the start of its run of name characters), a few characters before it
    (``entry.lead``: ``<``, ``define('``), or, for a rule that starts at a line's start
    (``at_line``), where its line does, so the rule is tried there, not at every position of a
    window (its expression is the slowest)."""
    hi_extra = entry.after + _LOOKAHEAD
    size = len(text)
    last = -1
    for _, end, lo, regs in hits:
        if regs[group][0] < 0 or lo == last:
            continue  # its context does not follow, or two anchors in one name (client_secret)
        last = lo
        hi = min(end + hi_extra, size)
        if entry.at_line:
            line = text.rfind("\n", 0, lo) + 1
            if lo - line <= _NAME_MAX:
                yield line, hi  # a line form: `ENV NAME value`, `export NAME=value`
        elif entry.lead:
            # a namespace prefix the name characters miss (`<ns:password>`) is in the margin
            yield max(lo - entry.lead - _LEAD_MARGIN, 0), hi
        else:
            yield lo, hi


def _starts(
    text: str, hits: list[tuple[int, int]], before: int, after: int
) -> list[tuple[int, int]]:
    """Every position a match can start at (``before`` characters ahead of each occurrence, up
    to it), in order, each with the end of its occurrence's window (:func:`_windows`): a match
    found by a search of the window starts at one of them, and ``match`` there finds it."""
    ends: dict[int, int] = {}
    size = len(text)
    for start, _ in hits:
        hi = min(start + after + _LOOKAHEAD, size)
        eol = text.find("\n", hi, hi + _LOOKAHEAD)
        hi = eol if eol >= 0 else min(hi + _LOOKAHEAD, size)
        for pos in range(max(start - before, 0), start + 1):
            if ends.get(pos, -1) < hi:
                ends[pos] = hi
    return sorted(ends.items())


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
