"""Masking bytes: every registered form replaced by ``***``, in one buffer or a stream of reads.

:class:`StreamMasker` masks a child's output (``leaseline run``), also when a value arrives split
across reads; :func:`mask_block` masks one buffer (the process masker uses it for log records).
Both match the data as it is and, when it holds terminal escape sequences, the data without
them (:mod:`leaseline.masking._ansi`), so a value a highlighter has coloured in pieces is masked too; the
escape sequences inside a masked span are kept.

Memory is linear in the registered forms, whatever their length (a certificate bundle, a
kubeconfig): the automaton (:class:`Matcher`) holds each form's first :data:`ANCHOR` bytes, and
each hit is checked against the whole form. A stream holds back only what may still be the
start of a form: a suffix that begins an anchor, or from a hit whose form is not complete yet
(so at most the longest form). Ordinary output (a progress line, a prompt) passes at once; a
partial secret waits for the next read, or for ``flush()`` at the end of the stream, where the
unfinished prefix is masked too.

Why ~570 lines: the stream masker and its three engines (Hyperscan, Aho-Corasick, ``re``)
that must give the same answer, chosen per chunk size; one file keeps them comparable.
"""

from __future__ import annotations

import sys
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypeAlias, cast

from .. import masking
from . import _ansi

__all__ = [
    "ANCHOR",
    "MASK",
    "MaskedTextStream",
    "Matcher",
    "StreamMasker",
    "mask_block",
    "mask_std_streams",
]

MASK = masking.MASK.encode()

#: bytes, or a slice of a read buffer (``memoryview``): what the relay scans and writes
Buffer: TypeAlias = "bytes | memoryview"
#: ``(start, end, masked)``: a piece of the data to write as is, or as ``***``
Segment: TypeAlias = "tuple[int, int, bool]"
#: ``(start, end, keeps_escapes)``: a masked span (found in the view without escape sequences)
Span: TypeAlias = "tuple[int, int, bool]"

#: the automaton holds this many first bytes of each form; longer forms are checked per hit
ANCHOR = 64

#: chunks at least this large go to Hyperscan when it is installed (its import and database
#: build cost milliseconds, which output in bulk repays and a prompt or a log line does not)
BULK_SCAN = 64 * 1024

#: anchor bytes up to which Aho-Corasick is built as a DFA
DFA_BYTES = 1 << 19

#: Aho-Corasick's ``memchr`` prefilter works with keys starting with at most this many bytes
START_BYTES = 3

#: shortest key (a part of an anchor) Aho-Corasick is built over, when it starts inside it
MIN_KEY = 8

#: at most this many Aho-Corasick automata (scans of each chunk) for keys with few start bytes
MAX_AUTOMATA = 3

#: up to this many anchors (~600 values) the keys are chosen (~30 ms for 700 anchors)
KEYED_ANCHORS = 4096

#: with this many forms, Hyperscan is used for every chunk: building an Aho-Corasick DFA of them
#: costs as much as compiling Hyperscan's database, and one engine is enough
MANY_FORMS = 64


