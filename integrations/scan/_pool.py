"""A big scan in worker processes: the second core for :meth:`Scanner.scan_paths`.

The scanner's work is Python holding the GIL (segments, its own rules, the generic rules'
contexts) and Kingfisher's native scan, which holds it too: threads do not overlap, processes do.
The workers are forked, and only when no other thread runs in the process (none can hold a lock
a child would inherit held): each has the scanner as it is, Kingfisher's compiled rules included
(they hold no thread or handle of their own), so nothing is compiled again per worker. Files go
out in batches of paths; findings, values included, come back pickled through the pool's pipes
(never a file), in the order a scan in one process gives.

A worker that raises names the file and the error's type, not its message (which may quote the
file's text); one that dies (killed, out of memory) is an error, not a hang; Ctrl-C (the whole
process group gets it) stops the workers, which leave it to the parent; a worker whose parent
is gone (SIGKILL) ends within a second.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._engine import Finding, Scanner

__all__ = ["env_workers", "forkable", "scan_in_pool", "worth_a_pool"]

BATCH = 64  # files per worker task
#: a scan this big runs in worker processes (when ``workers`` > 1): below it, forking and the
#: results' trip back cost more than the second core gives (a pre-commit run, a few files)
POOL_FILES = 256
POOL_BYTES = 8 * 1024 * 1024


def env_workers() -> int:
    """``LEASELINE_SCAN_WORKERS``, or the CPUs up to four."""
    raw = os.environ.get("LEASELINE_SCAN_WORKERS") or ""
    if not raw:
        return min(os.cpu_count() or 1, 4)
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(
            f"LEASELINE_SCAN_WORKERS={raw!r}: expected a whole number of processes, 1 or more"
        )
    return int(raw)


def forkable() -> bool:
    """Can this process fork its workers safely: fork exists here, and no other thread runs
    (none holds a lock a forked child would inherit held)?"""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def worth_a_pool(jobs: list[tuple[str, str]]) -> bool:
    if len(jobs) >= POOL_FILES:
        return True
    size = 0
    for path, _ in jobs:
        try:
            size += os.path.getsize(path)
        except OSError:
            continue
        if size >= POOL_BYTES:
            return True
    return False


def scan_in_pool(scanner: Scanner, jobs: list[tuple[str, str]]) -> tuple[list[Finding], int, int]:
    """(findings, files scanned, bytes scanned) of ``jobs`` ((path, path under the root)), in
    ``scanner.workers`` forked processes."""
    global _POOL_SCANNER
    batches = [jobs[i : i + BATCH] for i in range(0, len(jobs), BATCH)]
    pool = ProcessPoolExecutor(
        min(scanner.workers, len(batches)),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_worker_init,
        initargs=(os.getpid(),),
    )
    out: list[Finding] = []
    files = size = 0
    _POOL_SCANNER = scanner  # the workers fork at the first batch's submission
    try:
        for found, n, b in pool.map(_pool_batch, batches):
            out += found
            files, size = files + n, size + b
    except BrokenProcessPool:
        _stop(pool)
        raise RuntimeError(
            "leaseline scan: a worker process ended unexpectedly (killed, or out of "
            "memory?); LEASELINE_SCAN_WORKERS=1 scans in this process"
        ) from None
    except BaseException:
        _stop(pool)  # Ctrl-C, or a worker's error: stop the others now
        raise
    finally:
        _POOL_SCANNER = None
    pool.shutdown()
    return out, files, size


def _stop(pool: ProcessPoolExecutor) -> None:
    """End a pool now: queued batches cancelled, running ones' workers terminated."""
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown()  # its thread ends once it sees the workers gone


#: the scanner a pool's forked workers use (set while the pool forks them)
_POOL_SCANNER: Scanner | None = None
_WORKER: Scanner | None = None


def _worker_init(parent: int) -> None:
    global _WORKER
    _WORKER = _POOL_SCANNER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # the parent killed (SIGKILL, SIGTERM before it could stop the pool): end, don't linger
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()


def _orphan_watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _pool_batch(batch: list[tuple[str, str]]) -> tuple[list[Finding], int, int]:
    """One batch in a worker: its findings and how many files and bytes were scanned."""
    scanner = _WORKER
    assert scanner is not None
    files, size = scanner.files_scanned, scanner.bytes_scanned
    path = ""
    try:
        out: list[Finding] = []
        for path, inner in batch:
            out += scanner._scan_batch([(path, inner)])
    except Exception as exc:
        # the error's own message may quote the file's text: its type only crosses the pipe
        raise RuntimeError(
            f"leaseline scan: scanning {path} failed in a worker process "
            f"({type(exc).__name__}); LEASELINE_SCAN_WORKERS=1 shows the error itself"
        ) from None
    return out, scanner.files_scanned - files, scanner.bytes_scanned - size
