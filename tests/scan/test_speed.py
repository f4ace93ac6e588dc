"""The scanner's speed work keeps its results: the base64 and concatenation finders give what
the expressions they replace gave, the prefilter's shared checks what one check per rule gave,
and a big scan in worker processes what a scan in this process gives, in the same order; a
worker that fails or dies is a clear error, Ctrl-C stops the scan."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from leaseline.scan import Scanner, _engine, _kingfisher, _pool, _prefilter
from leaseline.scan._sources import (
    _CONCAT,
    _MAX_BLOBS,
    Segment,
    _b64_text,
    b64_blobs,
    concat_lines,
    decoded_segments,
)
from leaseline.scan.corpus import make_corpus

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ["python"] + (["kingfisher"] if _kingfisher.available() else [])

# -- the expressions the finders replace, and the loop around them, as they were -----------------

_OLD_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}")


def _old_decoded(text: str, raw: str | None = None, where: str | None = None) -> Iterator[Segment]:
    lines_done: set[int] = set()
    if raw is None and ("' " in text or '" ' in text or "'." in text or '"+' in text):
        for m in _CONCAT.finditer(text):
            start = text.rfind("\n", 0, m.start()) + 1
            if start in lines_done or len(lines_done) >= _MAX_BLOBS:
                continue
            lines_done.add(start)
            end = text.find("\n", m.end())
            joined = _CONCAT.sub("", text[start : end if end >= 0 else len(text)])
            yield Segment(joined, None, text.count("\n", 0, start) + 1)
    for n, m in enumerate(_OLD_B64.finditer(text)):
        if n >= _MAX_BLOBS:
            return
        decoded = _b64_text(m.group())
        if decoded is None:
            continue
        if raw is None:
            line = text.count("\n", 0, m.start()) + 1
        else:
            pos = raw.find(m.group()[:40])
            line = raw.count("\n", 0, pos) + 1 if pos >= 0 else 1
        yield Segment(decoded, f"{where}, base64-decoded" if where else "base64-decoded", line)


def _old_concat_lines(text: str) -> list[int]:
    seen: list[int] = []
    for m in _CONCAT.finditer(text):
        start = text.rfind("\n", 0, m.start()) + 1
        if start not in seen and len(seen) < _MAX_BLOBS:
            seen.append(start)
    return seen


def _b64(n: int, rng: random.Random, alphabet: str = "") -> str:
    chars = alphabet or "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(rng.choice(chars) for _ in range(n))


def _tricky() -> list[str]:
    rng = random.Random(25)
    forty, long = _b64(40, rng), _b64(57, rng)
    encoded = __import__("base64").b64encode(b"token = 'not a secret, a test string'").decode()
    return [
        "",
        forty,  # exactly 40, the whole text
        _b64(39, rng),  # one short
        f"{long}==",  # padding at the end
        f"{long}===tail {forty}",  # three '=': two taken, the third ends it
        f"x={long}=",
        f"é ü {encoded} 終わり {forty}",  # characters that are more than one byte before a blob
        f"\ud800{forty}\udfff {encoded}",  # lone surrogates (a notebook's JSON can hold them)
        f"{forty}é{forty}",  # a non-ASCII character between two runs
        f"-_{long}_-",  # the URL-safe characters are part of a run
        f"{_b64(45, rng, 'AB-_')}+/{_b64(10, rng)}",  # both alphabets in one run
        "a" * 39 + "=" + "b" * 40,
        "\n".join([f"line {i}: {encoded}" for i in range(_MAX_BLOBS + 5)]),  # over the bound
        f"{encoded}\n\n\t{encoded}==\r\n{encoded}",
    ]


def _concat_cases() -> list[str]:
    lines = [
        "key = 'sk-' . 'rest'",
        'key = "sk-"+"rest"  # and "a" + "b"',
        "mixed = 'a' . \"b\"",  # different quotes: not a join
        "tabs = '\\t'\t.\t'x'",
        "x = 'a'.'b'.'c'",
        'y = "" + ""',
        "é = 'ü' + 'ö'",
        "nothing to join here",
    ]
    many = "\n".join(f"v{i} = 'a{i}' + 'b'" for i in range(_MAX_BLOBS + 10))
    return ["\n".join(lines), "\n".join(reversed(lines)), many, "'.'", "\"+\"\n' . '"]


@pytest.mark.parametrize("text", _tricky())
def test_base64_runs_are_what_the_expression_found(text: str) -> None:
    assert list(b64_blobs(text)) == [m.span() for m in _OLD_B64.finditer(text)]


def test_base64_runs_on_generated_text() -> None:
    rng = random.Random(2025)
    pieces = ["A", "z", "9", "+", "/", "-", "_", "=", "==", " ", "\n", "é", "\ud83d", "."]
    for _ in range(300):
        text = "".join(
            rng.choice(pieces) if rng.random() < 0.3 else _b64(rng.randint(1, 60), rng)
            for _ in range(rng.randint(0, 12))
        )
        assert list(b64_blobs(text)) == [m.span() for m in _OLD_B64.finditer(text)], text


@pytest.mark.parametrize("text", _concat_cases())
def test_concatenated_lines_are_the_ones_the_expression_matched(text: str) -> None:
    assert concat_lines(text) == _old_concat_lines(text)


@pytest.mark.parametrize("text", _tricky() + _concat_cases())
def test_decoded_segments_are_unchanged(text: str) -> None:
    assert list(decoded_segments(text)) == list(_old_decoded(text))
    raw = f'{{"cells": [{{"source": "{text[:60]}"}}]}}\n' * 3
    assert list(decoded_segments(text, raw, "cell 1")) == list(_old_decoded(text, raw, "cell 1"))


# -- the prefilter's shared checks ---------------------------------------------------------------


def _one_check_per_rule(text: str, kind: str, pre: _prefilter.Prefilter) -> list[object]:
    """plan() as it was: every generic rule's own check after every anchor."""
    out: list[object] = []
    hay = text.encode("ascii", "replace").lower()
    assert pre._automaton is not None
    by_word: dict[int, list[tuple[int, int]]] = {}
    for index, start, end in pre._automaton.find_matches_as_indexes(hay, overlapping=True):
        by_word.setdefault(index, []).append((start, end))
    for entry in pre.entries:
        if entry.assigned is None or (entry.rule.kinds and kind not in entry.rule.kinds):
            continue
        hits = sorted(h for w in entry.indexes for h in by_word.get(w, []))
        last, spans = -1, []
        for start, end in hits:
            if not entry.assigned.match(text, end):
                continue
            ahead = text[max(start - _prefilter._NAME_MAX, 0) : start]
            lo = start - len(ahead) + len(ahead.rstrip(_prefilter._NAME_CHARS))
            if lo != last:
                last = lo
                spans.append(lo)
        if spans:
            out.append((entry.rule.id, spans))
    return out


