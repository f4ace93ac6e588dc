"""`leaseline audit verify`: the hash chain catches edits, deletions, reorderings; survives kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from leaseline.audit import Auditor, FileSink
from leaseline.audit._verify import order_files, verify_trail, with_rotated
from leaseline.cli.audit import audit


def write_trail(path: Path, n: int, **sink: object) -> list[str]:
    auditor = Auditor(FileSink(path, **sink))  # type: ignore[arg-type]
    for i in range(n):
        auditor.emit("read", ref=f"memory://k{i}", store="memory", fields=["v"])
    auditor.close()
    return path.read_text().splitlines()


def verify(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(audit, ["verify", *args])
    return result.exit_code, result.output


def test_an_intact_trail_verifies(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    write_trail(log, 20)
    code, out = verify(str(log))
    assert code == 0, out
    assert "OK: 20 line(s) in 1 file(s), seq 0..19" in out


def test_an_edited_line_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    lines = write_trail(log, 10)
    record = json.loads(lines[4])
    record["ref"] = "memory://something-else"
    lines[4] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    log.write_text("\n".join(lines) + "\n")
    code, out = verify(str(log))
    assert code == 1
    assert f"error: {log}:6: edited: chain broken: {log}:5 (seq 4) was modified" in out
    assert "BROKEN" in out


def test_a_deleted_line_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    lines = write_trail(log, 10)
    del lines[3]
    log.write_text("\n".join(lines) + "\n")
    code, out = verify(str(log))
    assert code == 1
    assert f"{log}:4: deleted: chain broken: 1 line(s) missing between seq 2 and 4" in out


def test_a_reordered_pair_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    lines = write_trail(log, 10)
    lines[5], lines[6] = lines[6], lines[5]
    log.write_text("\n".join(lines) + "\n")
    code, out = verify("--format", "json", str(log))
    assert code == 1
    report = json.loads(out)
    kinds = [(p["line"], p["kind"]) for p in report["problems"]]
    assert kinds[0] == (6, "deleted")  # seq 6 arrives where 5 was due
    assert (7, "reordered") in kinds


def test_rotated_files_verify_as_one_chain_and_a_missing_middle_file_is_caught(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    write_trail(log, 120, max_bytes=4096, backups=20)
    files = with_rotated(log)
    assert len(files) >= 4
    code, out = verify(str(log))  # siblings added automatically
    assert code == 0 and f"in {len(files)} file(s), seq 0..119" in out
    assert order_files(list(reversed(files)))[-1] == log
    # rotated away: starts mid-chain (a warning), or fatal with --strict-start
    files[-1].unlink()
    assert verify(str(log))[0] == 0
    assert "starts mid-chain" in verify(str(log))[1]
    assert verify("--strict-start", str(log))[0] == 1
    # a file taken out of the middle: lines missing
    files[2].unlink()
    code, out = verify(str(log), *(str(f) for f in files if f.exists() and f != files[-1]))
    assert code == 1 and "deleted" in out


WRITER = """
import sys
from leaseline.audit import Auditor, FileSink
a = Auditor(FileSink(sys.argv[1], fsync="never"))
print("ready", flush=True)
i = 0
while True:
    a.emit("read", ref=f"memory://k{i}", store="memory", extra={"pad": "x" * (i % 700)})
    i += 1
"""


def test_kill_9_leaves_a_verifiable_trail_and_a_torn_line_is_a_warning(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 60
    while (not log.exists() or log.stat().st_size < 2_000_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    data = log.read_bytes()
    lines = data.count(b"\n")
    assert lines > 2000
    code, out = verify(str(log))
    assert code == 0, out
    # What a crash leaves when the page cache was only partly written: the last line cut short.
    complete = data[: data.rfind(b"\n") + 1]
    log.write_bytes(complete + data[len(complete) - 300 : len(complete) - 120])
    code, out = verify(str(log))
    assert code == 0, out
    assert f"warning: {log}:{lines + 1}: torn: last line is incomplete" in out
    assert f"OK: {lines} line(s)" in out
    # a writer started after the crash continues the chain past the fragment
    again = Auditor(FileSink(log))
    again.emit("read", ref="memory://after-restart")
    again.close()
    code, out = verify("--format", "json", str(log))
    report = json.loads(out)
    assert code == 0 and report["lines"] == lines + 1
    assert [(p["kind"], p["fatal"]) for p in report["problems"]] == [
        ("torn", False),
        ("unkeyed", False),  # written without a key: verify says what that means
    ]


def test_a_garbage_line_in_the_middle_is_fatal(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    lines = write_trail(log, 5)
    lines[2] = "{not json"
    log.write_text("\n".join(lines) + "\n")
    code, out = verify(str(log))
    assert code == 1 and "malformed" in out


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert verify(str(tmp_path / "missing.jsonl"))[0] == 2
    assert CliRunner().invoke(audit, ["verify"]).exit_code == 2


# -- properties: any single tampering of a trail is caught -----------------------------------

_TRAIL: list[bytes] = []


def _trail() -> list[bytes]:
    if not _TRAIL:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "t.jsonl"
            _TRAIL.extend(line.encode() for line in write_trail(path, 30))
    return _TRAIL


def _check(lines: list[bytes]) -> bool:
    return verify_trail([("t", b"\n".join(lines) + b"\n")]).ok


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 28), st.integers(0, 200), st.characters(codec="ascii"))
def test_any_edit_of_a_line_but_the_last_is_caught(i: int, pos: int, ch: str) -> None:
    lines = list(_trail())
    line = lines[i]
    pos %= len(line)
    edited = line[:pos] + ch.encode() + line[pos + 1 :]
    if edited == line:
        return
    lines[i] = edited
    assert not _check(lines)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 28))
def test_any_deleted_line_but_the_last_is_caught(i: int) -> None:
    lines = list(_trail())
    del lines[i]
    assert not _check(lines)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 28))
def test_any_swapped_pair_is_caught(i: int) -> None:
    lines = list(_trail())
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    assert not _check(lines)


def test_truncation_at_the_end_is_what_the_chain_cannot_see() -> None:
    # Documented limit: dropping the newest lines leaves a valid (shorter) chain. Ship the
    # trail to a SIEM as it is written (docs/audit.md) to keep a copy the host cannot rewrite.
    assert _check(list(_trail())[:-3])


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_trails(tmp_path: Path, n: int) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text("")
    if n:
        write_trail(log, n)
    assert verify(str(log))[0] == 0
