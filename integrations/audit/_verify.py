"""Checking an audit trail's chain: pure functions over the bytes of its files.

Each line's ``prev`` must be the link of the line before it (across rotated files) and its
``seq`` one more. The link is HMAC-SHA256 under the audit key (``"chain": "hmac-sha256"``):
without the key nobody can recompute the chain after an edit. A trail written without a key
(``"chain": "sha256"``, or no ``chain``: schema v1) is chained by plain SHA-256, which catches
accidents but not someone who can rewrite the file: verify says so, and with a key given such
links are errors (a rewritten trail would otherwise pass) unless ``unkeyed_ok``. What breaks
tells what happened to the file:

- a line whose hash no longer matches the next line's ``prev`` while ``seq`` runs on: **edited**;
- a gap in ``seq`` with a broken link: **deleted** line(s) (or inserted, when ``seq`` repeats);
- ``seq`` going backwards: **reordered** lines;
- an unterminated, unparseable last line: **torn** by a writer killed mid-write (a warning);
  the same fragment in the middle, with the chain continuing over it, is a torn line too;
- a complete JSON object without ``prev``/``seq`` is **unchained**: not written by a chained
  writer (inserted), always an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GENESIS",
    "LineMarker",
    "Problem",
    "Report",
    "chain_link",
    "chained",
    "order_files",
    "verify_files",
    "verify_trail",
    "with_rotated",
]

GENESIS = "0" * 64
KEYED = "hmac-sha256"


def chain_link(line: str | bytes, key: bytes | None) -> str:
    """The next line's ``prev``: HMAC-SHA256 of ``line`` (as written, without its newline)
    under ``key``, or its plain SHA-256 without a key."""
    data = line.encode("utf-8") if isinstance(line, str) else line
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def chained(record: object) -> bool:
    """Whether a parsed line carries its place in a chain (``prev`` and ``seq``)."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("prev"), str)
        and isinstance(record.get("seq"), int)
        and not isinstance(record.get("seq"), bool)
    )


class LineMarker:
    """Marks lines read in order (``audit tail``) that are not part of the chain as written.

    ``mark(line)`` is ``None`` for a line that links to the one before it (or cannot be
    checked: the first line of a window, a keyed line without the key), else ``"torn"``,
    ``"unchained"`` (no prev/seq), ``"broken link"`` or ``"unkeyed"`` (SHA-256 with a key).
    """

    def __init__(self, key: bytes | None) -> None:
        self._key = key
        self._prev: bytes | None = None

    def mark(self, line: str) -> str | None:
        raw = line.encode("utf-8")
        try:
            record = json.loads(raw)
        except ValueError:
            return "torn"
        if not chained(record):
            return "unchained"
        keyed = record.get("chain") == KEYED
        mark: str | None = None
        if not keyed and self._key is not None:
            mark = "unkeyed"
        elif keyed and self._key is None:
            mark = None  # cannot be checked here; `audit verify` says so
        elif self._prev is not None and record["prev"] != chain_link(
            self._prev, self._key if keyed else None
        ):
            mark = "broken link"
        self._prev = raw
        return mark


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    kind: str  # edited, deleted, reordered, malformed, torn, start, unchained, unkeyed, keyed
    message: str
    fatal: bool = True


@dataclass
class Report:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    problems: list[Problem] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    #: how the links were checked: "hmac-sha256" (with the key), "sha256", or "" (no lines)
    chain: str = ""

    @property
    def ok(self) -> bool:
        return not any(p.fatal for p in self.problems)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "files": self.files,
            "lines": self.lines,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "chain": self.chain,
            "problems": [p.__dict__ for p in self.problems],
        }


_ROTATED = re.compile(r"^(?P<base>.+)\.(?P<n>\d+)$")


def _base(path: Path) -> tuple[str, int]:
    m = _ROTATED.match(path.name)
    if m:
        return str(path.with_name(m.group("base"))), int(m.group("n"))
    return str(path), 0


def order_files(paths: Iterable[Path]) -> list[Path]:
    """Oldest first: ``audit.jsonl.3``, ``audit.jsonl.2``, ``audit.jsonl.1``, ``audit.jsonl``.

    Files of different trails keep the order they were given in.
    """
    given = list(dict.fromkeys(paths))
    first: dict[str, int] = {}
    for i, p in enumerate(given):
        first.setdefault(_base(p)[0], i)

    def key(p: Path) -> tuple[int, int]:
        base, n = _base(p)
        return first[base], -n

    return sorted(given, key=key)


def with_rotated(path: Path) -> list[Path]:
    """``path`` and its rotated siblings (``path.1``, ``path.2``...) that exist."""
    found = [path] if path.exists() else []
    n = 1
    while (sibling := path.with_name(f"{path.name}.{n}")).exists():
        found.append(sibling)
        n += 1
    return found