def test_the_shared_checks_pass_where_each_rules_own_check_did() -> None:
    scanner = Scanner(engine="python")
    pre = scanner._prefilter
    samples = [
        'api_key = "abcdefgh12345678"\nclient.token(x)\n<password>hunter2hunter2</password>',
        'run --auth-token abcdefgh12345678 --secret=xyz\nPASS="x" export TOKEN=abcdefghijk',
        '<add key="ApiKey" value="abcdefgh12345678"/>\n<td>password</td><td>abcdefgh1234</td>',
        "accessToken: abcdefghijklmnop\nprivate_key ? credentials=> 'abcdefghijkl'",
        (ROOT / "integrations" / "scan" / "_rules.py").read_text(),
        (ROOT / "docs" / "scan.md").read_text(),
    ]
    for text in samples:
        for kind in ("text", "env", "xml"):
            marked = {}
            for entry in pre.entries:
                if entry.assigned is None or (entry.rule.kinds and kind not in entry.rule.kinds):
                    continue
                kept = _kept(text, pre, entry)
                if kept:
                    marked[entry.rule.id] = kept
            assert list(marked.items()) == _one_check_per_rule(text, kind, pre)


def test_a_context_that_can_start_inside_the_name_keeps_its_backtracking() -> None:
    from leaseline.scan._rules import Rule

    assert _prefilter._starts_after_name(r"(?:\s){0,}(?:=|:)", 0)
    assert _prefilter._starts_after_name(r"(?<=\w)['\"]", 0)
    for rest in (r"(?:x){0,1}=", r"(?:=|[a-z])", r"(?:\s){0,}", r"[^<]", r".", r"(?:=){0,1}"):
        assert not _prefilter._starts_after_name(rest, 0), rest
    # a context that may begin with a name character (`_x=`): one rule's check alone, as before
    rules = [
        Rule(
            f"generic-{tail}",
            "generic",
            "generic",
            re.compile(rf"(?P<name>[\w.\-]{{0,20}}?token){tail}(?P<s>[A-Za-z0-9]{{8,}})"),
            lambda v: True,
            None,
        )
        for tail in ("_x=", "=", "[_=]")
    ]
    pre = _prefilter.Prefilter(rules)
    assert [c.pattern.startswith(r"[\w.\-]*+") for c in pre._checks] == [False, True]
    text = "my_token_x=abcdefgh12 token=abcdefgh12 other.token_=abcdefgh1 tokens, token_x"
    assert sorted(_one_check_per_rule(text, "text", pre)) == sorted(
        (entry.rule.id, _kept(text, pre, entry)) for entry in pre.entries if _kept(text, pre, entry)
    )


