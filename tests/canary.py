"""Canary plugin: fail any test that leaks a canary secret anywhere it can be seen.

Loaded for every run by ``addopts = "-p tests.canary"``. A test asks the ``canary`` fixture for
unique secret-looking values (``canary.new()``), puts them in stores, and exercises the code. After
the test's ``call`` phase and again after ``teardown``, every canary created so far in the session
is searched for, raw and encoded (base64 at every alignment, URL-safe base64, hex, URL-encoding,
12-character fragments as in pytest's shortened assertion values), in:

- the test's captured stdout/stderr/log sections (``report.sections``),
- the failure text (``longrepr``),
- the test's ``tmp_path``/``tmpdir`` tree, if it used one,
- every path added with ``canary.watch(path)`` (files or directories; scanned incrementally, so a
  leak is reported once, by the test during which it was written),
- the ``extra`` fields of every log record that reached the root logger during the test (the
  attributes a ``LogRecord`` does not have by itself, as a JSON formatter would print them),
- the environment of a live process, when the test calls ``canary.search_environ(pid)`` (e.g. the
  child of ``leaseline run``: ``/proc/PID/environ`` is read at that moment, while it runs).

A hit fails the test with a message naming where the canary was found, never the value; the
report's captured sections and failure text are redacted so the terminal does not show it either.
Not covered: output that bypasses capture (``-s``, ``--capture=no``, live logging to the terminal),
records of loggers that do not propagate to the root logger.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REDACTED = "[CANARY REDACTED]"
MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Canary:
    index: int
    value: str
    owner: str  # node id of the test (or fixture scope) that created it

    def describe(self) -> str:
        return f"canary #{self.index} (created by {self.owner})"


def _b64_cores(raw: bytes, altchars: bytes | None) -> list[bytes]:
    """Base64 of ``raw`` as it appears inside a longer encoded string, at each of 3 alignments."""
    out = []
    n = len(raw)
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw + b"\0\0", altchars=altchars)
        start = -(-8 * pad // 6)  # first char made only of raw's bits
        end = (8 * (pad + n)) // 6  # last char made only of raw's bits (exclusive)
        out.append(enc[start:end])
    return out


def encodings(value: str) -> list[tuple[bytes, str]]:
    """Every form of ``value`` searched for, with a name for each form."""
    raw = value.encode()
    forms: list[tuple[bytes, str]] = [(raw, "verbatim")]
    forms += [(core, "base64-encoded") for core in _b64_cores(raw, None)]
    forms += [(core, "base64url-encoded") for core in _b64_cores(raw, b"-_")]
    forms += [(raw.hex().encode(), "hex-encoded"), (raw.hex().upper().encode(), "hex-encoded")]
    forms += [
        (urllib.parse.quote(value, safe="").encode(), "URL-encoded"),
        (urllib.parse.quote_plus(value).encode(), "URL-encoded"),
    ]
    # pytest shortens long values in assertion messages ("'canary-41...8ce72233b710'"): the
    # first and last 12 characters of the random part count as a (partial) leak too.
    token = value.rsplit("-", 1)[-1]
    if len(token) >= 24:
        forms += [(token[:12].encode(), "partially"), (token[-12:].encode(), "partially")]
    seen: set[bytes] = set()
    unique = []
    for needle, name in forms:
        if needle and needle not in seen:
            seen.add(needle)
            unique.append((needle, name))
    return unique


@dataclass(frozen=True)
class Finding:
    canary: Canary
    form: str
    where: str

    def message(self) -> str:
        return f"{self.canary.describe()} found {self.form} in {self.where}"


@dataclass
class CanaryRegistry:
    """Session-wide: every canary created so far and every watched path."""

    canaries: list[Canary] = field(default_factory=list)
    watched: list[Path] = field(default_factory=list)
    _forms: dict[bytes, tuple[Canary, str]] = field(default_factory=dict)
    _pattern: re.Pattern[bytes] | None = None
    _scanned: dict[Path, int] = field(default_factory=dict)  # watched file -> bytes checked
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new(self, prefix: str = "canary", *, owner: str = "session") -> str:
        value = f"{prefix}-{secrets.token_hex(12)}"
        with self._lock:
            canary = Canary(index=len(self.canaries) + 1, value=value, owner=owner)
            self.canaries.append(canary)
            for needle, form in encodings(value):
                self._forms[needle] = (canary, form)
            # longest first: a verbatim hit is not also reported as a shorter encoded form
            needles = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile(b"|".join(re.escape(n) for n in needles))
        return value

    def watch(self, path: str | os.PathLike[str]) -> None:
        p = Path(path).absolute()
        with self._lock:
            if p not in self.watched:
                self.watched.append(p)

    @property
    def active(self) -> bool:
        return self._pattern is not None

    # --- searching -------------------------------------------------------------------------------

    def _hits(self, data: bytes, start: int = 0) -> list[tuple[int, Canary, str]]:
        """(end offset, canary, form) of every occurrence in ``data[start:]``."""
        pattern = self._pattern
        if pattern is None:
            return []
        return [(m.end(), *self._forms[m.group()]) for m in pattern.finditer(data, start)]

    def scan_text(self, text: str, where: str) -> list[Finding]:
        return [
            Finding(c, form, where) for _, c, form in self._hits(text.encode("utf-8", "replace"))
        ]

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        data = pattern.sub(REDACTED.encode(), text.encode("utf-8", "surrogateescape"))
        return data.decode("utf-8", "surrogateescape")

    def scan_tree(self, root: Path, label: str) -> list[Finding]:
        """Every file under ``root`` (or ``root`` itself), read whole."""
        findings = []
        for f in _files(root):
            data = _read(f)
            if data is not None:
                findings += [
                    Finding(c, form, f"{label} file {f}") for _, c, form in self._hits(data)
                ]
        return findings

    def scan_watched(self) -> list[Finding]:
        """New bytes of watched files since the last scan (a leak is reported once)."""
        if not self.active:
            return []
        overlap = max(len(n) for n in self._forms)
        findings = []
        for root in list(self.watched):
            for f in _files(root):
                data = _read(f)
                if data is None:
                    continue
                done = self._scanned.get(f, 0)
                if len(data) < done:  # truncated or replaced: start over
                    done = 0
                for end, c, form in self._hits(data, max(0, done - overlap)):
                    if end > done:  # not already seen by an earlier scan
                        findings.append(Finding(c, form, f"watched file {f}"))
                self._scanned[f] = len(data)
        return findings

    def scan_environ(
        self, pid: int, expected: Iterable[str] = ()
    ) -> tuple[list[Finding], set[str]]:
        """Search the environment of the live process ``pid``, variable by variable, except the
        ``expected`` ones. Returns the findings and the names of the variables it has."""
        try:
            data = Path(f"/proc/{pid}/environ").read_bytes()
            # right after Popen returns, the kernel may not have laid out the new program's
            # environment yet (the exec status pipe closes before it does): empty until then
            for _ in range(100):
                if data:
                    break
                time.sleep(0.02)
                data = Path(f"/proc/{pid}/environ").read_bytes()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError as exc:
            raise AssertionError(f"cannot read the environment of process {pid}: {exc}") from None
        findings: list[Finding] = []
        names: set[str] = set()
        skip = set(expected)
        for entry in data.split(b"\0"):
            name, _, value = entry.partition(b"=")
            if not name:
                continue
            names.add(name.decode(errors="replace"))
            if name.decode(errors="replace") in skip:
                continue
            where = f"the environment of process {pid} ({comm}), variable {name.decode(errors='replace')}"
            findings += [Finding(c, form, where) for _, c, form in self._hits(value)]
        return findings, names

    def scan_records(self, records: Iterable[logging.LogRecord], phase: str) -> list[Finding]:
        """Search the ``extra`` fields of log records (attributes a plain record does not have)."""
        findings: list[Finding] = []
        for record in records:
            for key, value in vars(record).items():
                if key in _RECORD_ATTRS:
                    continue
                try:
                    text = value if isinstance(value, str) else repr(value)
                except Exception:  # a broken __repr__ is not a leak
                    continue
                where = f"log record extra field {key!r} (logger {record.name!r}, {phase})"
                findings += self.scan_text(text, where)
        return findings


#: what every ``LogRecord`` has (anything else came from ``extra=`` or a filter)
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class _RecordCollector(logging.Handler):
    """Keeps every record that reaches the root logger during one test phase."""

    def __init__(self) -> None:
        super().__init__(level=0)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    if not root.is_dir():
        return
    for dirpath, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():
                yield p


def _read(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes()
    except OSError:
        return None


REGISTRY_KEY = pytest.StashKey[CanaryRegistry]()
_CHECKED_KEY = pytest.StashKey[set[str]]()  # phases whose sections were already searched
_REPORTED_KEY = pytest.StashKey[set[tuple[int, str, str]]]()
_PENDING_KEY = pytest.StashKey[list[Finding]]()  # findings of canary.search_environ()
_RECORDS_KEY = pytest.StashKey[list[logging.LogRecord]]()  # records of the phase just run


def registry(config: pytest.Config) -> CanaryRegistry:
    """The session's registry (for session-scoped fixtures that create canaries or watch paths)."""
    return config.stash[REGISTRY_KEY]


