"""Airflow: store requests while parsing a DAG file, and warm ``get_variable`` lookups.

Anchor: ``apache-airflow-providers-hashicorp``'s ``VaultBackend`` on the same OpenBao, same KV
data (``secret/airflow/bench/bench_var_NN``, field ``value``), same Airflow, Airflow's own
secrets cache left at its default (off).

1. A DAG file with 20 top-level ``Variable.get`` calls is parsed 50 times in one process
   (``DagBag``), once per backend, each in a fresh subprocess configured only through
   ``AIRFLOW__SECRETS__BACKEND``/``BACKEND_KWARGS``. Store requests = request lines in OpenBao's
   audit log during that subprocess (logins, mount lookups, child tokens included).
2. Warm lookup (DESIGN.md section 10): one key looked up repeatedly through each backend's
   ``get_variable`` in that same subprocess; per-call time, best of 5 rounds.

Run: ``python benchmarks/bench_airflow.py`` (starts its own OpenBao; ``--write`` also updates the
Airflow section of ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEYS = 20
PARSES = 50
WARM_CALLS = {"leaseline": 20000, "hashicorp": 300}

DAG_FILE = (
    "from datetime import datetime\n\n"
    "from airflow.sdk import DAG, Variable\n\n"
    + "".join(f'v{i:02d} = Variable.get("bench_var_{i:02d}")\n' for i in range(KEYS))
    + '\nwith DAG("bench_parse", schedule=None, start_date=datetime(2025, 1, 1)):\n    pass\n'
)

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag

    dag_file, backend_path, kwargs, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    start = time.perf_counter()
    for _ in range(int(sys.argv[5])):
        bag = DagBag(dag_folder=dag_file, safe_mode=False)
        assert "bench_parse" in bag.dag_ids, bag.import_errors
    parse_s = time.perf_counter() - start

    module, _, name = backend_path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    backend = cls(**kwargs)
    assert backend.get_variable("bench_var_00")
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            backend.get_variable("bench_var_00")
        best = min(best, (time.perf_counter() - t0) / calls)
    print(json.dumps({"parse_s": parse_s, "warm_us": best * 1e6}))
    """
)


def _requests(audit_log: Path) -> int:
    if not audit_log.exists():
        return 0
    count = 0
    with audit_log.open(encoding="utf-8") as fh:
        for line in fh:
            if '"type":"request"' in line.replace(" ", ""):
                count += 1
    return count


def _measure(
    bao: Any, workdir: Path, label: str, backend: str, kwargs: dict[str, Any]
) -> dict[str, float]:
    home = workdir / f"airflow-{label}"
    home.mkdir()
    dag_file = home / "bench_dag.py"
    dag_file.write_text(DAG_FILE, encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "VAULT_", "BAO_", "LEASELINE_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__SECRETS__BACKEND": backend,
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(kwargs),
            "VAULT_ADDR": bao.addr,
            "VAULT_TOKEN": bao.root_token,
        }
    )
    before = _requests(bao.audit_log)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(dag_file),
            backend,
            json.dumps(kwargs),
            str(WARM_CALLS[label]),
            str(PARSES),
        ],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{label} benchmark child failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    # the warm loop makes (calls x 5 + 1) requests for an uncached backend: parse requests only
    warm_requests = 0 if label == "leaseline" else WARM_CALLS[label] * 5 + 1
    result["requests"] = _requests(bao.audit_log) - before - warm_requests
    return result


def run() -> list[dict[str, object]]:
    sys.path.insert(0, str(ROOT))
    from tests.servers import OpenBao

    with tempfile.TemporaryDirectory(prefix="bench-airflow-") as tmp:
        workdir = Path(tmp)
        bao = OpenBao.start(workdir / "openbao")
        try:
            client = bao.client()
            for i in range(KEYS):
                client.secrets.kv.v2.create_or_update_secret(
                    path=f"airflow/bench/bench_var_{i:02d}",
                    secret={"value": f"bench-value-{i:02d}"},
                    mount_point="secret",
                )
            ours = _measure(
                bao,
                workdir,
                "leaseline",
                "leaseline.airflow.LeaselineBackend",
                {"variables_ref": "vault://secret/airflow/bench/{key}"},
            )
            theirs = _measure(
                bao,
                workdir,
                "hashicorp",
                "airflow.providers.hashicorp.secrets.vault.VaultBackend",
                {
                    "url": bao.addr,
                    "token": bao.root_token,
                    "mount_point": "secret",
                    "variables_path": "airflow/bench",
                    "connections_path": None,
                    "config_path": None,
                    "kv_engine_version": 2,
                },
            )
        finally:
            bao.stop()
    req_ratio = theirs["requests"] / max(1.0, ours["requests"])
    warm_ratio = theirs["warm_us"] / ours["warm_us"]
    return [
        {
            "measure": f"store requests, DAG with {KEYS} Variable.get parsed {PARSES}x",
            "leaseline": int(ours["requests"]),
            "anchor": int(theirs["requests"]),
            "ratio": f"{req_ratio:.1f}x fewer",
            "budget": ">= 20x fewer",
            "ok": req_ratio >= 20,
        },
        {
            "measure": f"time to parse {PARSES}x, s",
            "leaseline": round(ours["parse_s"], 2),
            "anchor": round(theirs["parse_s"], 2),
            "ratio": f"{theirs['parse_s'] / ours['parse_s']:.1f}x faster",
            "budget": "-",
            "ok": True,
        },
        {
            "measure": "warm get_variable (repeated key), us/call",
            "leaseline": round(ours["warm_us"], 2),
            "anchor": round(theirs["warm_us"], 1),
            "ratio": f"{warm_ratio:.0f}x faster",
            "budget": ">= 100x faster",
            "ok": warm_ratio >= 100,
        },
    ]


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| measure | leaseline | hashicorp VaultBackend | ratio | budget | ok |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ok = "yes" if r["ok"] else "NO"
        lines.append(
            f"| {r['measure']} | {r['leaseline']} | {r['anchor']} | {r['ratio']} | {r['budget']} | {ok} |"
        )
    return "\n".join(lines)


SECTION_START = "## airflow (`python benchmarks/bench_airflow.py`)"


def write_results(rows: list[dict[str, object]]) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    section = (
        f"{SECTION_START}\n\n"
        "One OpenBao dev server for both, same KV data, Airflow 3 with its secrets cache at the "
        f"default (off). A DAG file with {KEYS} top-level `Variable.get` calls is parsed "
        f"{PARSES} times by `DagBag` in one process per backend; store requests are OpenBao "
        "audit-log request lines during that process (logins, mount lookups and child tokens "
        "included). Warm lookup: one key through each backend's `get_variable`, best of 5 "
        "rounds. 2-core shared machine.\n\n"
        f"{table(rows)}\n"
    )
    if SECTION_START in text:
        head, _, rest = text.partition(SECTION_START)
        following = rest.find("\n## ")
        tail = rest[following:] if following >= 0 else ""
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    results = run()
    print(table(results))
    if "--write" in sys.argv[1:]:
        write_results(results)