def _kept(text: str, pre: _prefilter.Prefilter, entry: _prefilter._Entry) -> list[int]:
    slot = pre._slots[pre.entries.index(entry)]
    assert slot is not None and pre._automaton is not None
    hay = text.encode("ascii", "replace").lower()
    hits = [
        (s, e)
        for i, s, e in pre._automaton.find_matches_as_indexes(hay, overlapping=True)
        if i in entry.indexes
    ]
    los = [
        lo
        for _, _, lo, regs in _prefilter._mark(text, hits, pre._checks[slot[0]])
        if regs[slot[1]][0] >= 0
    ]
    return [lo for i, lo in enumerate(los) if i == 0 or lo != los[i - 1]]


# -- worker processes ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def forkable(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite's servers run threads in this process; the scanner would not fork then (see
    test_no_fork_while_another_thread_runs): these tests fork anyway (their workers only scan)."""
    if request.node.name != "test_no_fork_while_another_thread_runs":
        monkeypatch.setattr(_pool, "forkable", lambda: True)


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More files than a pool needs, secrets generated now (``secrets``: never committed)."""
    root = tmp_path_factory.mktemp("big-tree")
    make_corpus(root, copies=3, filler=90)
    assert sum(len(files) for _, _, files in os.walk(root)) >= _pool.POOL_FILES
    return root


