"""``%load_ext leaseline`` in terminal IPython, under a real pty: there is no kernel session, so
``sys.stdout``/``sys.stderr`` are masked (prints, results, tracebacks); and the magic's errors."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.canary import encodings

pytestmark = pytest.mark.timeout(120)

SCRIPT = """\
%load_ext leaseline
import leaseline, base64
key = leaseline.resolve('env://NB_TERM_KEY')
print('raw', key)
{'api_key': key}
print(base64.b64encode(key.encode()).decode())
%leaseline env NB_COPY=env://NB_TERM_KEY
%leaseline env OK=env://NB_TERM_KEY not-a-name
%leaseline frobnicate
raise RuntimeError('bad ' + key)
print('done', os.environ['NB_COPY'] == key)
exit
"""


def _ipython(env: dict[str, str], cwd: Path, script: str) -> str:
    pid, fd = pty.fork()
    if pid == 0:  # the child: terminal IPython on the pty
        os.chdir(cwd)
        os.execve(
            sys.executable,
            [sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=nocolor"],
            env,
        )
    out = b""
    os.write(fd, script.replace("\n", "\r").encode())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode("utf-8", "replace")


def test_terminal_ipython_masks_stdout_and_tracebacks(canary: Any, tmp_path: Path) -> None:
    value = canary.new("term-key")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEASELINE_")}
    env.update(NB_TERM_KEY=value, IPYTHONDIR=str(tmp_path / "ipython"), TERM="dumb")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    shown = _ipython(env, tmp_path, SCRIPT.replace("import leaseline,", "import os, leaseline,"))
    for needle, form in encodings(value):
        assert needle.decode() not in shown, f"the value reached the terminal ({form})"
    assert "raw ***" in shown
    assert "{'api_key': '***'}" in shown
    assert "NB_COPY set from env://NB_TERM_KEY" in shown
    assert "argument 2: expected NAME=REFERENCE" in shown
    assert "not-a-name" not in shown.split("%leaseline env OK=env://NB_TERM_KEY not-a-name", 1)[1]
    assert "unknown subcommand (not quoted" in shown and "frobnicate'" not in shown
    assert "RuntimeError: bad ***" in shown
    assert "done True" in shown
