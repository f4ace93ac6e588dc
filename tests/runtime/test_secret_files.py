"""Secret files of `leaseline run --file` and `render`: one atomic 0600 writer, private
directories, and nothing left behind after `kill -9` once `leases revoke --orphaned` ran."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.runtime.conftest import cli_env

LEASELINE = [sys.executable, "-m", "leaseline.cli"]


def test_run_file_never_writes_through_a_planted_temporary_file(
    secret_dir: Path, tmp_path: Path, canary: Any
) -> None:
    """The old writer opened ``.NAME.PID.tmp`` without O_EXCL: a file planted there (mode 0666,
    held open by its planter) received the credential and became the credential file."""
    target = secret_dir / "db.json"
    env = cli_env(tmp_path, SECRET_X=canary.new())
    go_r, go_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # becomes `leaseline run` (exec keeps the pid the planter predicted)
        os.close(go_w)
        os.close(out_r)
        os.read(go_r, 1)
        os.dup2(out_w, 1)
        os.execve(
            sys.executable,
            [
                *LEASELINE,
                "run",
                "--file",
                f"{target}=env://SECRET_X",
                "--",
                "stat",
                "-c",
                "%a",
                str(target),
            ],
            env,
        )
    os.close(go_r)
    os.close(out_w)
    planted = secret_dir / f".{target.name}.{pid}.tmp"
    fd = os.open(planted, os.O_RDWR | os.O_CREAT, 0o666)
    os.fchmod(fd, 0o666)
    try:
        os.write(go_w, b"x")
        os.close(go_w)
        with os.fdopen(out_r) as out:
            printed = out.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert printed.strip() == "600", "the credential file is private"
        got = len(os.pread(fd, 4096, 0))
        assert got == 0, "the planted file never received the credential"
    finally:
        os.close(fd)
    assert not target.exists(), "removed when the command ended"


def test_run_file_left_by_kill_9_is_removed_by_revoke_orphaned(
    secret_dir: Path, tmp_path: Path, canary: Any
) -> None:
    target = secret_dir / "token"
    env = cli_env(tmp_path, SECRET_Y=canary.new())
    run = subprocess.Popen(
        [*LEASELINE, "run", "--file", f"{target}=env://SECRET_Y", "--", "sleep", "60"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    ledger = tmp_path / "ledger.jsonl"

    def started() -> list[dict[str, Any]]:  # the run's record once the child's pid is known
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        return [r for r in map(json.loads, lines) if r["op"] == "run" and r["child_pid"]]

    while not started():
        if run.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(run.stderr.read() if run.stderr else "run did not start")
        time.sleep(0.05)
    [record] = started()
    assert target.exists()
    run.kill()  # kill -9 leaseline itself: nothing of it runs any more
    run.wait()
    os.kill(record["child_pid"], signal.SIGKILL)
    assert target.exists(), "nobody removed it"
    revoke = subprocess.run(
        [*LEASELINE, "leases", "revoke", "--orphaned"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    assert not target.exists(), "leases revoke --orphaned removed the orphaned secret file"


def test_render_creates_missing_directories_0700_whatever_the_umask(
    secret_dir: Path, tmp_path: Path, canary: Any
) -> None:
    target = secret_dir / "new" / "sub" / "key"
    result = subprocess.run(
        [*LEASELINE, "render", "--quiet", "--file", f"{target}=env://SECRET_Z"],
        env=cli_env(tmp_path, SECRET_Z=canary.new()),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0o022),
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    for directory in (secret_dir / "new", secret_dir / "new" / "sub"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
