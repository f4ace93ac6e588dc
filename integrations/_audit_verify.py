"""Checking an audit trail's hash chain: pure functions over the bytes of its files.

Each line's ``prev`` must be the SHA-256 of the line before it (across rotated files) and its
``seq`` one more. What breaks tells what happened to the file:

- a line whose hash no longer matches the next line's ``prev`` while ``seq`` runs on: **edited**;
- a gap in ``seq`` with a broken link: **deleted** line(s) (or inserted, when ``seq`` repeats);
- ``seq`` going backwards: **reordered** lines;
- an unterminated, unparseable last line: **torn** by a writer killed mid-write (a warning);
  the same fragment in the middle, with the chain continuing over it, is a torn line too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Problem", "Report", "order_files", "verify_files", "verify_trail", "with_rotated"]

GENESIS = "0" * 64


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    kind: str  # edited, deleted, inserted, reordered, malformed, torn, start
    message: str
    fatal: bool = True


@dataclass
class Report:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    problems: list[Problem] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None

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


def verify_trail(files: Sequence[tuple[str, bytes]], *, strict_start: bool = False) -> Report:
    """Verify the chain through ``files`` (name, content), given oldest first."""
    report = Report(files=[name for name, _ in files])
    prev_hash: str | None = None
    prev_seq: int | None = None
    prev_where: tuple[str, int] | None = None
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
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                prev = record["prev"]
                seq = record.get("seq")
            except (ValueError, KeyError, UnicodeDecodeError):
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
            # a torn fragment in the middle is benign when the chain runs on over it
            if report.problems and report.problems[-1].kind == "malformed":
                last = report.problems[-1]
                if last.file == name and last.line == li - 1 and prev == prev_hash:
                    report.problems[-1] = Problem(
                        name,
                        li - 1,
                        "torn",
                        "incomplete line left by a killed writer; the chain continues over it",
                        fatal=False,
                    )
            report.lines += 1
            if report.first_seq is None:
                report.first_seq = seq if isinstance(seq, int) else None
            if prev_hash is None:
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
            elif prev != prev_hash:
                report.problems.append(_diagnose(name, li, seq, prev_seq, prev_where))
            elif isinstance(seq, int) and isinstance(prev_seq, int) and seq != prev_seq + 1:
                report.problems.append(
                    Problem(name, li, "edited", f"seq {seq} follows {prev_seq} (edited seq)")
                )
            prev_hash = hashlib.sha256(raw).hexdigest()
            prev_seq = seq if isinstance(seq, int) else None
            prev_where = (name, li)
            report.last_seq = prev_seq
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


def verify_files(paths: Iterable[Path], *, strict_start: bool = False) -> Report:
    """Read and verify files (rotated siblings ordered oldest first)."""
    ordered = order_files(paths)
    return verify_trail([(str(p), p.read_bytes()) for p in ordered], strict_start=strict_start)