class CanaryFixture:
    """What the ``canary`` fixture returns."""

    def __init__(self, reg: CanaryRegistry, owner: str, item: pytest.Item | None = None) -> None:
        self._reg = reg
        self._owner = owner
        self._item = item

    def new(self, prefix: str = "canary") -> str:
        """A unique secret-looking value, searched for after this and every later test."""
        return self._reg.new(prefix, owner=self._owner)

    def watch(self, path: str | os.PathLike[str]) -> None:
        """Search ``path`` (file or directory) after this and every later test."""
        self._reg.watch(path)

    def redact(self, text: str) -> str:
        return self._reg.redact(text)

    def search_environ(self, pid: int, *, expected: Iterable[str] = ()) -> set[str]:
        """Search the environment of the live process ``pid`` now (``/proc/PID/environ``); a
        canary in it fails the test at the end of this phase, except in the ``expected``
        variables (the ones the test hands a value on purpose). Returns the variables' names."""
        findings, names = self._reg.scan_environ(pid, expected)
        if self._item is not None:
            self._item.stash.setdefault(_PENDING_KEY, []).extend(findings)
        elif findings:
            raise AssertionError("; ".join(f.message() for f in findings))
        return names


def pytest_configure(config: pytest.Config) -> None:
    config.stash[REGISTRY_KEY] = CanaryRegistry()


