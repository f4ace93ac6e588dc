"""19.9: the chain is keyed, so an edited trail cannot be re-chained; unchained lines are errors."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner
from leaseline.audit import Auditor, FileSink
from leaseline.cli.audit import audit


@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The audit key, configured as a user would: ``LEASELINE_AUDIT__HMAC_KEY``."""
    empty = tmp_path / "leaseline.toml"
    empty.write_text("")
    monkeypatch.setenv("LEASELINE_CONFIG", str(empty))
    value = secrets.token_hex(16)
    monkeypatch.setenv("LEASELINE_AUDIT__HMAC_KEY", value)
    return value


def keyed_trail(path: Path, key: str, n: int = 10) -> list[str]:
    auditor = Auditor(FileSink(path), hmac_key=key.encode())
    for i in range(n):
        auditor.emit("read", ref=f"memory://k{i}", store="memory", fields=["v"])
    auditor.close()
    return path.read_text().splitlines()


def rechain(lines: list[str], start: int, chain: str | None) -> list[str]:
    """What an attacker who can write the file does after an edit: recompute every ``prev``
    from ``start`` on with plain SHA-256 (all the old code's verify checked)."""
    out = list(lines)
    for i in range(start, len(out)):
        record = json.loads(out[i])
        record["prev"] = hashlib.sha256(out[i - 1].encode()).hexdigest()
        if chain is None:
            record.pop("chain", None)
        else:
            record["chain"] = chain
        out[i] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return out


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(audit, list(args), input=stdin)
    return result.exit_code, result.output


def test_a_keyed_trail_verifies_and_says_so(tmp_path: Path, key: str) -> None:
    log = tmp_path / "audit.jsonl"
    keyed_trail(log, key)
    code, out = run("verify", str(log))
    assert code == 0, out
    assert "OK: 10 line(s) in 1 file(s), seq 0..9, keyed (HMAC-SHA256)" in out


@pytest.mark.parametrize("chain", ["hmac-sha256", "sha256", None])
def test_an_edited_and_rechained_trail_fails(tmp_path: Path, key: str, chain: str | None) -> None:
    log = tmp_path / "audit.jsonl"
    lines = keyed_trail(log, key)
    record = json.loads(lines[4])
    record["ref"] = "memory://something-innocent"
    lines[4] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(rechain(lines, 5, chain)) + "\n")
    code, out = run("verify", str(log))
    assert code == 1, out
    assert "BROKEN" in out
    if chain == "hmac-sha256":  # claims to be keyed: the link does not match under the key
        assert f"error: {log}:6: edited: chain broken" in out
    else:  # re-chained without the key: plain SHA-256 links are refused when a key is set
        assert f"error: {log}:6: unkeyed: 5 line(s) are chained by plain SHA-256" in out
        assert "--unkeyed-ok" in out


def test_a_complete_event_without_prev_or_seq_mid_trail_fails_and_tail_marks_it(
    tmp_path: Path, key: str
) -> None:
    log = tmp_path / "audit.jsonl"
    lines = keyed_trail(log, key)
    forged = json.loads(lines[3])
    for name in ("prev", "seq", "chain"):
        forged.pop(name)
    forged["ref"] = "memory://alibi"
    lines.insert(4, json.dumps(forged, sort_keys=True, separators=(",", ":")))
    log.write_text("\n".join(lines) + "\n")
    code, out = run("verify", "--format", "json", str(log))
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert [(p["line"], p["kind"], p["fatal"]) for p in report["problems"]] == [
        (5, "unchained", True)
    ]
    code, out = run("tail", "-n", "20", str(log))
    assert code == 0
    (row,) = [line for line in out.splitlines() if "memory://alibi" in line]
    assert "[UNCHAINED] read" in row
    assert sum("[" in line for line in out.splitlines() if "memory://k" in line) == 0
    assert "1 line(s) marked are not part of the chain" in out
    # and a line whose link is broken is marked too
    edited = json.loads(lines[6])
    edited["ref"] = "memory://edited"
    lines[6] = json.dumps(edited, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")
    code, out = run("tail", "-n", "20", str(log))
    (row,) = [line for line in out.splitlines() if "memory://k6" in line]
    assert "[BROKEN LINK]" in row


def test_without_a_key_the_chain_is_plain_sha256_and_verify_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "leaseline.toml"
    empty.write_text("")
    monkeypatch.setenv("LEASELINE_CONFIG", str(empty))
    monkeypatch.delenv("LEASELINE_AUDIT__HMAC_KEY", raising=False)
    log = tmp_path / "audit.jsonl"
    auditor = Auditor(FileSink(log))
    for i in range(3):
        auditor.emit("read", ref=f"memory://k{i}", store="memory")
    auditor.close()
    assert all(json.loads(line)["chain"] == "sha256" for line in log.read_text().splitlines())
    code, out = run("verify", str(log))
    assert code == 0, out
    assert (
        "warning: " in out
        and "unkeyed: 3 line(s) are chained by plain SHA-256 (no audit key)" in out
    )
    assert "seq 0..2, plain SHA-256" in out
    # a keyed trail cannot be checked without its key: an error that says what to configure
    keyed = tmp_path / "keyed.jsonl"
    keyed_trail(keyed, secrets.token_hex(8), 3)
    code, out = run("verify", str(keyed))
    assert code == 1
    assert "keyed: 3 line(s) are chained by HMAC under the audit key, which was not given" in out
    assert "LEASELINE_AUDIT__HMAC_KEY" in out


def test_a_trail_from_before_the_key_needs_unkeyed_ok(tmp_path: Path, key: str) -> None:
    log = tmp_path / "audit.jsonl"
    old = Auditor(FileSink(log))  # written before [audit] hmac_key was set
    old.emit("read", ref="memory://before")
    old.close()
    keyed_trail(log, key, 2)  # continues the chain, keyed from here on
    code, out = run("verify", str(log))
    assert code == 1 and "unkeyed: 1 line(s)" in out
    code, out = run("verify", "--unkeyed-ok", str(log))
    assert code == 0, out
    assert "accepted (--unkeyed-ok)" in out and "keyed (HMAC-SHA256)" in out