class Matcher:
    """Finds the forms in ``data``: ``analyze(data)`` gives the spans of complete forms and where
    an unfinished one may start. Engines are built on first use, over the anchors (each form's
    first :data:`ANCHOR` bytes):

    - Aho-Corasick (``ahocorasick-rs``, a core dependency, ~1.6 GB/s with hundreds of forms):
      one non-overlapping scan (standard semantics: each match reported is the one ending first
      among those starting at or after where the scan resumed). Every match either is reported
      or overlaps a reported one, and so lies inside ``longest anchor - 1`` bytes of it; only
      those small windows are rescanned for overlapping matches, so output with no secret in it
      costs one scan.
    - Hyperscan (extra ``fast``; x86-64 Linux, macOS, Windows; ~3.4 GB/s, SIMD literal
      matching) for chunks of :data:`BULK_SCAN` bytes and more: it reports every match with
      its leftmost start, overlapping ones included, in one pass.
    - A compiled ``re`` alternation when neither is importable (a few MB/s).
    """

    def __init__(self, forms: list[bytes], *, hyperscan: bool = True) -> None:
        """``hyperscan=False``: never Hyperscan (the process masker: it masks log records of
        any thread, and a scratch space per thread would outlive short-lived threads)."""
        groups: dict[bytes, list[bytes]] = {}
        for form in forms:
            groups.setdefault(form[:ANCHOR], []).append(form)
        self._anchors = sorted(groups)
        self._index = {a: i for i, a in enumerate(self._anchors)}
        #: per anchor: is it a whole form, and the longer forms it starts
        self._whole = [any(len(f) == len(a) for f in groups[a]) for a in self._anchors]
        self._longer = [[f for f in groups[a] if len(f) > len(a)] for a in self._anchors]
        self._lengths = sorted({len(a) for a in self._anchors}, reverse=True)
        self._firsts = {a[0] for a in self._anchors}
        self._reach = max((len(a) for a in self._anchors), default=1) - 1
        self.count = len(forms)
        self.longest = max((len(f) for f in forms), default=0)
        self._ac: Any = None
        self._re: Any = None
        self._hs: Any = None if hyperscan else False  # (database, scratch); False: not used
        #: Hyperscan's scratch space serves one scan at a time: one per thread (a clone)
        self._scratch = threading.local()
        self._building = threading.Lock()  # one build of each engine, whichever thread asks
        self.engine = "none" if not forms else ""

    def prepare(self) -> None:
        """Build now the engine that output in bulk will use (Hyperscan with :data:`MANY_FORMS`
        forms or more, else Aho-Corasick), so no database compile sits between a command's
        first byte and its last; the others stay lazy."""
        if not self.count:
            return
        if self.count >= MANY_FORMS and self._hs is not False and self._hyperscan():
            return
        self._ensure_ac()

    # -- engines: (start, pattern id) of every anchor occurrence ------------------------------

    def _hits(self, data: Buffer) -> list[tuple[int, int]]:
        """``(start, anchor id)`` of every anchor occurrence, overlapping ones included."""
        bulk = len(data) >= BULK_SCAN or self.count >= MANY_FORMS
        if bulk and self._hs is not False and self._hyperscan():
            return self._hs_hits(data)
        self._ensure_ac()
        return self._re_hits(data) if self._ac is None else self._ac_hits(data)

    def _ac_hits(self, data: Buffer) -> list[tuple[int, int]]:
        hits: list[tuple[int, int]] = []
        for automaton, owners, reach in self._ac:
            self._ac_find(automaton, owners, reach, data, hits)
        return hits

    def _ac_find(
        self,
        automaton: Any,
        owners: list[list[tuple[int, int]]],
        reach: int,
        data: Buffer,
        hits: list[tuple[int, int]],
    ) -> None:
        found = automaton.find_matches_as_indexes(data, overlapping=False)
        if not found:
            return
        size = len(data)
        windows: list[list[int]] = []
        for _, start, end in found:
            lo, hi = max(0, start - reach), min(size, end + reach)
            if windows and lo <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], hi)
            else:
                windows.append([lo, hi])
        anchors = self._anchors
        for lo, hi in windows:
            for key, s, _ in automaton.find_matches_as_indexes(data[lo:hi], overlapping=True):
                at = lo + s
                for i, k in owners[key]:  # the anchors with this key at offset k
                    start = at - k
                    if k == 0 or (start >= 0 and data[start:at] == anchors[i][:k]):
                        hits.append((start, i))

    def _re_hits(self, data: Buffer) -> list[tuple[int, int]]:
        # the lookahead finds the longest anchor at each position; the shorter ones there are
        # looked up by length
        index, lengths, hits = self._index, self._lengths, []
        for m in self._re.finditer(data):
            start = m.start(1)
            found = m.group(1)
            for n in lengths:
                if n <= len(found):
                    i = index.get(bytes(data[start : start + n]))
                    if i is not None:
                        hits.append((start, i))
        return hits

    def _ensure_ac(self) -> None:
        if self._ac is None and self._re is None:
            with self._building:
                if self._ac is None and self._re is None:
                    self._build_ac()

    def _build_ac(self) -> None:
        try:
            import ahocorasick_rs as ac
        except ImportError:  # pragma: no cover - a core dependency; kept for broken installs
            import re

            ordered = sorted(self._anchors, key=len, reverse=True)
            self._re = re.compile(b"(?=(" + b"|".join(re.escape(f) for f in ordered) + b"))")
            self.engine = self.engine or "re"
            return
        # a DFA is fastest; past a few hundred thousand anchor bytes (thousands of values) its
        # tables grow large, and the library's own choice (a contiguous NFA) is kept
        small = sum(len(a) for a in self._anchors) <= DFA_BYTES
        automata = []
        for group in _key_groups(self._anchors):
            keys: dict[bytes, list[tuple[int, int]]] = {}
            for i, k in group:
                keys.setdefault(self._anchors[i][k:], []).append((i, k))
            automaton = ac.BytesAhoCorasick(
                list(keys),
                matchkind=ac.MATCHKIND_STANDARD,
                implementation=ac.Implementation.DFA if small else None,
            )
            automata.append((automaton, list(keys.values()), max(len(key) for key in keys) - 1))
        self._ac = automata
        self.engine = self.engine or "ahocorasick-rs"

    def _hyperscan(self) -> bool:
        if self._hs is None:
            with self._building:
                if self._hs is None:
                    built = _hyperscan_db(self._anchors)
                    if built:
                        self.engine = "hyperscan"
                    self._hs = built or False
        return bool(self._hs)

    def _hs_hits(self, data: Buffer) -> list[tuple[int, int]]:
        db, prototype = self._hs  # never scanned with: each thread scans with its clone
        scratch = getattr(self._scratch, "space", None)
        if scratch is None:
            scratch = self._scratch.space = prototype.clone()
        hits: list[tuple[int, int]] = []
        add = hits.append

        def found(i: int, start: int, _end: int, _flags: int, _ctx: object) -> None:
            add((start, i))

        db.scan(data, match_event_handler=found, scratch=scratch)
        return hits

    # -- forms ------------------------------------------------------------------------------

    def analyze(self, data: Buffer, *, stream: bool = True) -> tuple[list[tuple[int, int]], int]:
        """``(spans, unfinished)``: the ``(start, end)`` of every complete form in ``data``
        (unsorted, overlapping ones included), and where the earliest form that ``data`` ends
        in the middle of starts (``len(data)`` if none, or if not ``stream``: a whole text)."""
        size = len(data)
        if not self.count or not size:
            return [], size
        spans: list[tuple[int, int]] = []
        unfinished = size
        anchors, whole, longer = self._anchors, self._whole, self._longer
        for start, i in self._hits(data):
            if whole[i]:
                spans.append((start, start + len(anchors[i])))
            for form in longer[i]:
                end = start + len(form)
                if end <= size:
                    if form.startswith(data[start:end]):
                        spans.append((start, end))
                elif start < unfinished and form.startswith(data[start:]):
                    unfinished = start
        return spans, min(unfinished, self._held_from(data)) if stream else size

    def _held_from(self, data: Buffer) -> int:
        """Where the longest suffix of ``data`` that is a proper prefix of an anchor starts."""
        size, anchors, firsts = len(data), self._anchors, self._firsts
        for k in range(min(self._reach, size), 0, -1):
            if data[size - k] not in firsts:
                continue
            suffix = bytes(data[size - k :])
            j = bisect_left(anchors, suffix)
            if j < len(anchors) and anchors[j] == suffix:
                j += 1
            if j < len(anchors) and anchors[j].startswith(suffix):
                return size - k
        return size


