"""The auditor: event contents and schema, value HMAC, cache-hit counting, sink failures."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from leaseline import AccessDenied, Resolver, SecretNotFound
from leaseline._config import Config
from leaseline._exceptions import ConfigError
from leaseline.audit import (
    GENESIS,
    Auditor,
    AuditSinkError,
    FileSink,
    NullAuditor,
    add_context_provider,
    build_auditor,
    line_hash,
    schema,
)
from leaseline.backends.memory import MemoryBackend

from tests.audit.conftest import events

ROOT = Path(__file__).resolve().parents[2]


def resolver(auditor: Auditor) -> Resolver:
    return Resolver(Config.from_mapping({}), auditor=auditor, handle_signals=False)


def expected_hmac(key: bytes, value: str) -> str:
    """Vault's audit hash: HMAC-SHA256 of the value alone, ``hmac-sha256:<hex>``."""
    return "hmac-sha256:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def test_every_store_request_is_one_schema_valid_event(tmp_path: Path, canary: Any) -> None:
    key = secrets.token_bytes(32)
    log = tmp_path / "audit.jsonl"
    auditor = Auditor(FileSink(log, fsync="always"), hmac_key=key)
    api_key = canary.new()
    MemoryBackend.put("memory", "llm/openai", {"api_key": api_key})
    MemoryBackend.put(
        "memory",
        "db/creds",
        ttl=600,
        renewable=True,
        mint=lambda: {"username": "u-" + secrets.token_hex(3), "password": canary.new()},
    )
    MemoryBackend.put("memory", "forbidden", {"x": "y"}, denied=True)
    r = resolver(auditor)
    with r:
        assert r.resolve("memory://llm/openai#api_key") == api_key
        with r.lease("memory://db/creds") as handle:
            password = handle.secret.reveal("password")
        with pytest.raises(AccessDenied):
            r.resolve("memory://forbidden#x")
        with pytest.raises(SecretNotFound):
            r.resolve("memory://missing#x")

    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    validator = jsonschema.Draft202012Validator(schema())
    for record in records:
        validator.validate(record)
    by_event = [(r["event"], r["ref"], r["outcome"]) for r in records]
    assert ("read", "memory://llm/openai", "ok") in by_event
    assert ("lease_issue", "memory://db/creds", "ok") in by_event
    assert ("lease_revoke", "memory://db/creds", "ok") in by_event
    assert ("read", "memory://forbidden", "denied") in by_event
    assert ("read", "memory://missing", "not_found") in by_event

    read = next(r for r in records if r["ref"] == "memory://llm/openai")
    assert read["fields"] == ["api_key"]
    assert read["value_hmacs"] == {"api_key": expected_hmac(key, api_key)}
    assert read["store"] == "memory" and read["latency_ms"] >= 0
    assert {"user", "host", "pid"} <= set(read["actor"])
    issue = next(r for r in records if r["event"] == "lease_issue")
    assert issue["lease_id"] and issue["fields"] == ["password", "username"]
    # per field, each value alone: one leaked password finds its event
    assert issue["value_hmacs"]["password"] == expected_hmac(key, password)
    assert set(issue["value_hmacs"]) == {"password", "username"}
    # the chain: first line from genesis, each prev the HMAC under the key of the line before
    assert records[0]["prev"] == GENESIS and records[0]["seq"] == 0
    for before, record in zip(lines, records[1:], strict=False):
        assert record["chain"] == "hmac-sha256"
        assert record["prev"] == hmac.new(key, before.encode(), hashlib.sha256).hexdigest()
        assert record["prev"] != line_hash(before)
    text = log.read_text()
    assert api_key not in text and password not in text