def _rows(found: list[_engine.Finding]) -> list[tuple[object, ...]]:
    return [(f.path, f.line, f.rule, f.hashed_secret, f.location, f.confidence) for f in found]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_pool_finds_what_one_process_finds_in_the_same_order(
    big_tree: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = Scanner(engine=engine, workers=1)
    alone = serial.scan_paths([str(big_tree)])
    pooled = Scanner(engine=engine, workers=2)
    used: list[int] = []
    real = Scanner._scan_in_pool

    def spy(self: Scanner, jobs: list[tuple[str, str]]) -> list[_engine.Finding]:
        used.append(len(jobs))
        return real(self, jobs)

    monkeypatch.setattr(Scanner, "_scan_in_pool", spy)
    if engine == "kingfisher":
        # the workers use the compiled rules they were forked with: building them again fails
        def refuse(self: object) -> None:
            raise AssertionError("a worker compiled Kingfisher's rules again")

        monkeypatch.setattr(_kingfisher.NativeEngine, "__init__", refuse)
    found = pooled.scan_paths([str(big_tree)])
    assert used, "the scan did not use worker processes"
    assert alone and _rows(found) == _rows(alone)
    assert [f.secret for f in found] == [f.secret for f in alone]
    assert (pooled.files_scanned, pooled.bytes_scanned) == (
        serial.files_scanned,
        serial.bytes_scanned,
    )


def test_a_small_scan_stays_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        (tmp_path / f"m{i}.py").write_text("x = 1\n")

    def no_pool(self: Scanner, jobs: list[tuple[str, str]]) -> list[_engine.Finding]:
        raise AssertionError("a pool for five small files")

    monkeypatch.setattr(Scanner, "_scan_in_pool", no_pool)
    assert Scanner(engine="python", workers=2).scan_paths([str(tmp_path)]) == []


def test_no_fork_while_another_thread_runs(big_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pool(self: Scanner, jobs: list[tuple[str, str]]) -> list[_engine.Finding]:
        raise AssertionError("forked while another thread ran")

    monkeypatch.setattr(Scanner, "_scan_in_pool", no_pool)
    assert _pool.forkable.__name__ == "forkable"  # the scanner's own check
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert Scanner(engine="python", workers=2).scan_paths([str(big_tree)])
    finally:
        stop.set()
        other.join()


def test_a_worker_that_raises_names_the_file_not_the_message(
    big_tree: Path, monkeypatch: pytest.MonkeyPatch, canary: object
) -> None:
    value = canary.new("in-the-message")  # type: ignore[attr-defined]
    real = Scanner.scan_source

    def broken(self: Scanner, src: object, inner: str | None = None) -> list[_engine.Finding]:
        if str(getattr(src, "path", "")).endswith("mod_7.py"):
            raise ValueError(f"could not read {value}")
        return real(self, src, inner)  # type: ignore[arg-type]

    monkeypatch.setattr(Scanner, "scan_source", broken)
    with pytest.raises(RuntimeError) as info:
        Scanner(engine="python", workers=2).scan_paths([str(big_tree)])
    text = "".join(__import__("traceback").format_exception(info.value))
    assert "mod_7.py" in str(info.value) and "ValueError" in str(info.value)
    assert value not in text and "in-the-message" not in text


def test_a_worker_that_dies_is_an_error_not_a_hang(
    big_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, parent = Scanner.scan_source, os.getpid()

    def dying(self: Scanner, src: object, inner: str | None = None) -> list[_engine.Finding]:
        if str(getattr(src, "path", "")).endswith("mod_7.py") and os.getpid() != parent:
            os._exit(9)  # as the OOM killer would end it
        return real(self, src, inner)  # type: ignore[arg-type]

    monkeypatch.setattr(Scanner, "scan_source", dying)
    with pytest.raises(RuntimeError, match="worker process ended unexpectedly"):
        Scanner(engine="python", workers=2).scan_paths([str(big_tree)])


def test_workers_must_be_a_positive_number(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("two", "0", "-1"):
        monkeypatch.setenv("LEASELINE_SCAN_WORKERS", bad)
        with pytest.raises(ValueError, match="LEASELINE_SCAN_WORKERS"):
            Scanner(engine="python")
    monkeypatch.setenv("LEASELINE_SCAN_WORKERS", "3")
    assert Scanner(engine="python").workers == 3


_SLOW_SCAN = textwrap.dedent(
    """
    import signal, sys, time
    from leaseline.scan import Scanner
    # as at a terminal (a background job of a shell without job control starts with it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    real = Scanner.scan_source
    def slow(self, src, inner=None):
        time.sleep(0.05)
        return real(self, src, inner)
    Scanner.scan_source = slow
    print("scanning", flush=True)
    Scanner(engine="python", workers=2).scan_paths([sys.argv[1]])
    print("finished", flush=True)
    """
)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_the_scan_and_its_workers(big_tree: Path) -> None:
    # Ctrl-C reaches the terminal's whole process group: the scanner and its workers
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SCAN, str(big_tree)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "scanning\n"
        # the workers are forked and busy once the parent has a child (~15 s of work queued)
        for _ in range(200):
            if subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True).stdout:
                break
            threading.Event().wait(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "finished" not in out
    assert "KeyboardInterrupt" in err
    for _ in range(100):  # the workers end with it (terminated, not left running)
        if not _alive(proc.pid):
            break
        threading.Event().wait(0.1)
    assert not _alive(proc.pid)


def test_workers_end_when_the_scanner_is_killed(big_tree: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SCAN, str(big_tree)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "scanning\n"
        workers: list[int] = []
        for _ in range(200):
            out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
            workers = [int(p) for p in out.stdout.split()]
            if len(workers) == 2:
                break
            threading.Event().wait(0.05)
        assert workers
        proc.kill()  # SIGKILL: no chance to stop its pool
        proc.wait(timeout=30)
        for _ in range(100):
            if not any(_running(pid) for pid in workers):
                break
            threading.Event().wait(0.1)
        assert not any(_running(pid) for pid in workers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