def verify_trail(
    files: Sequence[tuple[str, bytes]],
    *,
    strict_start: bool = False,
    key: bytes | None = None,
    unkeyed_ok: bool = False,
) -> Report:
    """Verify the chain through ``files`` (name, content), given oldest first.

    ``key`` is the audit key: keyed links are checked with it; without it they cannot be
    checked (an error). With a key, plain SHA-256 links are errors unless ``unkeyed_ok``.
    """
    report = Report(files=[name for name, _ in files])
    prev_raw: bytes | None = None
    prev_seq: int | None = None
    prev_where: tuple[str, int] | None = None
    unkeyed: list[tuple[str, int]] = []
    keyed_without_key: list[tuple[str, int]] = []
    for fi, (name, data) in enumerate(files):
        raw_lines = data.split(b"\n")
        ends_clean = data.endswith(b"\n") or not data
        if data.endswith(b"\n"):
            raw_lines = raw_lines[:-1]
        for li, raw in enumerate(raw_lines, start=1):
            last_of_trail = fi == len(files) - 1 and li == len(raw_lines)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                record = None
            if record is not None and not chained(record):
                # a complete event outside the chain: never a torn line, whatever follows
                report.problems.append(
                    Problem(
                        name,
                        li,
                        "unchained",
                        "a complete line without a place in the chain (no prev/seq): it was "
                        "not written by leaseline's chained writer (inserted?)",
                    )
                )
                continue
            if record is None:
                if last_of_trail and not ends_clean:
                    report.problems.append(
                        Problem(
                            name,
                            li,
                            "torn",
                            "last line is incomplete (a writer was killed mid-write); "
                            "every complete line before it verifies",
                            fatal=False,
                        )
                    )
                else:
                    report.problems.append(
                        Problem(name, li, "malformed", "not a complete audit line", fatal=True)
                    )
                continue
            prev, seq = record["prev"], record["seq"]
            keyed = record.get("chain") == KEYED
            if keyed and key is None:
                keyed_without_key.append((name, li))
            elif not keyed:
                unkeyed.append((name, li))
            link_key = key if keyed else None
            expected = None if prev_raw is None else chain_link(prev_raw, link_key)
            # a torn fragment in the middle is benign when the chain runs on over it
            if report.problems and report.problems[-1].kind == "malformed":
                last = report.problems[-1]
                if (
                    last.file == name
                    and last.line == li - 1
                    and (prev == expected or (keyed and key is None))
                ):
                    report.problems[-1] = Problem(
                        name,
                        li - 1,
                        "torn",
                        "incomplete line left by a killed writer; the chain continues over it",
                        fatal=False,
                    )
            report.lines += 1
            if report.first_seq is None:
                report.first_seq = seq
            if prev_raw is None:
                if prev != GENESIS:
                    report.problems.append(
                        Problem(
                            name,
                            li,
                            "start",
                            f"the trail starts mid-chain (seq {seq}): older files were rotated "
                            "away or not given, or its first lines were deleted",
                            # expected of a rotated file whose predecessors were pruned
                            fatal=strict_start or not _ROTATED.match(Path(name).name),
                        )
                    )
            elif keyed and key is None:
                pass  # cannot be checked; reported once below
            elif prev != expected:
                report.problems.append(_diagnose(name, li, seq, prev_seq, prev_where))
            elif isinstance(prev_seq, int) and seq != prev_seq + 1:
                report.problems.append(
                    Problem(name, li, "edited", f"seq {seq} follows {prev_seq} (edited seq)")
                )
            prev_raw = raw
            prev_seq = seq
            prev_where = (name, li)
            report.last_seq = prev_seq
    if keyed_without_key:
        where = keyed_without_key[0]
        report.problems.append(
            Problem(
                where[0],
                where[1],
                "keyed",
                f"{len(keyed_without_key)} line(s) are chained by HMAC under the audit key, "
                "which was not given: configure [audit] hmac_key (or LEASELINE_AUDIT__HMAC_KEY) "
                "to verify them",
            )
        )
    verified_keyed = report.lines - len(unkeyed) - len(keyed_without_key)
    if key is not None and verified_keyed > 0:
        report.chain = KEYED
    elif unkeyed:
        report.chain = "sha256"
    if unkeyed and report.lines:
        where = unkeyed[0]
        if key is not None and not unkeyed_ok:
            message = (
                f"{len(unkeyed)} line(s) are chained by plain SHA-256, not by the audit key: "
                "anyone who can write the file can recompute such a chain. If they were "
                "written before [audit] hmac_key was set, accept them with --unkeyed-ok"
            )
        elif key is not None:
            message = (
                f"{len(unkeyed)} line(s) are chained by plain SHA-256, accepted (--unkeyed-ok): "
                "they catch damage, not someone who can rewrite the file"
            )
        else:
            message = (
                f"{len(unkeyed)} line(s) are chained by plain SHA-256 (no audit key): this "
                "catches damage, not someone who can rewrite the file; set [audit] hmac_key"
            )
        report.problems.append(
            Problem(
                where[0], where[1], "unkeyed", message, fatal=key is not None and not unkeyed_ok
            )
        )
    return report


def _diagnose(
    name: str, line: int, seq: object, prev_seq: int | None, prev_where: tuple[str, int] | None
) -> Problem:
    where = f"{prev_where[0]}:{prev_where[1]}" if prev_where else "the previous line"
    if isinstance(seq, int) and isinstance(prev_seq, int):
        if seq == prev_seq + 1:
            return Problem(
                name,
                line,
                "edited",
                f"chain broken: {where} (seq {prev_seq}) was modified after it was written",
            )
        if seq > prev_seq + 1:
            missing = seq - prev_seq - 1
            return Problem(
                name,
                line,
                "deleted",
                f"chain broken: {missing} line(s) missing between seq {prev_seq} and {seq}",
            )
        return Problem(
            name,
            line,
            "reordered",
            f"chain broken: seq {seq} after seq {prev_seq} (lines reordered or duplicated)",
        )
    return Problem(name, line, "edited", f"chain broken after {where}")


def verify_files(
    paths: Iterable[Path],
    *,
    strict_start: bool = False,
    key: bytes | None = None,
    unkeyed_ok: bool = False,
) -> Report:
    """Read and verify files (rotated siblings ordered oldest first)."""
    ordered = order_files(paths)
    return verify_trail(
        [(str(p), p.read_bytes()) for p in ordered],
        strict_start=strict_start,
        key=key,
        unkeyed_ok=unkeyed_ok,
    )
