"""`get`, `doctor`, `--help` and the lazy command table, through the real binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import LEASELINE, base_env, leaseline, put_kv
from tests.servers import OpenBao


def test_help_lists_every_command_without_importing_them(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    code = (
        "import sys\nfrom leaseline.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    rc = e.code\n"
        "bad = [m for m in ('hvac', 'boto3', 'rich', 'requests') if m in sys.modules]\n"
        "print('IMPORTED', bad, rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert "IMPORTED [] 0" in result.stdout
    for name in ("run", "get", "doctor", "dev", "leases", "scan", "audit", "rotation"):
        assert f"  {name} " in result.stdout
    assert "Exit codes" in result.stdout


def test_run_help_reads_like_a_man_page(tmp_path: Path) -> None:
    result = leaseline("run", "--help", env=base_env(tmp_path))
    assert result.returncode == 0
    for text in ("--env NAME=REF", "--on-change", "Exit codes", "Examples", "128+N"):
        assert text in result.stdout


def test_a_missing_subcommand_module_breaks_only_itself(tmp_path: Path) -> None:
    code = (
        "from leaseline import cli\n"
        "cli.COMMANDS['ghost'] = ('leaseline.no_such_module:ghost', 'A missing command.')\n"
        "cli.main(['ghost', '--x'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=base_env(tmp_path), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "'leaseline ghost' is not available" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = leaseline("run", "--env", "no-equals-sign", "--", "true", env=base_env(tmp_path))
    assert result.returncode == 2
    assert "NAME=REF" in result.stderr


@pytest.mark.integration
def test_get_prints_the_value(openbao: OpenBao, cli_env: dict[str, str], canary: object) -> None:
    value = canary.new()  # type: ignore[attr-defined]
    ref = put_kv(openbao, f"cli/get-{os.urandom(3).hex()}", {"value": value, "user": "svc"})
    result = leaseline("get", f"{ref}#value", env=cli_env)
    assert result.returncode == 0
    assert result.stdout == value + "\n"
    as_json = leaseline("get", ref, "--json", env=cli_env)
    assert as_json.returncode == 0
    doc = json.loads(as_json.stdout)
    assert doc["fields"]["user"] == "svc" and doc["fields"]["value"] == value
    missing = leaseline("get", f"{ref}#nope", env=cli_env)
    assert missing.returncode == 3 and "has no field 'nope'" in missing.stderr


@pytest.mark.integration
def test_doctor_reports_denied_and_exits_1(openbao: OpenBao, cli_env: dict[str, str]) -> None:
    ref = put_kv(openbao, f"cli/doctor-{os.urandom(3).hex()}", {"k": "doctor-ok-value"})
    token = openbao.token_with_policy(
        f'path "secret/data/{ref.split("secret/", 1)[1]}" {{ capabilities = ["read"] }}\n'
        'path "auth/token/create" { capabilities = ["update"] }'
    )
    env = {**cli_env, "VAULT_TOKEN": token}
    good = leaseline("doctor", "--ref", f"{ref}#k", "--format", "json", env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)
    assert report["stores"][0]["authenticated"] is True
    assert report["stores"][0]["token_ttl"].endswith("s")
    bad = leaseline("doctor", "--ref", f"{ref}#k", "--ref", "vault://secret/other/x", env=env)
    assert bad.returncode == 1
    assert "denied" in bad.stdout and "ok" in bad.stdout
    assert "doctor-ok-value" not in bad.stdout


def _wait_file(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"leaseline dev exited: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("leaseline dev wrote no env file")
        time.sleep(0.2)


def _source(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            out[name] = value
    return out


@pytest.mark.integration
def test_dev_server_and_the_quickstart(tmp_path: Path, canary: object) -> None:
    """README command 1 without the pip install: dev --postgres, the quickstart, clean stop."""
    from tests.servers.postgres import find_pg_bindir

    find_pg_bindir()  # the dev server falls back without PostgreSQL; this test wants it
    workdir = tmp_path / "dev"
    env = base_env(tmp_path)
    proc = subprocess.Popen(
        [*LEASELINE, "dev", "--postgres", "--dir", str(workdir), "--db-ttl", "4s"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        envfile = workdir / "env"
        _wait_file(envfile, proc)
        assert envfile.stat().st_mode & 0o777 == 0o600
        dev_env = _source(envfile)
        token = dev_env["VAULT_TOKEN"]
        assert not token.startswith("s.")
        run_env = {**env, **dev_env, "TRAIN_SECONDS": "6"}
        quickstart = Path(__file__).parents[2] / "examples" / "quickstart" / "train.py"
        result = leaseline(
            "run",
            "--env",
            "OPENAI_API_KEY=vault://secret/llm/openai#api_key",
            "--env",
            "DB_USER=vault://database/creds/trainer#username",
            "--env",
            "DB_PASSWORD=vault://database/creds/trainer#password",
            "--",
            sys.executable,
            str(quickstart),
            env=run_env,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "config: api_key=***" in result.stdout
        assert "rows readable with the same login" in result.stdout
        audit = [
            json.loads(line)
            for line in (workdir / "leaseline-audit.jsonl").read_text().splitlines()
        ]
        events = [r["event"] for r in audit]
        assert "lease_issue" in events and "lease_renew" in events and "lease_revoke" in events
    finally:
        proc.send_signal(2)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert token not in out + err
    # not even abbreviated: the root token stays in the env file
    assert token[5:13] not in out + err
    assert "root token is in the env file" in out
    assert not (workdir / "env").exists()