def _key_groups(anchors: list[bytes]) -> list[list[tuple[int, int]]]:
    """Aho-Corasick's automata: per automaton, ``(anchor index, offset)`` of each anchor it
    finds; it searches for the anchor from ``offset`` on (its key), and each hit is checked for
    the bytes before. Aho-Corasick skips ahead with ``memchr`` only while its keys start with at
    most :data:`START_BYTES` distinct bytes, which the anchors of a hundred values in seven
    encodings (and leaseline's tokens) seldom do; so each automaton's keys start at one of at
    most that many bytes (chosen greedily, most anchors first; keys stay :data:`MIN_KEY` bytes
    long): a few scans that skip beat one that reads every byte. When that takes more than
    :data:`MAX_AUTOMATA` automata, or past :data:`KEYED_ANCHORS` anchors (the choice is made in
    Python): one automaton, of the whole anchors."""
    whole = [[(i, 0) for i in range(len(anchors))]]
    if len({a[0] for a in anchors}) <= START_BYTES or len(anchors) > KEYED_ANCHORS:
        return whole
    groups: list[list[tuple[int, int]]] = []
    left = list(range(len(anchors)))
    while left:
        if len(groups) == MAX_AUTOMATA:
            return whole
        chosen = bytearray()
        offsets: dict[int, int] = {}
        while left and len(chosen) < START_BYTES:
            counts = Counter(
                b for i in left for b in set(anchors[i][: _last_key_start(anchors[i])])
            )
            # most anchors covered; a tie goes to the byte more of them already start with
            best = max(counts, key=lambda b: (counts[b], sum(anchors[i][0] == b for i in left)))
            chosen.append(best)
            rest = []
            for i in left:
                k = anchors[i].find(best, 0, _last_key_start(anchors[i]))
                if k < 0:
                    rest.append(i)
                else:
                    offsets[i] = k
            left = rest
        groups.append(sorted(offsets.items()))
    return groups


