"""`leaseline run`'s masking, the real binary against the session's OpenBao: long values in bounded
memory, a value too long to mask refused before anything starts, colour codes inside a value on
a real pty, and the encoded forms a program prints a credential in."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import secrets
import struct
import subprocess
import sys
import termios
import uuid
from pathlib import Path

import hvac.exceptions
import pytest

from tests.canary import encodings
from tests.cli.conftest import LEASELINE, ledger_ids, put_kv
from tests.cli.test_run import DB_REF, _read_pty
from tests.servers import DatabaseEngine, OpenBao

pytestmark = pytest.mark.integration

#: peak resident memory allowed for `leaseline run` masking a long value (the issue's bound)
RSS_LIMIT = 150 * 1024 * 1024
_ESCAPES = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\))")


#: starts leaseline from a small process and writes wait4's peak RSS of it to argv[1] (a child
#: forked from pytest itself would count pytest's resident memory at the fork as its own)
_LAUNCH = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _run_measured(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, bytes, int]:
    """Run `leaseline ARGS`, stdout a pipe: (exit code, stdout, peak RSS in bytes of leaseline
    or any process it waited for, from wait4's resource usage)."""
    rss = tmp_path / "maxrss"
    with (tmp_path / "stderr.txt").open("wb") as err:
        result = subprocess.run(
            [sys.executable, "-c", _LAUNCH, str(rss), *LEASELINE, *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=300,
        )
    return result.returncode, result.stdout, int(rss.read_text()) * 1024  # KiB on Linux


@pytest.mark.parametrize("size", [20_000, 1_000_000])
def test_long_value_masked_in_bounded_memory(
    openbao: OpenBao, cli_env: dict[str, str], canary: object, tmp_path: Path, size: int
) -> None:
    """A 20 KB value (in the environment) and a 1 MB one (a --file: one environment string may
    not exceed 128 KiB), printed by the child between two words: masked exactly, and `leaseline
    run` stays under 150 MB (it used to take 2.6 GB for 20 KB, or abort)."""
    head = canary.new("long")  # type: ignore[attr-defined]
    value = head + secrets.token_urlsafe(size)[: size - len(head)]
    ref = put_kv(openbao, f"cli/long-{os.urandom(3).hex()}", {"value": value}) + "#value"
    if size <= 64_000:
        args = ["--env", f"SECRET={ref}", "--", "sh", "-c", 'printf "before %s after\\n" "$SECRET"']
    else:
        args = ["--file", f"SECRET={ref}", "--"]
        args += ["sh", "-c", 'printf "before "; cat "$SECRET"; printf " after\\n"']
    code, out, peak = _run_measured(["run", *args], cli_env, tmp_path)
    assert code == 0, (tmp_path / "stderr.txt").read_text()[:2000]
    assert out == b"before *** after\n"
    assert peak < RSS_LIMIT, f"peak RSS {peak / 2**20:.0f} MB"


def _leases(bao: OpenBao, prefix: str) -> set[str]:
    try:
        listed = bao.client().sys.list_leases(prefix)
    except hvac.exceptions.InvalidPath:
        return set()
    return set(listed["data"]["keys"])


def _accessors(bao: OpenBao) -> set[str]:
    return set(bao.client().list("auth/token/accessors")["data"]["keys"])


def test_value_too_long_to_mask_is_refused_before_the_child_starts(
    vault_db: DatabaseEngine, cli_env: dict[str, str], canary: object, tmp_path: Path
) -> None:
    """A value over the masking limit (8 MiB a form): exit 2 with a clear message before the
    command runs; the database lease and the run's child token taken on the way are revoked."""
    bao = vault_db.bao
    head = canary.new("huge")  # type: ignore[attr-defined]
    size = 8 * 1024 * 1024 + 1
    value = head + "x" * (size - len(head))
    ref = put_kv(bao, f"cli/huge-{os.urandom(3).hex()}", {"value": value}) + "#value"
    del value
    prefix = f"{vault_db.creds_path()}/"
    leases_before, accessors_before = _leases(bao, prefix), _accessors(bao)
    marker = tmp_path / "started"
    args = ["run", "--env", f"DB_PASSWORD={DB_REF}#password", "--file", f"BIG={ref}", "--"]
    args += ["sh", "-c", f'touch "{marker}"; cat "$BIG"']
    code, out, _ = _run_measured(args, cli_env, tmp_path)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code == 2, stderr[:2000]
    assert "too long to mask" in stderr and "--no-mask" in stderr
    assert out == b""
    assert not marker.exists()
    assert ledger_ids(tmp_path / "ledger.jsonl") == ([], [])
    assert _leases(bao, prefix) == leases_before
    assert _accessors(bao) == accessors_before


def test_colour_codes_inside_a_value_on_a_pty(
    openbao: OpenBao, cli_env: dict[str, str], canary: object
) -> None:
    """On a terminal, the child prints the value through Rich, whose highlighter colours the
    UUID inside ``sk-proj-...`` (escape sequences inside the value), and once more with a colour
    code written in the middle of it: masked both times, the colours kept."""
    value = canary.new(f"sk-proj-{uuid.uuid4()}")  # type: ignore[attr-defined]
    ref = put_kv(openbao, f"cli/rich-{os.urandom(3).hex()}", {"value": value}) + "#value"
    script = (
        "import os, rich.console\n"
        "v = os.environ['SECRET']\n"
        "rich.console.Console(color_system='truecolor').print(f'key {v} end')\n"
        "print('raw', v[:10] + '\\033[1;35m' + v[10:] + '\\033[0m', 'end', flush=True)\n"
    )
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen(
        [*LEASELINE, "run", "--env", f"SECRET={ref}", "--", sys.executable, "-c", script],
        env={**cli_env, "TERM": "xterm-256color", "COLUMNS": "200"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        out = _read_pty(master, proc)
    finally:
        os.close(master)
    assert proc.returncode == 0, out.decode(errors="replace")[:2000]
    assert b"\x1b[" in out  # the colours survive
    plain = _ESCAPES.sub(b"", out)
    assert b"key *** end" in plain and b"raw *** end" in plain
    assert not [name for form, name in encodings(value) if form in plain]


def test_encoded_forms_a_program_prints(
    openbao: OpenBao, cli_env: dict[str, str], canary: object, tmp_path: Path
) -> None:
    """The child prints the value as a Basic auth header (base64 of user:password: the value at
    the third alignment), in UTF-16LE, URL-encoded with lower-case %xx, and as JSON inside a
    JSON string; a 3-character value gets a warning that it is not masked."""
    value = canary.new("enc") + '/"x+y'  # type: ignore[attr-defined]
    ref = put_kv(openbao, f"cli/forms-{os.urandom(3).hex()}", {"value": value})
    short = put_kv(openbao, f"cli/short-{os.urandom(3).hex()}", {"v": "abc"}) + "#v"
    script = (
        "import base64, json, os, re, sys, urllib.parse as u\n"
        "v = os.environ['SECRET']\n"
        "out = sys.stdout.buffer\n"
        "out.write(b'basic: Basic ' + base64.b64encode(b'user:' + v.encode()) + b'\\n')\n"
        "out.write(b'utf16: ' + v.encode('utf-16-le') + b'\\n')\n"
        "low = re.sub('%[0-9A-F]{2}', lambda m: m.group().lower(), u.quote(v, safe=''))\n"
        "out.write(b'url: ' + low.encode() + b'\\n')\n"
        "out.write(b'json: ' + json.dumps({'body': json.dumps({'k': v})}).encode() + b'\\n')\n"
    )
    args = ["run", "--env", f"SECRET={ref}#value", "--env", f"SHORT={short}", "--"]
    code, out, _ = _run_measured([*args, sys.executable, "-c", script], cli_env, tmp_path)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code == 0, stderr[:2000]
    lines = out.splitlines()
    assert [line.split(b":")[0] for line in lines] == [b"basic", b"utf16", b"url", b"json"]
    assert all(b"***" in line for line in lines)
    assert not [name for form, name in encodings(value) if form in out]
    assert value.encode("utf-16-le") not in out
    assert json.dumps(json.dumps(value)[1:-1])[1:-1].encode() not in out
    assert "too short to mask" in stderr
