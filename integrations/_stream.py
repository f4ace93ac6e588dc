"""A streaming masker for child-process output: bytes in, bytes out, secrets replaced by ``***``.

It masks every registered value in every encoded form (``masking.encoded_forms``: raw, base64,
URL-encoded, JSON-escaped, hex), also when a value arrives split across two reads. Only the
bytes that could still be the start of a secret are held back between reads: the longest suffix
of what has been read that is a proper prefix of some form. Ordinary output (a progress line, a
prompt) therefore passes at once; a partial secret waits for the next read, or for ``flush()``
at the end of the stream, where the unfinished prefix is masked too.

Matching (see :class:`_Matcher`) is Aho-Corasick (``ahocorasick-rs``), or Hyperscan for output in
bulk when the ``fast`` extra is installed; overlapping and nested forms are masked as one span.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from . import masking

__all__ = ["MASK", "StreamMasker"]

MASK = masking.MASK.encode()

#: bytes, or a slice of a read buffer (``memoryview``): what the relay scans and writes
Buffer: TypeAlias = "bytes | memoryview"
#: ``(start, end, masked)``: a piece of the data to write as is, or as ``***``
Segment: TypeAlias = "tuple[int, int, bool]"

#: chunks at least this large go to Hyperscan when it is installed (its import and database
#: build cost milliseconds, which output in bulk repays and a prompt or a log line does not)
BULK_SCAN = 64 * 1024

#: with this many forms, Hyperscan is used for every chunk: building an Aho-Corasick DFA of them
#: costs as much as compiling Hyperscan's database, and one engine is enough
MANY_FORMS = 64


class _Matcher:
    """Finds every span covered by a form in ``data``, merged; engines are built on first use.

    - Aho-Corasick (``ahocorasick-rs``, a core dependency, ~1.6 GB/s with hundreds of forms):
      one non-overlapping scan (standard semantics: each match reported is the one ending first
      among those starting at or after where the scan resumed). Every match either is reported
      or overlaps a reported one, and so lies inside ``longest - 1`` bytes of it; only those
      small windows are rescanned for overlapping matches, so output with no secret in it costs
      one scan.
    - Hyperscan (extra ``fast``; x86-64 Linux, macOS, Windows; ~3.4 GB/s, SIMD literal
      matching) for chunks of :data:`BULK_SCAN` bytes and more: it reports every match with
      its leftmost start, overlapping ones included, in one pass.
    - A compiled ``re`` alternation when neither is importable (a few MB/s).
    """

    def __init__(self, forms: list[bytes]) -> None:
        self._forms = forms
        self._reach = max((len(f) for f in forms), default=1) - 1
        self._ac: Any = None
        self._re: Any = None
        self._hs: Any = None  # (database, scratch); False: not available
        self.engine = "none" if not forms else ""

    def spans(self, data: Buffer) -> list[tuple[int, int]]:
        """Merged, sorted ``(start, end)`` spans of ``data`` that any form covers."""
        if not self._forms:
            return []
        bulk = len(data) >= BULK_SCAN or len(self._forms) >= MANY_FORMS
        if bulk and self._hs is not False and self._hyperscan():
            raw = self._hs_spans(data)
        else:
            raw = self._ac_spans(data)
        if not raw:
            return []
        raw.sort()
        merged: list[tuple[int, int]] = []
        for start, end in raw:
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged

    def _ac_spans(self, data: Buffer) -> list[tuple[int, int]]:
        if self._ac is None and self._re is None:
            self._build_ac()
        if self._ac is None:
            return [m.span(1) for m in self._re.finditer(data)]
        found = self._ac.find_matches_as_indexes(data, overlapping=False)
        if not found:
            return []
        reach, size = self._reach, len(data)
        windows: list[list[int]] = []
        for _, start, end in found:
            lo, hi = max(0, start - reach), min(size, end + reach)
            if windows and lo <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], hi)
            else:
                windows.append([lo, hi])
        raw: list[tuple[int, int]] = []
        for lo, hi in windows:
            raw.extend(
                (lo + s, lo + e)
                for _, s, e in self._ac.find_matches_as_indexes(data[lo:hi], overlapping=True)
            )
        return raw

    def _build_ac(self) -> None:
        try:
            import ahocorasick_rs as ac
        except ImportError:  # pragma: no cover - a core dependency; kept for broken installs
            import re

            # a lookahead finds the longest form starting at every position, overlapping ones too
            ordered = sorted(self._forms, key=len, reverse=True)
            self._re = re.compile(b"(?=(" + b"|".join(re.escape(f) for f in ordered) + b"))")
            self.engine = self.engine or "re"
            return
        self._ac = ac.BytesAhoCorasick(
            self._forms, matchkind=ac.MATCHKIND_STANDARD, implementation=ac.Implementation.DFA
        )
        self.engine = self.engine or "ahocorasick-rs"

    def _hyperscan(self) -> bool:
        if self._hs is None:
            self._hs = _hyperscan_db(self._forms) or False
            if self._hs:
                self.engine = "hyperscan"
        return bool(self._hs)

    def _hs_spans(self, data: Buffer) -> list[tuple[int, int]]:
        db, scratch = self._hs
        raw: list[tuple[int, int]] = []
        add = raw.append

        def found(_id: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            add((start, end))

        db.scan(data, match_event_handler=found, scratch=scratch)
        return raw


def _hyperscan_db(forms: list[bytes]) -> tuple[Any, Any] | None:
    """A block-mode Hyperscan database of the literal forms, and its scratch space; ``None``
    when Hyperscan is not installed or refuses (a CPU without SSSE3, say)."""
    try:
        import hyperscan
    except ImportError:
        return None
    try:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(
            expressions=forms,
            ids=list(range(len(forms))),
            elements=len(forms),
            flags=[hyperscan.HS_FLAG_SOM_LEFTMOST] * len(forms),
            literal=True,
        )
        return db, hyperscan.Scratch(db)
    except hyperscan.error:
        return None


class StreamMasker:
    """Mask one output stream. ``feed(chunk)`` returns what may be written now; ``flush()`` the rest.

    ``forms`` is a callable returning the current set of strings to mask (by default the process
    masker's ``forms``); it is re-read on every ``feed`` and the automaton rebuilt when it changes,
    so a value registered mid-stream (a rotated credential) is masked from then on.

    >>> s = StreamMasker(lambda: frozenset({"hunter22"}))
    >>> s.feed(b"pw: hunt") + s.feed(b"er22!\\n") + s.flush()
    b'pw: ***!\\n'
    """

    def __init__(self, forms: Callable[[], Iterable[str]] | None = None) -> None:
        self._source = forms or (lambda: masking.masker().forms)
        self._seen: object = None
        self._matcher = _Matcher([])
        self._prefixes: frozenset[bytes] = frozenset()
        self._longest = 0
        self._tail = b""
        self._refresh()

    def _refresh(self) -> None:
        current = self._source()
        if current is self._seen:
            return
        self._seen = current
        forms = sorted({f.encode() for f in current if f})
        self._matcher = _Matcher(forms)
        self._prefixes = frozenset(f[:i] for f in forms for i in range(1, len(f)))
        self._longest = max((len(f) for f in forms), default=0)

    def _held(self, data: Buffer) -> int:
        """Length of the longest suffix of ``data`` that may be the start of a form."""
        prefixes = self._prefixes
        if not prefixes:
            return 0
        end = bytes(data[-(self._longest - 1) :]) if self._longest > 1 else b""
        for k in range(len(end), 0, -1):
            if end[-k:] in prefixes:
                return k
        return 0

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

    def segments(self, data: Buffer) -> list[Segment]:
        """The plan for ``data``, which must start with the held bytes (:attr:`held`): the
        ``(start, end, masked)`` pieces covering ``data[:cut]`` in order (a masked piece is
        written as ``***``); ``data[cut:]`` is held from then on. A relay that reads into its
        own buffer puts :attr:`held` in front of each read and so never concatenates."""
        self._refresh()
        size = len(data)
        if not self._longest:
            self._tail = b""
            return [(0, size, False)] if size else []
        spans = self._matcher.spans(data)
        return self._plan(data, spans, size - self._held(data))

    def _plan(self, data: Buffer, spans: list[tuple[int, int]], cut: int) -> list[Segment]:
        out: list[Segment] = []
        pos = 0
        for start, end in spans:
            if start >= cut:
                break
            if end > cut:  # a match running into the held bytes: hold it whole
                cut = start
                break
            if start > pos:
                out.append((pos, start, False))
            out.append((start, end, True))
            pos = end
        if cut > pos:
            out.append((pos, cut, False))
        self._tail = bytes(data[cut:])
        return out

    def flush(self) -> bytes:
        """End of stream: what is held back, masked (an unfinished secret prefix becomes ``***``)."""
        self._refresh()
        data, self._tail = self._tail, b""
        if not data:
            return b""
        plan = self._plan(data, self._matcher.spans(data), len(data))
        out = b"".join(MASK if masked else data[a:b] for a, b, masked in plan)
        rest, self._tail = self._tail, b""
        held = self._held(out) if out else 0
        if held >= masking.MIN_LENGTH:  # an unfinished secret: print no part of it
            out = out[:-held] + MASK
        return out + rest

    @property
    def held(self) -> bytes:
        """The bytes held back (they may be the start of a secret)."""
        return self._tail

    @property
    def longest(self) -> int:
        """Length of the longest form: at most this minus one bytes are ever held."""
        self._refresh()
        return self._longest

    @property
    def pending(self) -> int:
        """Bytes held back, waiting to see whether they start a secret."""
        return len(self._tail)
