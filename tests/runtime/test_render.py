"""Templates, atomic writes and `leaseline render` (no server: memory and env stores)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from leaseline import ConfigError, Resolver
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend
from leaseline.runtime.render import Output, Renderer, atomic_write, parse_template

from tests.runtime.conftest import cli_env

LEASELINE = [sys.executable, "-m", "leaseline.cli"]


def test_template_syntax() -> None:
    t = parse_template(
        "host:5432:*:{{ memory://db#username | pgpass }}:{{memory://db#password|pgpass}}\n"
        '{{ "{{" }} literal {{ openai | json | trim }}\n',
        "pgpass.tpl",
    )
    assert t.refs == ["memory://db#username", "memory://db#password", "openai"]
    assert "{{" in t.pieces


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a {{ memory://x | nope }}", "pgpass.tpl:1: unknown filter 'nope'"),
        ("a\n{{ two words }}", "pgpass.tpl:2: expected {{ REFERENCE }}"),
        ("a {{ memory://x", "unbalanced"),
    ],
)
def test_template_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("|", r"\|")):
        parse_template(text, "pgpass.tpl")


def test_atomic_write_is_0600_whatever_the_umask(secret_dir: Path) -> None:
    target = secret_dir / "sub" / "key"
    old = os.umask(0)
    try:
        atomic_write(target, b"one")
        atomic_write(target, b"two")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["key"]  # no temporary files left


def _resolver() -> Resolver:
    return Resolver(Config.from_mapping({"stores": {"memory": {}}}), handle_signals=False)


def test_fields_of_one_credential_never_mix(secret_dir: Path, canary: object) -> None:
    n = iter(range(1000))
    user, pw = canary.new(), canary.new()  # type: ignore[attr-defined]

    def mint() -> dict[str, str]:
        i = next(n)
        return {"username": f"{user}-{i}", "password": f"{pw}-{i}"}

    MemoryBackend.put("memory", "render/db", ttl=60, renewable=True, mint=mint)
    out = secret_dir / "pgpass"
    tpl = parse_template(
        "h:1:*:{{ memory://render/db#username }}:{{ memory://render/db#password }}"
    )
    with _resolver() as r:
        renderer = Renderer(
            r, [Output(out, tpl), Output.file(secret_dir / "db.json", "memory://render/db")]
        )
        assert renderer.keys == ["memory://render/db"]
        assert renderer.render() == [out, secret_dir / "db.json"]
        assert renderer.render() == []  # unchanged: nothing rewritten
        first = out.read_text()
        r.invalidate("memory://render/db")
        assert renderer.render() == [out, secret_dir / "db.json"]
        second = out.read_text()
        fields = json.loads((secret_dir / "db.json").read_text())
    assert first != second
    u, p = second.split(":")[3:]
    assert u.rsplit("-", 1)[1] == p.rsplit("-", 1)[1]  # username and password of one mint
    assert fields == {"username": u, "password": p}


def test_render_cli_writes_files_and_records_the_run(
    tmp_path: Path, secret_dir: Path, canary: object
) -> None:
    key, pw = canary.new(), canary.new()  # type: ignore[attr-defined]
    tpl = tmp_path / "creds.json.tpl"
    tpl.write_text('{"api_key": {{ env://OPENAI_KEY | json }}, "pw": {{ env://DB_PW | json }}}\n')
    env = cli_env(tmp_path, OPENAI_KEY=key, DB_PW=pw)
    result = subprocess.run(
        [
            *LEASELINE,
            "render",
            "--file",
            f"{secret_dir}/openai=env://OPENAI_KEY",
            "--template",
            f"{tpl}:{secret_dir}/creds.json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (secret_dir / "openai").read_text() == key
    assert json.loads((secret_dir / "creds.json").read_text()) == {"api_key": key, "pw": pw}
    for name in ("openai", "creds.json"):
        assert stat.S_IMODE((secret_dir / name).stat().st_mode) == 0o600
    assert "2 file(s)" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert records[0]["op"] == "run" and records[0]["cmd"] == "render"
    assert key not in (tmp_path / "ledger.jsonl").read_text()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--file", "x"], 2, "--file expects PATH=REF"),
        (["--template", "nocolon"], 2, "--template expects SRC:DEST"),
        ([], 2, "nothing to render"),
        (["--file", "/tmp/x=bogus-store://a"], 2, "bogus-store"),
        (["--mode", "999", "--file", "/tmp/x=env://HOME"], 2, "octal"),
    ],
)
def test_render_usage_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    result = subprocess.run(
        [*LEASELINE, "render", *args],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_agent_once_is_render(tmp_path: Path, secret_dir: Path, canary: object) -> None:
    value = canary.new()  # type: ignore[attr-defined]
    result = subprocess.run(
        [*LEASELINE, "agent", "--once", "--file", f"{secret_dir}/v=env://V"],
        env=cli_env(tmp_path, V=value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (secret_dir / "v").read_text() == value
