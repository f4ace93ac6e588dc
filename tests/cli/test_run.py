"""`leaseline run`, the real binary in a subprocess, against the session's OpenBao."""

from __future__ import annotations

import base64
import errno
import json
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.cli.conftest import (
    LEASELINE,
    accessor_alive,
    lease_alive,
    leaseline,
    ledger_ids,
    put_kv,
)
from tests.servers import DatabaseEngine, MotoServer, OpenBao
from tests.servers.openbao import TEST_POLICY_NAME

pytestmark = pytest.mark.integration

DB_REF = "vault://database/creds/reader"


def kv_secret(openbao: OpenBao, canary: object, name: str) -> tuple[str, str]:
    value = canary.new()  # type: ignore[attr-defined]
    ref = put_kv(openbao, f"cli/{name}-{os.urandom(3).hex()}", {"value": value})
    return ref + "#value", value


def test_masks_every_encoding(openbao: OpenBao, cli_env: dict[str, str], canary: object) -> None:
    ref, value = kv_secret(openbao, canary, "enc")
    raw = value.encode()
    forms = [
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        json.dumps({"k": value})[7:-1],
        raw.hex(),
        raw.hex().upper(),
    ]
    # the forms are computed in the child from the variable, so the test's argv holds none
    script = (
        "import os,base64,json,urllib.parse as u\n"
        "v=os.environ['SECRET']; r=v.encode()\n"
        "for f in [v, base64.b64encode(r).decode(), base64.urlsafe_b64encode(r).decode().rstrip('='),"
        " u.quote(v, safe=''), json.dumps(v)[1:-1], r.hex(), r.hex().upper()]:\n"
        "    print('form:', f)\n"
    )
    result = leaseline(
        "run", "--env", f"SECRET={ref}", "--", sys.executable, "-c", script, env=cli_env
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["form: ***"] * 7
    for form in forms:
        assert form not in result.stdout


def test_value_split_across_two_writes(
    openbao: OpenBao, cli_env: dict[str, str], canary: object
) -> None:
    ref, _value = kv_secret(openbao, canary, "split")
    script = (
        "import os,sys,time\nv=os.environ['SECRET']\n"
        "sys.stdout.write('token=' + v[:9]); sys.stdout.flush(); time.sleep(0.4)\n"
        "sys.stdout.write(v[9:] + ' end\\n'); sys.stdout.flush()\n"
        "sys.stderr.write('err ' + v[:5]); sys.stderr.flush(); time.sleep(0.2)\n"
        "sys.stderr.write(v[5:] + '\\n')\n"
    )
    result = leaseline(
        "run", "--env", f"SECRET={ref}", "--", sys.executable, "-c", script, env=cli_env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "token=*** end\n"
    assert result.stderr == "err ***\n"


def test_output_in_bulk_with_many_values(
    openbao: OpenBao, cli_env: dict[str, str], canary: object
) -> None:
    """8 MB in 1 MB writes, 20 values (80+ forms: the bulk engine, Hyperscan with the `fast`
    extra, for every chunk), one value every 1,000 lines: each masked, nothing else changed."""
    values = {f"f{i}": canary.new("bulk") for i in range(20)}  # type: ignore[attr-defined]
    ref = put_kv(openbao, f"cli/bulk-{os.urandom(3).hex()}", values)
    args = [a for i in range(20) for a in ("--env", f"V{i}={ref}#f{i}")]
    script = (
        "import os,sys\n"
        "vals=[os.environ[f'V{i}'] for i in range(20)]\n"
        "out=sys.stdout.buffer; buf=[]\n"
        "for i in range(80000):\n"
        "    buf.append(f'{i:08d} ' + '.' * 90 + (f' tok={vals[i % 20]}' if i % 1000 == 7 else '') + '\\n')\n"
        "    if len(buf) == 10000: out.write(''.join(buf).encode()); buf=[]\n"
        "out.write(''.join(buf).encode())\n"
    )
    result = leaseline("run", *args, "--", sys.executable, "-c", script, env=cli_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 80000
    assert result.stdout.count(" tok=***\n") == 80
    assert all(line.endswith("." * 90) for i, line in enumerate(lines) if i % 1000 != 7)
    for value in values.values():
        assert value not in result.stdout


def _read_pty(master: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        out += chunk
    proc.wait(10)
    return out


def test_pty_keeps_colour_and_isatty(
    openbao: OpenBao, cli_env: dict[str, str], canary: object
) -> None:
    ref, value = kv_secret(openbao, canary, "pty")
    script = (
        "import os,sys\n"
        "print('tty', sys.stdout.isatty(), sys.stdin.isatty())\n"
        "print('\\033[31mred\\033[0m', os.environ['SECRET'])\n"
        "print('size', os.get_terminal_size().columns)\n"
    )
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 123, 0, 0))
    proc = subprocess.Popen(
        [*LEASELINE, "run", "--env", f"SECRET={ref}", "--", sys.executable, "-c", script],
        env=cli_env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        out = _read_pty(master, proc).decode(errors="replace")
    finally:
        os.close(master)
    assert proc.returncode == 0, out
    assert "tty True True" in out
    assert "\x1b[31mred\x1b[0m ***" in out
    assert "size 123" in out
    assert value not in out


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("pass", 0),
        ("raise SystemExit(1)", 1),
        ("import os,signal; os.kill(os.getpid(), signal.SIGKILL)", 137),
    ],
)
def test_exit_code_is_the_childs(cli_env: dict[str, str], script: str, expected: int) -> None:
    result = leaseline("run", "--", sys.executable, "-c", script, env=cli_env)
    assert result.returncode == expected, result.stderr


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LEASELINE, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # signals in this test reach only leaseline
    )


