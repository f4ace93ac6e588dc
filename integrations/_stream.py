"""A streaming masker for child-process output: bytes in, bytes out, secrets replaced by ``***``.

It masks every registered value in every encoded form (``masking.encoded_forms``: raw, base64,
URL-encoded, JSON-escaped, hex), also when a value arrives split across two reads. Only the
bytes that could still be the start of a secret are held back between reads: the longest suffix
of what has been read that is a proper prefix of some form. Ordinary output (a progress line, a
prompt) therefore passes at once; a partial secret waits for the next read, or for ``flush()``
at the end of the stream, where the unfinished prefix is masked too.

Matching is bytes-level Aho-Corasick (``ahocorasick-rs``) when installed: a fast non-overlapping
scan decides whether a chunk holds anything, and only then are all (overlapping) matches
collected and merged, so nested or overlapping forms are masked as one span. Without
``ahocorasick-rs`` a compiled ``re`` alternation does the same work, much more slowly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from . import masking

__all__ = ["MASK", "StreamMasker"]

MASK = masking.MASK.encode()

#: bytes, or a slice of a read buffer (``memoryview``): what the relay scans and writes
Buffer: TypeAlias = "bytes | memoryview"

_ac: Any
try:  # ~1.5 GB/s on the fast path; the re fallback manages a few MB/s with hundreds of forms
    import ahocorasick_rs as _ac
except ImportError:  # pragma: no cover - exercised only without the optional dependency
    _ac = None


class _Matcher:
    """Finds every span covered by a form in ``data``, merged.

    One pass over the data: a non-overlapping scan (standard semantics: each match reported is
    the one ending first among those starting at or after where the scan resumed). Every match
    either is reported or overlaps a reported one, and so lies inside ``longest - 1`` bytes of
    it; only those small windows are rescanned for overlapping matches. Output with no secret
    in it (the common case) therefore costs one scan.
    """

    def __init__(self, forms: list[bytes]) -> None:
        self._ac: Any = None
        self._re: Any = None
        self._reach = max((len(f) for f in forms), default=1) - 1
        if not forms:
            return
        if _ac is not None:
            self._ac = _ac.BytesAhoCorasick(
                forms,
                matchkind=_ac.MATCHKIND_STANDARD,
                implementation=_ac.Implementation.DFA,
            )
        else:
            import re

            ordered = sorted(forms, key=len, reverse=True)
            self._re = re.compile(b"|".join(re.escape(f) for f in ordered))

    def spans(self, data: Buffer) -> list[tuple[int, int]]:
        """Merged, sorted ``(start, end)`` spans of ``data`` that any form covers."""
        if self._ac is not None:
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
            raw.sort()
        elif self._re is not None:
            raw = [m.span() for m in self._re.finditer(data)]
        else:
            return []
        merged: list[tuple[int, int]] = []
        for start, end in raw:
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged


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
        self._refresh()
        data: Buffer = self._tail + chunk if self._tail else chunk
        if not self._longest:
            self._tail = b""
            return [data]
        spans = self._matcher.spans(data)
        cut = len(data) - self._held(data)
        return self._emit(data, spans, cut)

    def _emit(self, data: Buffer, spans: list[tuple[int, int]], cut: int) -> list[Buffer]:
        size = len(data)
        if not spans:
            self._tail = bytes(data[cut:])
            return [data[:cut] if cut < size else data]
        out: list[Buffer] = []
        pos = 0
        for start, end in spans:
            if start >= cut:
                break
            if end > cut:  # a match running into the held bytes: hold it whole
                cut = start
                break
            out.append(data[pos:start])
            out.append(MASK)
            pos = end
        out.append(data[pos:cut])
        self._tail = bytes(data[cut:])
        return out

    def flush(self) -> bytes:
        """End of stream: what is held back, masked (an unfinished secret prefix becomes ``***``)."""
        self._refresh()
        data, self._tail = self._tail, b""
        if not data:
            return b""
        spans = self._matcher.spans(data)
        out = b"".join(self._emit(data, spans, len(data)))
        rest, self._tail = self._tail, b""
        held = self._held(out) if out else 0
        if held >= masking.MIN_LENGTH:  # an unfinished secret: print no part of it
            out = out[:-held] + MASK
        return out + rest

    @property
    def pending(self) -> int:
        """Bytes held back, waiting to see whether they start a secret."""
        return len(self._tail)
