"""Terminal escape sequences: a view of output without them, and the map back to the original.

Coloured output puts escape sequences between the characters of a value (Rich's highlighter
prints ``sk-proj-`` and the digits after it in different colours), so a masker matching the
bytes as they are would miss it. The maskers also match on :func:`strip`'s view and map each
span back (:meth:`View.span`); the escape sequences inside a masked span are kept
(:meth:`View.escapes`), so the colours after it are what the program meant.

Recognised (ECMA-48): CSI (``ESC [`` ... final byte: colours, cursor moves), OSC (``ESC ]`` ...
BEL or ``ESC \\``: titles, hyperlinks), DCS/SOS/PM/APC strings (``ESC P``/``X``/``^``/``_`` ...
``ESC \\``) and two-byte escapes (``ESC (B``, ``ESC 7``...). A sequence cut off at the end of a
read is :attr:`View.partial`: the stream masker holds it back until the rest arrives.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right

__all__ = ["ESC", "View", "strip"]

ESC = b"\x1b"
_SEQUENCE = re.compile(
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\"
    rb"|[ -/]*[0-OQ-WYZ\\`-~])"  # the last: two-byte escapes, not the starts of the others
)
#: the start of a sequence running to the end of the data (its rest is in the next read)
_PARTIAL = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[ -/]*)")
#: a longer unfinished "sequence" is not held back as one (an OSC never terminated, say)
MAX_PARTIAL = 4096


class View:
    """``text``: the data without escape sequences; positions in it map back to the data."""

    __slots__ = ("_escape_starts", "_origins", "_starts", "escapes_all", "partial", "text")

    def __init__(
        self,
        text: bytes,
        starts: list[int],
        origins: list[int],
        escapes: list[tuple[int, int]],
        partial: int | None,
    ) -> None:
        self.text = text
        self._starts = starts  # where each kept piece starts in ``text``
        self._origins = origins  # ... and in the original data
        self.escapes_all = escapes
        self._escape_starts = [s for s, _ in escapes]
        #: where an escape sequence cut off by the end of the data starts, if one is
        self.partial = partial

    def origin(self, pos: int) -> int:
        """The position in the data of ``text[pos]``."""
        i = bisect_right(self._starts, pos) - 1
        return self._origins[i] + (pos - self._starts[i])

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The data's ``(start, end)`` for ``text[start:end]`` (``end > start``)."""
        return self.origin(start), self.origin(end - 1) + 1

    def escapes(self, start: int, end: int) -> list[tuple[int, int]]:
        """The escape sequences lying inside ``data[start:end]``."""
        i = bisect_left(self._escape_starts, start)
        out = []
        for s, e in self.escapes_all[i:]:
            if e > end:
                break
            out.append((s, e))
        return out


def strip(data: bytes | memoryview) -> View:
    """The view of ``data`` without its escape sequences."""
    size = len(data)
    keep: list[tuple[int, int]] = []
    escapes: list[tuple[int, int]] = []
    pos = 0
    for m in _SEQUENCE.finditer(data):
        s, e = m.span()
        if s > pos:
            keep.append((pos, s))
        escapes.append((s, e))
        pos = e
    partial = None
    base = max(pos, size - MAX_PARTIAL)
    rest = bytes(data[base:])
    at = rest.find(ESC)
    while at >= 0:  # the first escape after the last whole sequence that runs to the end
        if _PARTIAL.fullmatch(data, base + at) is not None:
            partial = base + at
            break
        at = rest.find(ESC, at + 1)
    end = size if partial is None else partial
    if end > pos:
        keep.append((pos, end))
    if partial is not None:
        escapes.append((partial, size))
    starts, origins, pieces, length = [], [], [], 0
    for a, b in keep:
        starts.append(length)
        origins.append(a)
        pieces.append(data[a:b])
        length += b - a
    if not starts:
        starts, origins = [0], [0]
    return View(b"".join(pieces), starts, origins, escapes, partial)