def _wait_line(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"leaseline exited ({proc.returncode}): {proc.stderr.read()}")  # type: ignore[union-attr]
    raise AssertionError(f"no {text!r} line")


WAITER = (
    "import signal,sys,time\n"
    "def bye(n, f):\n    print('got', signal.Signals(n).name, flush=True); sys.exit(42)\n"
    "signal.signal(signal.SIGTERM, bye); signal.signal(signal.SIGINT, bye)\n"
    "print('ready', flush=True)\ntime.sleep(60)\nsys.exit(3)\n"
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_forwarded(cli_env: dict[str, str], sig: signal.Signals) -> None:
    proc = _start(["run", "--", sys.executable, "-c", WAITER], cli_env)
    _wait_line(proc, "ready")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err
    assert f"got {sig.name}" in out


ENDINGS = {
    "exit-0": ("pass", 0),
    "exit-1": ("raise SystemExit(1)", 1),
    "child-sigkill": ("import os; os.kill(os.getpid(), 9)", 137),
    "sigterm-to-leaseline": (WAITER, 42),
    "sigint-to-leaseline": (WAITER, 42),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_leases_revoked_however_the_run_ends(
    vault_db: DatabaseEngine, cli_env: dict[str, str], tmp_path: Path, ending: str
) -> None:
    script, expected = ENDINGS[ending]
    args = [
        "run",
        "--env",
        f"DB_USER={DB_REF}#username",
        "--env",
        f"DB_PASSWORD={DB_REF}#password",
        "--",
        sys.executable,
        "-c",
        script,
    ]
    if ending.startswith("sig"):
        proc = _start(args, cli_env)
        _wait_line(proc, "ready")
        leases, tokens = ledger_ids(tmp_path / "ledger.jsonl")
        assert leases and all(lease_alive(vault_db.bao, lid) for lid in leases)
        proc.send_signal(signal.SIGTERM if "sigterm" in ending else signal.SIGINT)
        proc.communicate(timeout=30)
        code = proc.returncode
    else:
        code = leaseline(*args, env=cli_env).returncode
    assert code == expected
    leases, tokens = ledger_ids(tmp_path / "ledger.jsonl")
    assert len(leases) == 1 and len(tokens) == 1
    assert not lease_alive(vault_db.bao, leases[0])
    assert not accessor_alive(vault_db.bao, tokens[0])


def test_kill_9_of_leaseline_then_revoke_orphaned(
    vault_db: DatabaseEngine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _start(
        ["run", "--env", f"DB_PASSWORD={DB_REF}#password", "--", sys.executable, "-c", WAITER],
        cli_env,
    )
    _wait_line(proc, "ready")
    ledger = tmp_path / "ledger.jsonl"
    # the run is recorded before the child starts, and again with the child's pid right after
    # it started; the child may say "ready" before that second record
    deadline = time.monotonic() + 30
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if ledger.exists():
            runs = [json.loads(line) for line in ledger.read_text().splitlines()]
            if any(r["op"] == "run" and r["child_pid"] for r in runs):
                break
        time.sleep(0.05)
    child_pid = next(r["child_pid"] for r in runs if r["op"] == "run" and r["child_pid"])
    proc.kill()
    proc.communicate(timeout=30)
    os.kill(child_pid, signal.SIGKILL)  # the orphaned child would keep running otherwise
    leases, tokens = ledger_ids(ledger)
    assert lease_alive(vault_db.bao, leases[0]) and accessor_alive(vault_db.bao, tokens[0])

    listed = leaseline("leases", "list", "--format", "json", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    assert {r["status"] for r in json.loads(listed.stdout)} == {"orphaned"}

    revoked = leaseline("leases", "revoke", "--orphaned", env=cli_env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    assert not lease_alive(vault_db.bao, leases[0])
    assert not accessor_alive(vault_db.bao, tokens[0])
    after = leaseline("leases", "list", "--format", "json", env=cli_env)
    assert json.loads(after.stdout) == []


def test_leases_are_in_the_ledger_before_the_command_runs(
    vault_db: DatabaseEngine, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The command's first act is a ``kill -9`` of leaseline: the leases it was started with are
    already in the ledger, and ``leases revoke --orphaned`` ends them. Before, the ledger was
    written after the child started (a command that printed "ready" could beat it)."""
    proc = subprocess.run(
        [*LEASELINE, "run", "--env", f"DB_PASSWORD={DB_REF}#password", "--",
         "sh", "-c", "kill -9 $PPID"],
        env=cli_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leases, tokens = ledger_ids(tmp_path / "ledger.jsonl")
    assert leases and tokens, "nothing recorded before the command ran"
    assert lease_alive(vault_db.bao, leases[0]) and accessor_alive(vault_db.bao, tokens[0])
    revoked = leaseline("leases", "revoke", "--orphaned", env=cli_env)
    assert revoked.returncode == 0, revoked.stderr
    assert not lease_alive(vault_db.bao, leases[0])
    assert not accessor_alive(vault_db.bao, tokens[0])


def test_file_is_private_and_removed(
    openbao: OpenBao, cli_env: dict[str, str], canary: object
) -> None:
    ref, _value = kv_secret(openbao, canary, "file")
    script = (
        "import os,stat\np=os.environ['CRED_FILE']\n"
        "print(p); print(oct(stat.S_IMODE(os.stat(p).st_mode)))\n"
        "print(oct(stat.S_IMODE(os.stat(os.path.dirname(p)).st_mode)))\n"
        "print(open(p).read())\n"
    )
    result = leaseline(
        "run", "--file", f"CRED_FILE={ref}", "--", sys.executable, "-c", script, env=cli_env
    )
    assert result.returncode == 0, result.stderr
    path, mode, dir_mode, content = result.stdout.splitlines()
    assert mode == "0o600" and dir_mode == "0o700"
    assert content == "***"
    if os.path.isdir("/dev/shm"):
        assert path.startswith("/dev/shm/")
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))


def test_env_values_that_are_references_are_resolved(
    openbao: OpenBao, cli_env: dict[str, str], canary: object
) -> None:
    ref, value = kv_secret(openbao, canary, "implicit")
    env = {**cli_env, "OPENAI_API_KEY": ref, "SOME_URL": "https://example.invalid/x"}
    script = (
        "import os\nprint(os.environ['OPENAI_API_KEY'])\nprint(os.environ['SOME_URL'])\n"
        f"print(len(os.environ['OPENAI_API_KEY']) == {len(value)})\n"
    )
    result = leaseline("run", "--", sys.executable, "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["***", "https://example.invalid/x", "True"]


def test_leaselines_own_config_variables_stay_references_in_the_child(
    openbao: OpenBao, cli_env: dict[str, str], canary: object, tmp_path: Path
) -> None:
    """``LEASELINE_AUDIT__HMAC_KEY=vault://...`` is read by leaseline itself; before, ``run``
    also resolved it as an ordinary variable and handed the audit key to the child."""
    key_ref, _key = kv_secret(openbao, canary, "auditkey")
    ref, _value = kv_secret(openbao, canary, "implicit2")
    seen = tmp_path / "seen.txt"
    env = {
        **cli_env,
        "OPENAI_API_KEY": ref,
        "LEASELINE_AUDIT__SINK": f"file://{tmp_path / 'audit.jsonl'}",
        "LEASELINE_AUDIT__HMAC_KEY": key_ref,
    }
    script = (
        "import os,pathlib\n"
        f"pathlib.Path({str(seen)!r}).write_text(os.environ['LEASELINE_AUDIT__HMAC_KEY'])\n"
        "print(os.environ['OPENAI_API_KEY'])\n"
    )
    result = leaseline("run", "--", sys.executable, "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["***"]  # an ordinary variable is still resolved
    assert seen.read_text() == key_ref
    assert (tmp_path / "audit.jsonl").stat().st_size > 0  # and leaseline used the key itself


# -- what the child sees, and what reaches the user's terminal (issue 18) -------------------------


def canary_token(openbao: OpenBao, canary: object) -> str:
    """A Vault token whose id is a canary: the plugin searches every output and file for it."""
    token: str = canary.new("vtoken")  # type: ignore[attr-defined]
    openbao.client().auth.token.create(id=token, policies=[TEST_POLICY_NAME], ttl="1h")
    return token


def _child_pid(proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """The pid the child printed last (``pid N``), and the lines it printed before."""
    assert proc.stdout is not None
    lines: list[str] = []
    while line := proc.stdout.readline():
        if line.startswith("pid "):
            return int(line.split()[1]), lines
        lines.append(line)
    proc.kill()
    raise AssertionError(f"no pid line: {proc.communicate(timeout=30)[1]}")


SHOW_ENV = (
    'echo "vault=${VAULT_TOKEN-unset} bao=${BAO_TOKEN-unset} k=$K"; echo "pid $$"; '
    'while [ ! -e "$DONE" ]; do sleep 0.05; done'
)


def test_child_environment_has_no_login_token(
    openbao: OpenBao, cli_env: dict[str, str], canary: object, tmp_path: Path
) -> None:
    """Item 1: leaseline logged in with VAULT_TOKEN/BAO_TOKEN; its child must not inherit them."""
    ref, _value = kv_secret(openbao, canary, "childenv")
    token = canary_token(openbao, canary)
    done = tmp_path / "done"
    env = {**cli_env, "VAULT_TOKEN": token, "BAO_TOKEN": token, "DONE": str(done)}
    proc = _start(["run", "--env", f"K={ref}", "--", "sh", "-c", SHOW_ENV], env)
    try:
        pid, printed = _child_pid(proc)
        # the live child's /proc/PID/environ: no canary in it but the value handed on as K
        names = canary.search_environ(pid, expected={"K"})  # type: ignore[attr-defined]
    finally:
        done.touch()
        proc.wait(30)
    assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]
    assert "K" in names and "VAULT_ADDR" in names
    assert not {"VAULT_TOKEN", "BAO_TOKEN"} & names
    assert printed == ["vault=unset bao=unset k=***\n"]


def test_login_token_passed_explicitly_is_masked(
    openbao: OpenBao, cli_env: dict[str, str], canary: object
) -> None:
    """``--env VAULT_TOKEN=env://VAULT_TOKEN`` hands the token on, on purpose; still masked."""
    token = canary_token(openbao, canary)
    env = {**cli_env, "VAULT_TOKEN": token}
    result = leaseline(
        "run",
        "--env",
        "VAULT_TOKEN=env://VAULT_TOKEN",
        "--",
        "sh",
        "-c",
        'echo "t=$VAULT_TOKEN"',
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "t=***\n"


def test_login_token_from_a_file_is_masked(
    openbao: OpenBao, cli_env: dict[str, str], canary: object, tmp_path: Path
) -> None:
    """The token leaseline logged in with (here ~/.vault-token) is registered with the masker."""
    token = canary_token(openbao, canary)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".vault-token").write_text(token)
    env = {k: v for k, v in cli_env.items() if k != "VAULT_TOKEN"}
    env["HOME"] = str(home)
    ref, _value = kv_secret(openbao, canary, "tokenfile")
    try:
        result = leaseline(
            "run",
            "--env",
            f"K={ref}",
            "--",
            "sh",
            "-c",
            'echo "t=$(cat "$HOME/.vault-token")"',
            env=env,
        )
    finally:
        (home / ".vault-token").unlink()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "t=***\n"


def test_aws_keys_of_a_store_used_stay_out_unless_passed_on(
    moto_server: MotoServer, cli_env: dict[str, str], canary: object, tmp_path: Path
) -> None:
    """leaseline read aws-sm:// with the AWS keys in its environment: the child gets them only
    through --env NAME=env://NAME, and then masked."""
    value = canary.new()  # type: ignore[attr-defined]
    name = f"cli/aws-{os.urandom(3).hex()}"
    moto_server.client("secretsmanager").create_secret(
        Name=name, SecretString=json.dumps({"api_key": value})
    )
    env = {**cli_env, **moto_server.env()}
    env["AWS_CONFIG_FILE"] = str(tmp_path / "aws-config-absent")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "aws-credentials-absent")
    show = 'echo "key=$K id=${AWS_ACCESS_KEY_ID-unset} secret=${AWS_SECRET_ACCESS_KEY-unset}"'
    ref = f"aws-sm://{name}#api_key"
    result = leaseline("run", "--env", f"K={ref}", "--", "sh", "-c", show, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "key=*** id=unset secret=unset\n"
    passed = [
        "--env",
        "AWS_ACCESS_KEY_ID=env://AWS_ACCESS_KEY_ID",
        "--env",
        "AWS_SECRET_ACCESS_KEY=env://AWS_SECRET_ACCESS_KEY",
    ]
    result = leaseline("run", "--env", f"K={ref}", *passed, "--", "sh", "-c", show, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "key=*** id=*** secret=***\n"


def under_terminal(
    command: str,
    env: dict[str, str],
    timeout: float = 60,
    *,
    keys: bytes = b"",
    when: Callable[[], bool] = lambda: True,
) -> tuple[int, bytes]:
    """Run ``sh -c COMMAND`` with a new pty as its controlling terminal (the user at a
    terminal), typing ``keys`` once ``when()`` is true; returns its exit code and every byte
    that reached the terminal."""
    pid, master = pty.fork()
    if pid == 0:  # the child: exec at once (this process has threads)
        try:
            os.execve("/bin/sh", ["sh", "-c", command], env)
        finally:
            os._exit(127)
    out = b""
    status: int | None = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if status is None:
                done, status_now = os.waitpid(pid, os.WNOHANG)
                status = status_now if done else None
            if keys and when():
                os.write(master, keys)
                keys = b""
            ready, _, _ = select.select([master], [], [], 0.2)
            chunk = b""
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError as exc:  # EIO: no process has the terminal open right now
                    if exc.errno != errno.EIO:
                        raise
                    time.sleep(0.05)
            out += chunk
            if status is not None and not chunk:
                break  # exited, and everything written to the terminal is read
    finally:
        os.close(master)  # a hang-up for the session, should it still run
    if status is None:
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


RUN = " ".join(shlex.quote(a) for a in LEASELINE) + " run"


@pytest.mark.parametrize("stdin", ["terminal", "/dev/null"])
def test_child_cannot_write_to_the_users_terminal(
    openbao: OpenBao, cli_env: dict[str, str], canary: object, tmp_path: Path, stdin: str
) -> None:
    """Item 2: stdout and stderr redirected, the user at a terminal: ``echo $K > /dev/tty``."""
    ref, value = kv_secret(openbao, canary, "devtty")
    log = tmp_path / "out.log"
    child = shlex.quote('echo "tty: $K" > /dev/tty; echo "end"')
    redirect = "" if stdin == "terminal" else " < /dev/null"
    code, screen = under_terminal(
        f"exec {RUN} --env K={ref} -- sh -c {child} > {log} 2>&1{redirect}", cli_env
    )
    output = log.read_text()
    assert code == 0, output
    assert value.encode() not in screen and value not in output
    assert "end" in output
    if stdin == "terminal":  # the child's own terminal, masked on its way to the user's
        assert screen == b"tty: ***\r\n"
    else:  # no terminal at all: the child has no controlling terminal
        assert screen == b""
        assert "/dev/tty" in output


def test_in_the_background_the_child_gets_no_terminal_fd(
    openbao: OpenBao, cli_env: dict[str, str], canary: object, tmp_path: Path
) -> None:
    """``leaseline run ... > log 2>&1 &`` from an interactive shell: our stdin is the user's
    terminal, which a background job must not touch (raw mode would stop it with SIGTTOU) and
    the child must not get (``echo $K >&0`` writes to the screen): its stdin is /dev/null."""
    ref, value = kv_secret(openbao, canary, "bg")
    log = tmp_path / "out.log"
    child = shlex.quote('echo "tty: $K" >&0; echo "end"')
    code, screen = under_terminal(
        f"set -m; {RUN} --env K={ref} -- sh -c {child} > {log} 2>&1 & wait $!", cli_env
    )
    output = log.read_text()
    assert code == 0, output
    assert value.encode() not in screen and value not in output
    assert "end" in output and b"tty:" not in screen


def test_ctrl_c_reaches_a_child_in_its_own_session(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The child has a session of its own, so the terminal's SIGINT reaches leaseline alone:
    leaseline passes it on (no pty here: every fd redirected)."""
    log = tmp_path / "out.log"
    waiter = shlex.quote(WAITER)
    code, _screen = under_terminal(
        f"exec {RUN} -- {shlex.quote(sys.executable)} -c {waiter} > {log} 2>&1 < /dev/null",
        cli_env,
        keys=b"\x03",  # Ctrl-C
        when=lambda: log.exists() and "ready" in log.read_text(),
    )
    assert (code, log.read_text()) == (42, "ready\ngot SIGINT\n")


def pem(canary: object, newline: str) -> str:
    """A private-key look-alike (armor built from parts), one canary line in its body."""
    armor = "PRIVATE" + " KEY"
    body = [canary.new("pem"), base64.b64encode(os.urandom(48)).decode()]  # type: ignore[attr-defined]
    return newline.join([f"-----BEGIN {armor}-----", *body, f"-----END {armor}-----"])


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("mode", ["pty", "pipe"])
def test_multi_line_value_is_masked_on_a_terminal(
    openbao: OpenBao,
    cli_env: dict[str, str],
    canary: object,
    tmp_path: Path,
    mode: str,
    newline: str,
) -> None:
    """Item 3: on a pty ``\\n`` becomes ``\\r\\n`` before the masker sees it."""
    value = pem(canary, newline)
    ref = put_kv(openbao, f"cli/pem-{os.urandom(3).hex()}", {"value": value}) + "#value"
    child = shlex.quote('printf "%s\\n" "$PEM"; echo end')
    log = tmp_path / "out.log"
    redirect = "" if mode == "pty" else f" > {log}"
    code, screen = under_terminal(f"exec {RUN} --env PEM={ref} -- sh -c {child}{redirect}", cli_env)
    assert code == 0, screen
    lines = value.splitlines()
    if mode == "pty":
        assert screen == b"***\r\nend\r\n"
    else:
        assert screen == b""
        assert log.read_text() == "***\nend\n"
    for line in lines[1:-1]:
        assert line.encode() not in screen


# -- bad input: one line, the fix, a documented exit code, no traceback ---------------------------


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("leaseline: error: ")
    return result.stderr


def test_malformed_manifest(cli_env: dict[str, str], tmp_path: Path) -> None:
    manifest = tmp_path / "secrets.toml"
    manifest.write_text("[env\nX = 1\n")
    result = leaseline("run", "--manifest", str(manifest), "--", "true", env=cli_env)
    assert result.returncode == 2
    err = _one_line_error(result)
    assert "not valid TOML" in err and "[env]" in err
    assert len(err.strip().splitlines()) == 1


def test_manifest_with_wrong_shape(cli_env: dict[str, str], tmp_path: Path) -> None:
    manifest = tmp_path / "secrets.toml"
    manifest.write_text('[envs]\nX = "vault://secret/x"\n')
    result = leaseline("run", "--manifest", str(manifest), "--", "true", env=cli_env)
    assert result.returncode == 2
    assert "unknown key(s) envs" in _one_line_error(result)


def test_unknown_reference(cli_env: dict[str, str]) -> None:
    result = leaseline(
        "run", "--env", "X=vault://secret/absent/nothing#k", "--", "true", env=cli_env
    )
    assert result.returncode == 3
    assert "vault://secret/absent/nothing" in _one_line_error(result)


def test_denied_path(openbao: OpenBao, cli_env: dict[str, str]) -> None:
    token = openbao.token_with_policy('path "secret/data/allowed/*" { capabilities = ["read"] }')
    env = {**cli_env, "VAULT_TOKEN": token}
    result = leaseline("run", "--env", "X=vault://secret/forbidden/x#k", "--", "true", env=env)
    assert result.returncode == 4
    err = _one_line_error(result)
    assert "permission denied" in err and "capabilities" in err


def test_debug_shows_the_traceback(cli_env: dict[str, str]) -> None:
    result = leaseline(
        "--debug", "run", "--env", "X=vault://secret/absent/nothing#k", "--", "true", env=cli_env
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_command_not_found(cli_env: dict[str, str]) -> None:
    result = leaseline("run", "--", "no-such-command-leaseline", env=cli_env)
    assert result.returncode == 127
    assert "command not found" in _one_line_error(result)
