"""`leaseline run` against its anchors (DESIGN.md section 10), side by side in one run.

1. `leaseline run` with 3 references, to `true`, vs a minimal hvac script that reads the same 3
   secrets and execs `true` (budget: <= 1.3x its time). Median of 15 interleaved runs, each a
   fresh process: interpreter start, imports, login/child token, reads, spawn, revocation, exit.
2. Masked output: `leaseline run` (100 values registered, 10 encoded forms each) of `cat` on a
   64 MB file, vs plain `cat` of it; with Hyperscan (the `fast` extra, installed by the test
   command) and without it (Aho-Corasick). Both are read the same way, by this process, through a
   pipe in 1 MiB reads (`cat FILE | reader` vs `leaseline run -- cat FILE | reader`);
   throughput from the first byte to EOF, so start-up is not counted but everything after the
   first byte is (for leaseline: the extra pipe hop, the scan, and its exit after `cat` ends).
   Median of 9 interleaved runs (budget: >= 1/3). Two sets of values: ``bench-`` + hex (every
   form of one encoding starts with the same byte) and hex with no common prefix.

Starts its own OpenBao (tests.servers.OpenBao). Run: python benchmarks/bench_cli.py
"""

from __future__ import annotations

import base64
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._results import table, write_section  # noqa: E402

LEASELINE = [sys.executable, "-m", "leaseline.cli"]
# the same command with the `fast` extra's Hyperscan made unimportable: the Aho-Corasick path
WITHOUT_FAST = [
    sys.executable,
    "-c",
    "import sys; sys.modules['hyperscan'] = None; from leaseline.cli import main; main()",
]
RUNS = 15
THROUGHPUT_RUNS = 9
SIZE = 64 * 1024 * 1024

HVAC_SCRIPT = """
import os, sys, hvac
client = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])
env = dict(os.environ)
for i, path in enumerate(sys.argv[1:]):
    data = client.secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True)
    env[f"S{i}"] = data["data"]["data"]["value"]
os.execvpe("true", ["true"], env)
"""


