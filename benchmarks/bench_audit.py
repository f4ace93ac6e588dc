"""The audit trail's costs, side by side in one run.

1. Events per second into the file sink (hash chain, cross-process lock, one ``write(2)`` per
   line) with each fsync policy, against the anchor: Python's ``logging.FileHandler`` writing
   the same JSON line (no chain, no lock file, no fsync). Ratio = leaseline / anchor.
2. The hot path: a warm ``Resolver.resolve`` (cache hit) with auditing on (the hit is counted)
   vs off (``NullAuditor``). Ratio = on / off; budget <= 1.5x (the warm path is ~400 ns;
   counting a hit adds one method call, a dict lookup and an atomic increment).

No server needed (the memory store). Run: python benchmarks/bench_audit.py
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EVENTS = {"never": 20000, "interval": 20000, "always": 2000}


def _events_per_second(policy: str, work: Path) -> float:
    from leaseline.audit import Auditor, FileSink

    n = EVENTS[policy]
    auditor = Auditor(FileSink(work / f"{policy}.jsonl", fsync=policy), hmac_key=b"k" * 32)
    started = time.perf_counter()
    for i in range(n):
        auditor.emit(
            "read",
            ref=f"vault://secret/bench/{i % 50}",
            store="vault",
            fields=["api_key"],
            values=["x"],
            latency_ms=1.0,
        )
    auditor.close()
    return n / (time.perf_counter() - started)


def _anchor_per_second(work: Path) -> float:
    from leaseline.audit import actor

    n = EVENTS["never"]
    log = logging.getLogger("bench.anchor")
    log.propagate = False
    handler = logging.FileHandler(work / "anchor.jsonl")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    started = time.perf_counter()
    for i in range(n):
        record = {
            "time": time.time(),
            "event": "read",
            "ref": f"vault://secret/bench/{i % 50}",
            "store": "vault",
            "fields": ["api_key"],
            "outcome": "ok",
            "actor": actor(),
            "latency_ms": 1.0,
        }
        log.info("%s", json.dumps(record, sort_keys=True, separators=(",", ":")))
    handler.close()
    log.removeHandler(handler)
    return n / (time.perf_counter() - started)


def _warm_lookups(work: Path) -> tuple[float, float]:
    """ns per warm resolve with auditing off and on: interleaved rounds, best of each."""
    from leaseline import Resolver
    from leaseline._config import Config
    from leaseline.audit import Auditor, FileSink, NullAuditor
    from leaseline.backends.memory import MemoryBackend

    MemoryBackend.put("memory", "bench/k", {"v": secrets.token_hex(16)})
    off = Resolver(Config.from_mapping({}), auditor=NullAuditor(), handle_signals=False)
    on = Resolver(
        Config.from_mapping({}),
        auditor=Auditor(FileSink(work / "hits.jsonl"), flush_interval=3600),
        handle_signals=False,
    )
    ref = "memory://bench/k#v"
    off.resolve(ref)
    on.resolve(ref)
    number = 100_000
    best = {"off": float("inf"), "on": float("inf")}
    for _ in range(15):
        for name, r in (("off", off), ("on", on)):
            elapsed = timeit.timeit(lambda r=r: r.resolve(ref), number=number)  # type: ignore[misc]
            best[name] = min(best[name], elapsed / number * 1e9)
    off.close()
    on.close()
    return best["off"], best["on"]


def run() -> list[dict[str, object]]:
    work = Path(tempfile.mkdtemp(prefix="leaseline-bench-audit-"))
    rows: list[dict[str, object]] = []
    anchor = max(_anchor_per_second(work) for _ in range(3))
    for policy in ("never", "interval", "always"):
        rate = max(_events_per_second(policy, work) for _ in range(3))
        rows.append(
            {
                "measure": f"events/s, file sink, fsync={policy}",
                "leaseline": round(rate),
                "anchor": round(anchor),
                "ratio": f"{rate / anchor:.2f}x",
                "budget": "-",
                "ok": "yes",
            }
        )
    off, on = _warm_lookups(work)
    ratio = on / off
    rows.append(
        {
            "measure": "warm resolve (cache hit), ns/call, audit on vs off",
            "leaseline": round(on),
            "anchor": round(off),
            "ratio": f"{ratio:.2f}x",
            "budget": "<= 1.5x",
            "ok": "yes" if ratio <= 1.5 else "no",
        }
    )
    return rows


def main() -> None:
    rows = run()
    print("| measure | leaseline | anchor | ratio | budget | ok |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['measure']} | {r['leaseline']} | {r['anchor']} | {r['ratio']} | "
            f"{r['budget']} | {r['ok']} |"
        )


if __name__ == "__main__":
    main()
