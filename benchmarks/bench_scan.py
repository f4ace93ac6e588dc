"""Scan throughput and accuracy: ``leaseline scan`` against detect-secrets alone, same tree.

The tree is the synthetic corpus of ``leaseline.scan.corpus`` (values generated at run time),
copied ``COPIES`` times with plain modules as filler. Both scanners run in this process, one core
each (detect-secrets with ``num_processors=1``; it would fork a pool otherwise), default settings.
Run: ``python benchmarks/bench_scan.py``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

COPIES = 20
FILLER = 10


def _best(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> list[dict[str, object]]:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings
    from leaseline.scan import Scanner
    from leaseline.scan.corpus import make_corpus, score

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        planted = make_corpus(root, copies=COPIES, filler=FILLER)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        size = sum((root / f).stat().st_size for f in files)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            ours: list[tuple[str, int, str]] = []

            def leaseline_scan() -> None:
                ours[:] = [(f.path, f.line, f.secret) for f in Scanner().scan_paths(["."])]

            theirs: list[tuple[str, int, str]] = []

            def detect_secrets_scan() -> None:
                with default_settings():
                    coll = SecretsCollection(root=str(root))
                    coll.scan_files(*files, num_processors=1)
                theirs[:] = [(fn, s.line_number, s.secret_value or "") for fn, s in coll]

            t_ours = _best(leaseline_scan)
            t_ds = _best(detect_secrets_scan)
        finally:
            os.chdir(cwd)
        tp, fp, _ = score(planted, ours, root)
        tp_ds, fp_ds, _ = score(planted, theirs, root)
    mb = size / 1e6
    return [
        {
            "measure": f"throughput, MB/s ({len(files)} files, {mb:.1f} MB)",
            "leaseline": round(mb / t_ours, 2),
            "anchor": round(mb / t_ds, 2),
            "ratio": round(t_ds / t_ours, 1),
            "budget": ">= 1.0x",
            "ok": t_ds / t_ours >= 1.0,
        },
        {
            "measure": f"true positives (of {len(planted)} planted)",
            "leaseline": tp,
            "anchor": tp_ds,
            "ratio": round(tp / max(tp_ds, 1), 2),
            "budget": "more",
            "ok": tp > tp_ds,
        },
        {
            "measure": "false positives",
            "leaseline": fp,
            "anchor": fp_ds,
            "ratio": None,
            "budget": "no more",
            "ok": fp <= fp_ds,
        },
    ]


def main() -> None:
    rows = run()
    print(f"{'measure':<48} {'leaseline':>10} {'detect-secrets':>15} {'ratio':>7} {'budget':>9} ok")
    for r in rows:
        print(
            f"{r['measure']!s:<48} {r['leaseline']!s:>10} {r['anchor']!s:>15} "
            f"{r['ratio']!s:>7} {r['budget']!s:>9} {r['ok']}"
        )


if __name__ == "__main__":
    main()
