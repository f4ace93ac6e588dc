"""18.9: per-field value HMACs, as Vault's audit devices keep them, and `leaseline audit hash`."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from leaseline import Resolver
from leaseline._config import load_config
from leaseline.audit import schema
from leaseline.audit._readers import read_accesses
from leaseline.audit._verify import verify_files
from leaseline.backends.memory import MemoryBackend
from leaseline.cli.audit import audit
from leaseline.scan import ManagedValues


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    log = tmp_path / "audit.jsonl"
    key = secrets.token_hex(16)
    config = tmp_path / "leaseline.toml"
    config.write_text(
        f'[audit]\nsink = "file://{log}"\nhmac_key = "env://H19_AUDIT_KEY"\nflush_interval = 0\n'
    )
    monkeypatch.setenv("LEASELINE_CONFIG", str(config))
    monkeypatch.setenv("H19_AUDIT_KEY", key)
    return log, key


def test_one_leaked_value_finds_its_event(configured: tuple[Path, str], canary: Any) -> None:
    log, key = configured
    password, username = canary.new(), "svc-" + secrets.token_hex(3)
    MemoryBackend.put("memory", "db/creds", {"username": username, "password": password})
    MemoryBackend.put("memory", "llm/openai", {"api_key": canary.new()})
    with Resolver(load_config(), handle_signals=False) as r:
        r.get("memory://db/creds")
        r.get("memory://llm/openai")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    read = next(x for x in records if x["ref"] == "memory://db/creds")
    assert set(read["value_hmacs"]) == {"password", "username"}
    # what a responder holding the leaked password runs: stdin, the value never echoed
    result = CliRunner().invoke(audit, ["hash", "-"], input=password + "\n")
    assert result.exit_code == 0, result.output
    digest = result.output.strip()
    assert (
        digest
        == "hmac-sha256:" + hmac.new(key.encode(), password.encode(), hashlib.sha256).hexdigest()
    )
    assert password not in result.output
    assert [x["ref"] for x in records if digest in json.dumps(x)] == ["memory://db/creds"]
    assert read["value_hmacs"]["password"] == digest
    # the argument form gives the same digest; the value is not printed either
    result = CliRunner().invoke(audit, ["hash", username])
    assert result.output.strip() == read["value_hmacs"]["username"]
    assert username not in result.output
    # `leaseline scan` reduces a finding to the same digest: a hit names the event too
    assert ManagedValues(key.encode()).digest(password) == digest


def test_hash_without_a_key_or_a_value_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "leaseline.toml"
    empty.write_text("")
    monkeypatch.setenv("LEASELINE_CONFIG", str(empty))
    monkeypatch.delenv("LEASELINE_AUDIT__HMAC_KEY", raising=False)
    result = CliRunner().invoke(audit, ["hash", "-"], input="x-" + secrets.token_hex(4))
    assert result.exit_code == 2 and "no audit key: set [audit] hmac_key" in result.output
    monkeypatch.setenv("LEASELINE_AUDIT__HMAC_KEY", secrets.token_hex(8))
    result = CliRunner().invoke(audit, ["hash", "-"], input="")
    assert result.exit_code == 2 and "no value given" in result.output


def test_version_1_trails_still_read(tmp_path: Path) -> None:
    """A trail written before value_hmacs and the keyed chain: schema-valid, verified as plain
    SHA-256 (a warning), read by `audit analyze`."""
    lines: list[str] = []
    prev = "0" * 64
    for i in range(3):
        record = {
            "v": 1,
            "seq": i,
            "prev": prev,
            "time": f"2026-01-0{i + 1}T10:00:00.000000Z",
            "event": "read",
            "ref": f"memory://k{i}",
            "store": "memory",
            "fields": ["v"],
            "value_hmac": "hmac-sha256:" + "ab" * 32,
            "outcome": "ok",
            "source": "10.0.0.1",
            "actor": {"user": "u", "host": "h", "pid": 1},
        }
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")))
        prev = hashlib.sha256(lines[-1].encode()).hexdigest()
    log = tmp_path / "old.jsonl"
    log.write_text("\n".join(lines) + "\n")
    validator = jsonschema.Draft202012Validator(schema())
    for line in lines:
        validator.validate(json.loads(line))
    report = verify_files([log])
    assert report.ok and report.chain == "sha256"
    assert [(p.kind, p.fatal) for p in report.problems] == [("unkeyed", False)]
    assert [a.secret for a in read_accesses([log])] == ["memory://k0", "memory://k1", "memory://k2"]
