"""The two README commands on a fresh machine: a clean clone, an empty HOME, a chosen python3.

For each base interpreter (default: Debian's /usr/bin/python3 and, when present, a pyenv one), in
a fresh ``git clone`` of this repository's HEAD, with ``HOME`` an empty folder (no uv or pip
cache) and the interpreter's folder first on PATH:

1. ``scripts/demo`` (README command 1), then ``scripts/test tests/core`` (README command 2 with
   the core tests), each timed from nothing;
2. both again, timed (the environment is reused);
3. ``pip list`` of the base interpreter before and after: nothing may be installed into it.

With ``--ci`` it also runs ``CI=true bash .ci/run`` (lint, types, the whole suite) in one more
fresh clone with the first interpreter. Budgets (DESIGN.md section 10 and the fresh-machine
issue): demo < 5 min, set-up + tests/core < 6 min, .ci/run < 25 min.

    python benchmarks/bench_setup.py [--python /usr/bin/python3 ...] [--ci] [--write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import table, write_section

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {"demo": 300.0, "core": 360.0, "ci": 1500.0}


def default_pythons() -> list[str]:
    """Debian's /usr/bin/python3 and the python3 first on PATH (e.g. pyenv's), when different."""
    found = [p for p in ("/usr/bin/python3",) if os.path.exists(p)]
    try:
        out = subprocess.run(
            ["python3", "-c", "import sys; print(sys.executable)"],
            env={
                **os.environ,
                "PATH": os.pathsep.join(
                    d
                    for d in os.environ["PATH"].split(os.pathsep)
                    if d != os.path.join(sys.prefix, "bin")  # not this venv's own python3
                ),
            },
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    if out and Path(out).resolve() not in {Path(p).resolve() for p in found}:
        found.append(out)
    return found


def clean_env(python: str, home: Path, ci: bool = False) -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "UV_", "PYTHONPATH", "PYENV_VERSION", "CONDA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(Path(python).parent), "/usr/local/bin", "/usr/bin", "/bin"])
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, int]:
    start = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    return time.perf_counter() - start, rc


def pip_list(python: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True, text=True
    ).stdout
    return sorted(out.splitlines())


def fresh_clone(work: Path, name: str) -> tuple[Path, Path]:
    repo, home = work / name / "repo", work / name / "home"
    home.mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    return repo, home


def row(measure: str, seconds: float, rc: int, budget: float | None) -> dict[str, Any]:
    ok = rc == 0 and (budget is None or seconds < budget)
    return {
        "measure": measure,
        "leaseline": f"{seconds:.0f} s (exit {rc})",
        "anchor": "-",
        "ratio": "-",
        "budget": f"< {budget / 60:.0f} min" if budget else "-",
        "ok": ok,
    }


def measure(python: str, work: Path) -> list[dict[str, Any]]:
    label = f"`{python}`"
    name = Path(python).parent.parent.name or "python"
    repo, home = fresh_clone(work, name)
    env = clean_env(python, home)
    version = subprocess.run([python, "-V"], capture_output=True, text=True).stdout.strip()
    before = pip_list(python, env)
    rows = []
    for rnd in ("fresh", "again"):
        secs, rc = timed(["scripts/demo"], repo, env, work / name / f"demo-{rnd}.log")
        rows.append(
            row(
                f"{label} ({version}), {rnd}: scripts/demo",
                secs,
                rc,
                BUDGETS["demo"] if rnd == "fresh" else None,
            )
        )
        secs, rc = timed(
            ["scripts/test", "tests/core", "-q", "-p", "no:cacheprovider"],
            repo,
            env,
            work / name / f"core-{rnd}.log",
        )
        rows.append(
            row(
                f"{label}, {rnd}: scripts/test tests/core",
                secs,
                rc,
                BUDGETS["core"] if rnd == "fresh" else None,
            )
        )
    after = pip_list(python, env)
    changed = sorted(set(before) ^ set(after))
    rows.append(
        {
            "measure": f"{label}: its own `pip list` before/after",
            "leaseline": f"{len(before)} / {len(after)} packages, {len(changed)} changed",
            "anchor": "-",
            "ratio": "-",
            "budget": "unchanged",
            "ok": not changed,
        }
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="base interpreter(s) to test")
    parser.add_argument("--ci", action="store_true", help="also time CI=true bash .ci/run")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the clones and logs")
    args = parser.parse_args()
    pythons = args.python or default_pythons()
    work = Path(tempfile.mkdtemp(prefix="leaseline-setup-"))
    rows: list[dict[str, Any]] = []
    try:
        for python in pythons:
            rows += measure(python, work)
        if args.ci:
            repo, home = fresh_clone(work, "ci")
            secs, rc = timed(
                ["bash", ".ci/run"], repo, clean_env(pythons[0], home, ci=True), work / "ci.log"
            )
            rows.append(
                row(f"`{pythons[0]}`, fresh: CI=true bash .ci/run", secs, rc, BUDGETS["ci"])
            )
        print(table(rows))
        if args.write:
            intro = (
                "`python benchmarks/bench_setup.py --ci --write`: each interpreter in a "
                "fresh clone, HOME an empty folder (no uv/pip cache), its folder first on "
                "PATH; `fresh` from nothing, `again` right after (environment reused). "
                "2-core machine, shared with other work while measured."
            )
            write_section("setup (`python benchmarks/bench_setup.py`)", intro, rows)
        return 0 if all(r["ok"] for r in rows) else 1
    finally:
        if args.keep:
            print(f"logs and clones kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