def _last_key_start(anchor: bytes) -> int:
    """Keys start before this offset of ``anchor`` (so they are :data:`MIN_KEY` bytes long)."""
    return len(anchor) - min(len(anchor), MIN_KEY) + 1


def _hyperscan_db(patterns: list[bytes]) -> tuple[Any, Any] | None:
    """A block-mode Hyperscan database of the byte strings, and its scratch space; ``None``
    when Hyperscan is not installed or refuses (a CPU without SSSE3, say)."""
    try:
        import hyperscan
    except ImportError:
        return None
    try:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        # every byte escaped (the binding's literal mode stops a pattern at its first NUL byte,
        # which UTF-16 forms have)
        escaped = [b"".join(b"\\x%02x" % c for c in p) for p in patterns]
        db.compile(
            expressions=escaped,
            ids=list(range(len(patterns))),
            elements=len(patterns),
            flags=[hyperscan.HS_FLAG_SOM_LEFTMOST] * len(patterns),
        )
        return db, hyperscan.Scratch(db)
    except hyperscan.error:
        return None


def _scan(
    matcher: Matcher, data: Buffer, escapes: bool | None = None, *, stream: bool = True
) -> tuple[list[Span], int, _ansi.View | None]:
    """Merged, sorted masked spans of ``data`` (from the data as it is, and from its view
    without escape sequences), where an unfinished form may start, and that view.
    ``escapes``: whether ``data`` holds an escape byte, when the caller knows."""
    spans, unfinished = matcher.analyze(data, stream=stream)
    found: list[Span] = [(a, b, False) for a, b in spans]
    view = None
    if escapes is None:
        escapes = _ansi.ESC in (data if isinstance(data, bytes) else data.tobytes())
    if escapes:
        view = _ansi.strip(data)
        if view.escapes_all:
            text = view.text
            plain, held = matcher.analyze(text, stream=stream)
            found += [(*view.span(a, b), True) for a, b in plain]
            if held < len(text):
                unfinished = min(unfinished, view.origin(held))
            if view.partial is not None and stream:
                unfinished = min(unfinished, view.partial)
        else:
            view = None
    return _merged(found), unfinished, view


def _merged(spans: list[Span]) -> list[Span]:
    """Overlapping and adjacent spans as one (keeping escapes only if all of them do)."""
    spans.sort()
    merged: list[Span] = []
    for start, end, porous in spans:
        if merged and start <= merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(end, last[1]), last[2] and porous)
        else:
            merged.append((start, end, porous))
    return merged


def _plan(spans: list[Span], view: _ansi.View | None, cut: int) -> tuple[list[Segment], int]:
    """The pieces to write for ``data[:cut]`` (a span running past ``cut`` moves it back to the
    span's start), and the new cut."""
    out: list[Segment] = []
    pos = 0
    for start, end, porous in spans:
        if start >= cut:
            break
        if end > cut:  # a match running into the held bytes: hold it whole
            cut = start
            break
        if start > pos:
            out.append((pos, start, False))
        out.append((start, end, True))
        if porous and view is not None:  # keep the colours: the escapes inside, after ***
            out.extend((a, b, False) for a, b in view.escapes(start, end))
        pos = end
    if cut > pos:
        out.append((pos, cut, False))
    return out, cut


def mask_block(matcher: Matcher, data: bytes) -> bytes | None:
    """``data`` with every form masked, or ``None`` when it holds none."""
    spans, _, view = _scan(matcher, data, stream=False)
    if not spans:
        return None
    plan, _ = _plan(spans, view, len(data))
    return b"".join(MASK if masked else data[a:b] for a, b, masked in plan)


_shared: dict[frozenset[bytes], Matcher] = {}
_shared_lock = threading.Lock()


def _shared_matcher(forms: frozenset[bytes]) -> Matcher:
    """One matcher per set of forms, shared by the streams masking it (a child's stdout and
    stderr): its engines are built once. The last few sets are kept."""
    with _shared_lock:
        matcher = _shared.get(forms)
        if matcher is None:
            if len(_shared) >= 4:
                del _shared[next(iter(_shared))]
            matcher = _shared[forms] = Matcher(sorted(forms))
        return matcher


