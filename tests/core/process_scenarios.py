"""Parent processes the way ML code forks: run as ``python process_scenarios.py SCENARIO REF``.

Each scenario takes a dynamic PostgreSQL credential with ``leaseline.get`` in the parent, then
forks (or spawns) workers the way multiprocessing, PyTorch's DataLoader and Celery's prefork pool
do, and logs in to PostgreSQL with the parent's credential after every step. It prints one JSON
line: the usernames seen (not secret: PostgreSQL role names) and what failed. Connection
settings come from ``PGHOST``/``PGPORT``; ``OWN_REF`` (optional) is a reference each worker
takes for itself.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
from typing import Any

import leaseline
import psycopg

REF = sys.argv[2] if len(sys.argv) > 2 else ""
OWN_REF = os.environ.get("OWN_REF", "")


def login(secret: Any) -> str:
    """Log in with ``secret`` and read the training table; returns the username."""
    user = secret.reveal("username")
    with psycopg.connect(
        host=os.environ["PGHOST"],
        port=int(os.environ["PGPORT"]),
        dbname="postgres",
        user=user,
        password=secret.reveal("password"),
        connect_timeout=5,
    ) as conn:
        conn.execute("SELECT count(*) FROM public.training_rows").fetchone()
    return str(user)


def task(i: int) -> list[str]:
    """A worker's unit of work: the parent's credential (inherited), and maybe one of its own."""
    users = [login(leaseline.get(REF))]
    if OWN_REF:
        users.append(login(leaseline.get(OWN_REF)))
    return users


def sleeper(ready: Any) -> None:
    leaseline.get(REF)
    ready.set()
    time.sleep(60)


def loader_worker(indices: Any, results: Any) -> None:
    """A DataLoader worker: pull indices until the sentinel, 'load' each with the credential."""
    while True:
        index = indices.get()
        if index is None:
            return
        if index < 0:  # a slow sample (a stuck network read): still loading at shutdown
            results.put((index, login(leaseline.get(REF))))
            time.sleep(60)
        results.put((index, login(leaseline.get(REF))))


_busy: Any = None


def pool_init(busy: Any) -> None:
    global _busy
    _busy = busy


def nap(i: int) -> None:
    _busy.release()
    time.sleep(60)


def scenario_pool(report: dict[str, Any]) -> None:
    ctx = mp.get_context("fork")
    busy = ctx.Semaphore(0)
    with ctx.Pool(3, initializer=pool_init, initargs=(busy,)) as pool:
        for users in pool.map(task, range(6)):
            report["children"] += users
        report["parent"].append(login(leaseline.get(REF)))
        pool.map_async(nap, range(3))  # e.g. a result nobody waits for any more
        for _ in range(3):
            assert busy.acquire(timeout=30), "a worker never started its task"
    # the `with` block ended in Pool.terminate(): every (busy) worker got SIGTERM


def scenario_terminate(report: dict[str, Any]) -> None:
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=sleeper, args=(ready,))
    proc.start()
    assert ready.wait(30), "the child never got the credential"
    proc.terminate()
    proc.join(30)
    report["exitcodes"].append(proc.exitcode)


def scenario_sys_exit(report: dict[str, Any]) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            login(leaseline.get(REF))
        finally:
            sys.exit(0)  # atexit handlers run in the child
    _, status = os.waitpid(pid, 0)
    report["exitcodes"].append(os.waitstatus_to_exitcode(status))


def scenario_dataloader(report: dict[str, Any]) -> None:
    """Three epochs; DataLoader forks fresh workers every epoch (persistent_workers=False). The
    last epoch is left early (``break``) while a worker is still loading: like DataLoader's
    ``_shutdown_workers``, the sentinels go out, the join times out and the worker is
    terminated."""
    ctx = mp.get_context("fork")
    for epoch in range(3):
        indices, results = ctx.Queue(), ctx.Queue()
        workers = [ctx.Process(target=loader_worker, args=(indices, results)) for _ in range(2)]
        for w in workers:
            w.start()
        wanted = [epoch * 10 + index for index in range(4)]
        for index in [-1, *wanted[1:]] if epoch == 2 else wanted:
            indices.put(index)
        batch = [results.get(timeout=30) for _ in range(4)]
        for _ in workers:
            indices.put(None)
        for w in workers:
            w.join(2)
            if w.exitcode is None:
                w.terminate()
                w.join(30)
            report["exitcodes"].append(w.exitcode)
        report["children"] += [user for _, user in batch]
        report["parent"].append(login(leaseline.get(REF)))


def scenario_prefork(report: dict[str, Any]) -> None:
    """Celery-style: a fixed pool of forked workers, each running several tasks; the main process
    is stopped with SIGTERM and then stops its workers with SIGTERM (a warm shutdown)."""
    workers: list[tuple[int, int, int]] = []  # (pid, task pipe write end, result pipe read end)
    for _ in range(2):
        tasks_r, tasks_w = os.pipe()
        results_r, results_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(tasks_w)
            os.close(results_r)
            with os.fdopen(tasks_r) as tasks, os.fdopen(results_w, "w") as results:
                for line in tasks:  # blocks here between tasks, until the SIGTERM
                    results.write(json.dumps(task(int(line))) + "\n")
                    results.flush()
            os._exit(0)
        os.close(tasks_r)
        os.close(results_w)
        workers.append((pid, tasks_w, results_r))
    readers = {pid: os.fdopen(r) for pid, _, r in workers}
    for n in range(3):  # each worker runs three tasks
        for pid, w, _ in workers:
            os.write(w, f"{n}\n".encode())
            report["children"] += json.loads(readers[pid].readline())

    def warm_shutdown(signum: int, frame: Any) -> None:
        for pid, _, _ in workers:
            os.kill(pid, signal.SIGTERM)
        for pid, _, _ in workers:
            _, status = os.waitpid(pid, 0)
            report["exitcodes"].append(os.waitstatus_to_exitcode(status))
        report["parent"].append(login(leaseline.get(REF)))  # after the workers are gone
        finish(report)
        sys.exit(0)

    signal.signal(signal.SIGTERM, warm_shutdown)  # Celery's own handler replaces leaseline's
    print("ready", flush=True)
    time.sleep(60)
    raise SystemExit("no SIGTERM came")


def spawned_task(i: int) -> list[str]:
    return task(i)


def scenario_spawn(report: dict[str, Any]) -> None:
    with mp.get_context("spawn").Pool(2) as pool:
        for users in pool.map(spawned_task, range(4)):
            report["children"] += users


def scenario_sigterm_in_http(report: dict[str, Any]) -> None:
    """SIGTERM lands while the HTTP client holds its connection pool's lock (urllib3 draining its
    pools at exit, or any request in flight): the revocation the signal starts must not need it."""
    from leaseline._api import default_resolver

    http = default_resolver().backend("vault")._http  # type: ignore[attr-defined]
    pool = http._manager.connection_from_url(http.addr)
    with pool.pool.mutex:  # the lock urllib3's own exit finalizer holds while it drains
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    raise SystemExit("SIGTERM did not end the process")


def finish(report: dict[str, Any]) -> None:
    print(json.dumps(report), flush=True)


def main() -> None:
    scenario = sys.argv[1]
    report: dict[str, Any] = {"parent": [], "children": [], "exitcodes": []}
    report["parent"].append(login(leaseline.get(REF)))
    globals()[f"scenario_{scenario}"](report)
    report["parent"].append(login(leaseline.get(REF)))  # the parent's login still works
    finish(report)


if __name__ == "__main__":
    main()