@pytest.fixture(scope="session")
def canary_registry(request: pytest.FixtureRequest) -> CanaryRegistry:
    """The session-wide registry behind ``canary`` (for session-scoped fixtures)."""
    return registry(request.config)


@pytest.fixture
def canary(request: pytest.FixtureRequest) -> CanaryFixture:
    """``canary.new(prefix="canary") -> str``, ``canary.watch(path)``; see module docstring."""
    return CanaryFixture(registry(request.config), request.node.nodeid, request.node)


@contextlib.contextmanager
def _collecting_records(item: pytest.Item) -> Iterator[None]:
    collector = _RecordCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
        item.stash[_RECORDS_KEY] = collector.records


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _collecting_records(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _collecting_records(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    with _collecting_records(item):
        return (yield)


def _section_phase(title: str) -> str:
    return title.rsplit(" ", 1)[-1]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    reg = item.config.stash.get(REGISTRY_KEY, None)
    if reg is None or not reg.active:
        return report
    checked = item.stash.setdefault(_CHECKED_KEY, set())
    reported = item.stash.setdefault(_REPORTED_KEY, set())

    findings: list[Finding] = list(item.stash.get(_PENDING_KEY, []))
    item.stash[_PENDING_KEY] = []
    findings += reg.scan_records(item.stash.get(_RECORDS_KEY, []), call.when)
    item.stash[_RECORDS_KEY] = []
    if call.when in ("call", "teardown"):
        for title, content in report.sections:
            if _section_phase(title) not in checked:
                findings += reg.scan_text(content, f"the test's {title.lower()}")
        checked.update(_section_phase(t) for t, _ in report.sections)
        checked.add(call.when)
        funcargs = getattr(item, "funcargs", None) or {}
        for name in ("tmp_path", "tmpdir"):
            if name in funcargs:
                findings += reg.scan_tree(Path(str(funcargs[name])), name)
        findings += reg.scan_watched()
    longrepr_text = report.longreprtext if report.longrepr is not None else ""
    longrepr_hits = reg.scan_text(longrepr_text, f"the failure text ({call.when})")
    findings += longrepr_hits

    # redact whatever is displayed, whether or not this phase produced the hit
    report.sections = [(title, reg.redact(content)) for title, content in report.sections]
    new = []
    for f in findings:
        key = (f.canary.index, f.form, f.where)
        if key not in reported:
            reported.add(key)
            new.append(f)
    if not new and not longrepr_hits:
        return report

    lines = [f"leaseline canary plugin: secret value leaked ({call.when} phase):"]
    lines += [f"  - {f.message()}" for f in new]
    if report.failed and longrepr_text:
        lines += ["", "original failure, canaries redacted:", reg.redact(longrepr_text)]
    report.outcome = "failed"
    report.longrepr = "\n".join(lines)
    if hasattr(report, "wasxfail"):
        del report.wasxfail
    return report