def _time(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _throughput(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    first = os.read(fd, 1 << 20)
    started = time.perf_counter()
    total = len(first)
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        total += len(chunk)
    elapsed = time.perf_counter() - started
    proc.wait()
    assert proc.returncode == 0, proc.returncode
    return (total - len(first)) / elapsed, total


def _masking(
    env: dict[str, str],
    client: Any,
    data: Path,
    path: str,
    values: dict[str, str],
    line_source: str,
    label_set: str,
) -> list[dict[str, object]]:
    """Masked `cat` of 64 MB holding 50 occurrences of ``values``, both engines, vs plain `cat`."""
    client.secrets.kv.v2.create_or_update_secret(path=path, secret=values, mount_point="secret")
    lines = [line_source[i : i + 99] for i in range(0, len(line_source), 99)]
    some = list(values.values())
    for i in range(0, len(lines), len(lines) // 50):  # a few real occurrences to mask
        lines[i] = f"leak {some[i % 100]}"[:99]
    data.write_text("\n".join(lines))
    many = [arg for name in values for arg in ("--env", f"V_{name}=vault://secret/{path}#{name}")]
    masked_cmd = [*LEASELINE, "run", *many, "--", "cat", str(data)]
    slow_cmd = [*WITHOUT_FAST, "run", *many, "--", "cat", str(data)]
    plain_cmd = ["cat", str(data)]
    _throughput(plain_cmd, env)
    masked, slow, plain = [], [], []
    for _ in range(THROUGHPUT_RUNS):
        masked.append(_throughput(masked_cmd, env)[0])
        plain.append(_throughput(plain_cmd, env)[0])
        slow.append(_throughput(slow_cmd, env)[0])
    m, p, w = statistics.median(masked), statistics.median(plain), statistics.median(slow)
    rows: list[dict[str, object]] = []
    for label, value in (("Hyperscan, extra `fast`", m), ("ahocorasick-rs, no extra", w)):
        rows.append(
            {
                "measure": f"masked `cat` 64 MB, 100 values{label_set}, {label} (MB/s)",
                "leaseline": round(value / 1e6),
                "anchor": round(p / 1e6),
                "ratio": round(value / p, 2),
                "budget": ">= 0.33x",
                "ok": value / p >= 1 / 3,
            }
        )
    return rows


def run() -> list[dict[str, object]]:
    from tests.servers import OpenBao

    work = Path(tempfile.mkdtemp(prefix="leaseline-bench-cli-"))
    bao = OpenBao.start(work / "bao")
    rows: list[dict[str, object]] = []
    try:
        client = bao.client()
        paths = []
        for i in range(3):
            path = f"bench/cli-{i}"
            client.secrets.kv.v2.create_or_update_secret(
                path=path, secret={"value": secrets.token_hex(16)}, mount_point="secret"
            )
            paths.append(path)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "LEASELINE_"))}
        env.update(bao.env())
        # Compare installed-package conditions: byte-code caches on, written by the warm-up runs
        # (hvac's are in site-packages already).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["LEASELINE_LEDGER__PATH"] = str(work / "ledger.jsonl")
        env["LEASELINE_CONFIG"] = str(work / "none.toml")
        (work / "none.toml").write_text("")

        refs = [
            arg for i, p in enumerate(paths) for arg in ("--env", f"S{i}=vault://secret/{p}#value")
        ]
        ours_cmd = [*LEASELINE, "run", *refs, "--", "true"]
        anchor_cmd = [sys.executable, "-c", HVAC_SCRIPT, *paths]
        _time(ours_cmd, env), _time(anchor_cmd, env)  # warm the page cache
        ours, anchor = [], []
        for _ in range(RUNS):  # interleaved, so machine noise hits both alike
            ours.append(_time(ours_cmd, env))
            anchor.append(_time(anchor_cmd, env))
        o, a = statistics.median(ours), statistics.median(anchor)
        rows.append(
            {
                "measure": "run with 3 refs, to `true` (median s)",
                "leaseline": round(o, 3),
                "anchor": round(a, 3),
                "ratio": round(o / a, 2),
                "budget": "<= 1.3x",
                "ok": o / a <= 1.3,
            }
        )

        # the table's set: every value starts with "bench-", so each encoding's forms share a
        # first byte (a prefilter case for Aho-Corasick); and values with nothing in common, as
        # real credentials have
        sets = {
            "": {f"f{i}": f"bench-{secrets.token_hex(12)}" for i in range(100)},
            ", no common prefix": {f"f{i}": secrets.token_hex(15) for i in range(100)},
        }
        line_source = base64.b64encode(os.urandom(SIZE * 3 // 4 + 3)).decode()[:SIZE]
        for k, (label_set, values) in enumerate(sets.items()):
            data = work / f"out{k}.txt"
            rows += _masking(env, client, data, f"bench/many{k}", values, line_source, label_set)
    finally:
        bao.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return rows


INTRO = """\
One OpenBao dev server for all. Run: median of 15 interleaved fresh processes each (byte-code
caches on for both; `sys.executable` directly, no shims). Masking: 64 MB of base64 text lines
(50 of them holding a registered value), 100 values registered through 100 `--env` references;
two sets: the values of the earlier table (`bench-` + 24 hex digits: every form of one encoding
starts with the same byte), and values with nothing in common (30 hex digits), as real
credentials are. Both sides are read identically: by the benchmark process, through a pipe, in
1 MiB reads (`cat FILE | reader` vs `leaseline run -- cat FILE | reader`); throughput from the
first byte to EOF, so start-up is excluded but the extra pipe hop, the scan and leaseline's exit
after `cat` ends are included; median of 9 interleaved runs. Each round below is a full,
separate measurement, one after the other, on a 2-core machine shared with other helpers' test
runs (load average 3-7 while measuring): plain `cat` itself now runs at ~4.2 GB/s (2.5-2.9 when
the earlier table was made), which moves the masking ratio more than anything leaseline does.

Issue 18 (masking engine), and what it costs:
- forms per value: 10 before; now also base64 at the two other alignments (standard and URL-safe),
  lower-case `%xx`, JSON inside JSON, UTF-16LE (and `\\r\\n` variants of multi-line values): for
  these hex values 7 distinct forms instead of 4 (700 patterns instead of 400).
- the automaton holds each form's first 64 bytes and each hit is checked against the whole form;
  a stream holds back at most one form (before: a set of every prefix of every form, gigabytes
  for one 20 KB value). Output holding escape bytes is also matched without its escape sequences.
  The relay finds escape bytes in its own buffer (memchr); as a Hyperscan pattern a single byte
  cost ~20% of its scan.
- the code before these changes, measured the same way minutes earlier (same machine, same
  noise), `bench-` set, 3 rounds: Hyperscan 721 / 1167 / 1114 MB/s, ahocorasick-rs 554 / 762 /
  769 MB/s, `cat` 3915-4204 MB/s; both sets, 2 rounds at load average 11-14: Hyperscan 398 / 741
  (`bench-`) and 744 / 437 (no common prefix), ahocorasick-rs 270 / 503 and 320 / 201. Hyperscan
  is unchanged within the noise; ahocorasick-rs on values with no common prefix too (relay
  alone, in-process: 563 vs 492 MB/s at load 0.5, 258-277 vs 266 MB/s at load 11).
  ahocorasick-rs (no `fast` extra) on the `bench-` set is ~2x slower: it lost its start-byte
  prefilter, which needs every form to start with one of at most 3 bytes, and the forms at the
  two other base64 alignments add 2 (in-process: 685-814 MB/s before, 271-305 after).
- the 1/3-of-`cat` budget is met by neither version today: `cat` runs ~1.6x faster than when
  the earlier table was made, the masked runs do not.
- where the time goes (relay thread, per 64 MB, Hyperscan): ~20 ms scanning, ~8 ms reading and
  ~10 ms writing (pipe copies), plus ~20 ms compiling the database once, before the first byte."""


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole measurement")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = []
    for k in range(1, args.rounds + 1):
        for r in run():
            if args.rounds > 1:
                r = {**r, "measure": f"round {k}: {r['measure']}"}
            rows.append(r)
    print(table(rows))
    if args.write:
        write_section("cli (`python benchmarks/bench_cli.py`)", INTRO, rows)


if __name__ == "__main__":
    main()