class StreamMasker:
    """Mask one output stream. ``feed(chunk)`` returns what may be written now; ``flush()`` the rest.

    ``forms`` is a callable returning the current set of strings (``str``: masked in UTF-8, or
    ``bytes``) to mask (by default the process masker's ``stream_forms``); it is re-read on every
    ``feed`` and the automaton rebuilt when it changes, so a value registered mid-stream (a
    rotated credential) is masked from then on.

    >>> s = StreamMasker(lambda: frozenset({"hunter22"}))
    >>> s.feed(b"pw: hunt") + s.feed(b"er22!\\n") + s.flush()
    b'pw: ***!\\n'
    """

    def __init__(self, forms: Callable[[], Iterable[str | bytes]] | None = None) -> None:
        self._source = forms or (lambda: masking.masker().stream_forms)
        self._seen: object = None
        self._matcher = Matcher([])
        self._tail = b""
        self._refresh()

    def _refresh(self) -> None:
        current = self._source()
        if current is self._seen:
            return
        self._seen = current
        forms = {f.encode("utf-8", "surrogatepass") if isinstance(f, str) else f for f in current}
        self._matcher = _shared_matcher(frozenset(f for f in forms if f))

    def prepare(self) -> None:
        """Build the engines for the current forms now (see :meth:`Matcher.prepare`)."""
        self._refresh()
        self._matcher.prepare()

    def feed(self, chunk: bytes) -> bytes:
        """Mask ``chunk`` (with what was held back from the previous call)."""
        parts = self.feed_parts(chunk)
        if len(parts) == 1 and type(parts[0]) is bytes:
            return parts[0]
        return b"".join(parts)

    def feed_parts(self, chunk: Buffer) -> list[Buffer]:
        """:meth:`feed` without copying: the pieces to write, in order (slices of ``chunk``
        where nothing is masked). Write them before ``chunk``'s buffer is reused."""
        data: Buffer = self._tail + chunk if self._tail else chunk
        return [MASK if masked else data[a:b] for a, b, masked in self.segments(data)]

    def segments(self, data: Buffer, escapes: bool | None = None) -> list[Segment]:
        """The plan for ``data``, which must start with the held bytes (:attr:`held`): the
        ``(start, end, masked)`` pieces to write in order (a masked piece is written as ``***``;
        what lies between pieces is not written); ``data[cut:]`` is held from then on. A relay
        that reads into its own buffer puts :attr:`held` in front of each read and so never
        concatenates; it may also say whether ``data`` holds an escape byte (``escapes``), which
        it can find in its buffer without a copy."""
        self._refresh()
        size = len(data)
        if not self._matcher.count:
            self._tail = b""
            return [(0, size, False)] if size else []
        spans, unfinished, view = _scan(self._matcher, data, escapes)
        plan, cut = _plan(spans, view, unfinished)
        self._tail = bytes(data[cut:])
        return plan

    def flush(self) -> bytes:
        """End of stream: what is held back, masked (an unfinished secret prefix becomes ``***``)."""
        self._refresh()
        data, self._tail = self._tail, b""
        if not data:
            return b""
        spans, unfinished, view = _scan(self._matcher, data)
        if len(data) - unfinished >= masking.MIN_LENGTH:  # an unfinished secret: no part of it
            spans = _merged([*spans, (unfinished, len(data), False)])
        plan, _ = _plan(spans, view, len(data))
        return b"".join(MASK if masked else data[a:b] for a, b, masked in plan)

    @property
    def held(self) -> bytes:
        """The bytes held back (they may be the start of a secret)."""
        return self._tail

    @property
    def longest(self) -> int:
        """Length of the longest form: at most this many bytes are held, escape sequences
        inside a partial form aside."""
        self._refresh()
        return self._matcher.longest

    @property
    def pending(self) -> int:
        """Bytes held back, waiting to see whether they start a secret."""
        return len(self._tail)


class MaskedTextStream:
    """A text stream (``sys.stdout`` of a task) masked before anything reads it.

    A :class:`StreamMasker` per stream, so a value split across two ``write`` calls is masked
    too; what may be the start of a value is held until the next write or ``flush``. Bytes
    written to ``.buffer`` or to the file descriptor are not masked. ``m``: the masker whose
    values are masked (default: the process masker).
    """

    def __init__(self, inner: TextIO, m: masking.Masker | None = None) -> None:
        self._inner = inner
        self._masker = StreamMasker(None if m is None else (lambda: m.stream_forms))
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            out = self._masker.feed(text.encode("utf-8", "surrogateescape"))
            if out:
                self._inner.write(out.decode("utf-8", "surrogateescape"))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            out = self._masker.flush()
            if out:
                self._inner.write(out.decode("utf-8", "surrogateescape"))
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def mask_std_streams(m: masking.Masker | None = None) -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in :class:`MaskedTextStream` (idempotent); they
    stay wrapped for the rest of the process, so a traceback printed at the end is masked too."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, MaskedTextStream):
            setattr(sys, name, cast(TextIO, MaskedTextStream(stream, m)))
