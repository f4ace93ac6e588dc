"""Shared table formatting and section writing for ``benchmarks/RESULTS.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| measure | leaseline | anchor | ratio | budget | ok |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ok = "yes" if r["ok"] else "**no**"
        lines.append(
            f"| {r['measure']} | {r['leaseline']} | {r['anchor']} | {r['ratio']} "
            f"| {r['budget']} | {ok} |"
        )
    return "\n".join(lines)


def write_section(title: str, intro: str, rows: list[dict[str, Any]]) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md."""
    heading = f"## {title}"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    section = f"{heading}\n\n{intro}\n\n{table(rows)}\n"
    if heading in text:
        head, _, rest = text.partition(heading)
        following = rest.find("\n## ")
        text = head + section + (rest[following:] if following >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")
