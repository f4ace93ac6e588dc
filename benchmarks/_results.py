"""Shared table formatting and section writing for ``benchmarks/RESULTS.md``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def table(
    rows: list[dict[str, Any]], peers: Sequence[tuple[str, str]] = (("anchor", "anchor"),)
) -> str:
    """Markdown table of ``rows``; ``peers`` are (row key, column heading) after ``leaseline``."""
    heads = ["measure", "leaseline", *(h for _, h in peers), "ratio", "budget", "ok"]
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for r in rows:
        ok = "yes" if r["ok"] else "**no**"
        cells = [
            r["measure"],
            r["leaseline"],
            *(r[k] for k, _ in peers),
            r["ratio"],
            r["budget"],
            ok,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def write_section(
    title: str,
    intro: str,
    rows: list[dict[str, Any]],
    peers: Sequence[tuple[str, str]] = (("anchor", "anchor"),),
    notes: str = "",
) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md (``notes`` go after the table)."""
    heading = f"## {title}"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    section = f"{heading}\n\n{intro}\n\n{table(rows, peers)}\n" + (f"\n{notes}\n" if notes else "")
    if heading in text:
        head, _, rest = text.partition(heading)
        following = rest.find("\n## ")
        text = head + section + (rest[following:] if following >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")