def test_cache_hits_are_counted_and_flushed_at_close(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    MemoryBackend.put("memory", "k", {"v": secrets.token_hex(8)})
    r = resolver(Auditor(FileSink(log), flush_interval=3600))
    r.resolve("memory://k#v")
    for _ in range(999):
        r.resolve("memory://k#v")
    assert [e["event"] for e in events(log)] == ["read"]  # hits do no I/O
    r.close()
    hits = [e for e in events(log) if e["event"] == "cache_hits"]
    assert [(h["ref"], h["count"]) for h in hits] == [("memory://k", 999)]


def test_hits_flush_on_the_interval_without_close(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    auditor = Auditor(FileSink(log), flush_interval=0.05)
    for _ in range(10):
        auditor.hit("memory://k", "memory")
    deadline = time.monotonic() + 5
    while not events(log) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(e["event"], e["count"]) for e in events(log)] == [("cache_hits", 10)]
    auditor.hit("memory://k", "memory")
    auditor.close()
    assert [e.get("count") for e in events(log)] == [10, 1]


def test_concurrent_hits_are_all_counted(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    auditor = Auditor(FileSink(log), flush_interval=0.01)  # flushes race the hits

    def work() -> None:
        for _ in range(20000):
            auditor.hit("memory://k", "memory")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    auditor.close()
    assert sum(e["count"] for e in events(log)) == 8 * 20000


def test_hits_carry_the_context_of_the_task_that_read(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    current: dict[str, Any] = {}
    add_context_provider(lambda: dict(current))
    MemoryBackend.put("memory", "a", {"v": secrets.token_hex(8)})
    MemoryBackend.put("memory", "b", {"v": secrets.token_hex(8)})
    r = resolver(Auditor(FileSink(log), flush_interval=3600))
    try:
        current["kfp"] = {"task": "first"}
        for _ in range(5):
            r.resolve("memory://a#v")
        current["kfp"] = {"task": "second"}
        r.resolve("memory://b#v")  # a new task: the first one's hits are written first
        recorded = [
            (e["event"], e["ref"], e["actor"].get("kfp"), e.get("count")) for e in events(log)
        ]
        assert recorded == [
            ("read", "memory://a", {"task": "first"}, None),
            ("cache_hits", "memory://a", {"task": "first"}, 4),
            ("read", "memory://b", {"task": "second"}, None),
        ]
    finally:
        current.clear()
        r.close()


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        self.lines.append(line)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "FlakySink()"


def test_a_failing_sink_is_retried(capsys: pytest.CaptureFixture[str]) -> None:
    sink = FlakySink(failures=2)
    Auditor(sink, retry_delay=0.001).emit("read", ref="memory://x", store="memory")
    assert len(sink.lines) == 1
    assert capsys.readouterr().err == ""


def test_a_dead_sink_reports_the_event_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    auditor = Auditor(FlakySink(failures=99), retry_delay=0.001)
    auditor.emit("read", ref="memory://x", store="memory")
    err = capsys.readouterr().err
    assert "audit sink FlakySink() failed after 3 attempts" in err
    assert "No space left on device" in err
    lost = json.loads(err.split("event not recorded there: ", 1)[1])
    assert lost["ref"] == "memory://x" and lost["event"] == "read"
    assert auditor.dropped == 1


def test_required_audit_makes_a_dead_sink_fatal_to_the_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    MemoryBackend.put("memory", "k", {"v": secrets.token_hex(8)})
    r = resolver(Auditor(FlakySink(failures=99), required=True, retry_delay=0.001))
    with pytest.raises(AuditSinkError, match="required = true"):
        r.resolve("memory://k#v")
    assert "event not recorded" in capsys.readouterr().err


def test_build_auditor_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(build_auditor({}), NullAuditor)
    key = secrets.token_hex(16)
    monkeypatch.setenv("AUDIT_TEST_KEY", key)
    with Resolver(Config.from_mapping({}), handle_signals=False) as r:
        auditor = build_auditor(
            {
                "sink": f"file://{tmp_path / 'a.jsonl'}",
                "hmac_key": "env://AUDIT_TEST_KEY",
                "fsync": "never",
                "max_bytes": "1KB",
                "backups": 2,
                "flush_interval": "30s",
                "required": True,
            },
            resolve=r.resolve,
        )
    assert isinstance(auditor, Auditor)
    assert auditor.value_hmacs({"f": "v"}) == {"f": expected_hmac(key.encode(), "v")}
    auditor.close()
    with pytest.raises(ConfigError, match="fsync must be one of always, interval, never"):
        build_auditor({"sink": str(tmp_path / "b.jsonl"), "fsync": "sometimes"})
    with pytest.raises(ConfigError, match="max_bytes"):
        build_auditor({"sink": str(tmp_path / "c.jsonl"), "max_bytes": "lots"})


def test_stdout_and_logging_sinks_chain_too(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = build_auditor({"sink": "stdout"})
    out.emit("read", ref="memory://a")
    out.emit("read", ref="memory://b")
    first, second = capsys.readouterr().out.splitlines()
    assert json.loads(second)["prev"] == line_hash(first)
    caplog.set_level("INFO", logger="leaseline.audit")
    build_auditor({"sink": "logging"}).emit("read", ref="memory://c")
    (record,) = [r for r in caplog.records if r.name == "leaseline.audit"]
    assert json.loads(record.getMessage())["ref"] == "memory://c"


def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    from leaseline.audit._verify import verify_files, with_rotated

    log = tmp_path / "audit.jsonl"
    key = secrets.token_bytes(16)
    auditor = Auditor(FileSink(log, max_bytes=4096, backups=50), hmac_key=key)
    for i in range(200):
        auditor.emit("read", ref=f"memory://k{i}", store="memory")
    auditor.close()
    files = with_rotated(log)
    assert len(files) > 5
    assert all(f.stat().st_size <= 4096 for f in files)
    report = verify_files(files, key=key)
    assert report.ok and report.problems == [] and report.chain == "hmac-sha256"
    assert (report.lines, report.first_seq, report.last_seq) == (200, 0, 199)
    # a new process continues the chain of the existing trail
    again = Auditor(FileSink(log, max_bytes=4096, backups=50), hmac_key=key)
    again.emit("read", ref="memory://again")
    again.close()
    report = verify_files(with_rotated(log), key=key)
    assert report.ok and report.last_seq == 200


WRITER = """
import sys
from leaseline.audit import Auditor, FileSink
a = Auditor(FileSink(sys.argv[1], fsync="never", max_bytes=int(sys.argv[3])))
for i in range(int(sys.argv[2])):
    a.emit("read", ref=f"memory://p{i}", store="memory")
a.close()
"""


def test_processes_sharing_one_file_keep_one_chain(tmp_path: Path) -> None:
    from leaseline.audit._verify import verify_files, with_rotated

    log = tmp_path / "shared.jsonl"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(log), "400", str(64 * 1024)])
        for _ in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    report = verify_files(with_rotated(log))
    assert report.ok, report.problems
    assert report.lines == 1200 and report.last_seq == 1199
    pids = {e["actor"]["pid"] for f in with_rotated(log) for e in events(f)}
    assert len(pids) == 3


EXITER = """
import os, secrets, sys
from leaseline import Resolver
from leaseline._config import Config
from leaseline.audit import Auditor, FileSink
from leaseline.backends.memory import MemoryBackend
MemoryBackend.put("memory", "k", {"v": secrets.token_hex(8)})
r = Resolver(Config.from_mapping({}), auditor=Auditor(FileSink(sys.argv[1])), handle_signals=False)
for _ in range(50):
    r.resolve("memory://k#v")
sys.exit(0)  # no close(): the counts are flushed at interpreter exit
"""


def test_pending_hits_are_flushed_at_exit(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    subprocess.run([sys.executable, "-c", EXITER, str(log)], check=True, timeout=60)
    assert sum(e.get("count", 0) for e in events(log) if e["event"] == "cache_hits") == 49


def test_no_value_in_any_line_even_in_extra_and_errors(tmp_path: Path, canary: Any) -> None:
    value = canary.new()
    log = tmp_path / "audit.jsonl"
    auditor = Auditor(FileSink(log), hmac_key=b"k")
    auditor.emit("read", ref="memory://x", fields=["v"], values=[value])
    assert value not in log.read_text()
    assert "hmac-sha256:" in log.read_text()


def test_schema_ships_in_the_package() -> None:
    import leaseline

    path = Path(leaseline.__file__).parent / "audit" / "event.schema.json"
    assert json.loads(path.read_text())["title"] == "leaseline audit event"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"*.json"' in pyproject


def test_a_hit_never_waits_for_the_writer_lock() -> None:
    auditor = Auditor(FlakySink(0), flush_interval=3600)
    auditor.hit("memory://k", "memory")  # creates the counter
    with auditor._lock:  # a writer holds the lock (a slow sink, a flush)
        t = threading.Thread(
            target=lambda: [auditor.hit("memory://k", "memory") for _ in range(100)]
        )
        t.start()
        t.join(timeout=10)
        assert not t.is_alive()
    auditor.close()


def test_stdout_sink_goes_to_current_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    build_auditor({"sink": "stdout"}).emit("rotation", ref="memory://r")
    assert json.loads(buf.getvalue())["event"] == "rotation"


@pytest.mark.parametrize("bad", ["ture", "maybe", 2])
def test_a_bad_boolean_for_audit_required_is_an_error_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: object
) -> None:
    # read as "false" before: a typo silently made a required audit trail optional
    with pytest.raises(ConfigError, match=r"\[audit\] required: expected true or false") as info:
        build_auditor({"sink": str(tmp_path / "a.jsonl"), "required": bad})
    assert str(bad) not in str(info.value)
    # the environment form goes through the same rule, when the resolver builds its auditor
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEASELINE_AUDIT__SINK", f"file://{tmp_path / 'b.jsonl'}")
    monkeypatch.setenv("LEASELINE_AUDIT__REQUIRED", str(bad))
    with pytest.raises(ConfigError, match=r"\[audit\] required"):
        Resolver(handle_signals=False)


@pytest.mark.parametrize(
    ("text", "value"), [("yes", True), ("On", True), ("0", False), (False, False)]
)
def test_audit_required_reads_the_boolean_words_the_config_reads(
    tmp_path: Path, text: object, value: bool
) -> None:
    auditor = build_auditor({"sink": str(tmp_path / "a.jsonl"), "required": text})
    assert isinstance(auditor, Auditor) and auditor._required is value
    auditor.close()
