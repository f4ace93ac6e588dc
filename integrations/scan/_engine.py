"""The scanner: rules over segments, findings out, each with a confidence.

Two engines, one result. leaseline's own rules (:data:`~._rules.RULES`: the one credential table
with the ML vendors, plus the generic rule) run in Python behind a native prefilter
(:mod:`._prefilter`: an Aho-Corasick pass finds each rule's anchors, and a rule's expression runs
only in the windows around them), so the Python work per file is one automaton pass for most
files. When the ``scan`` extra's Kingfisher SDK is installed (:mod:`._kingfisher`), its ~490
provider rules run natively over the same segments; where both find the same value, leaseline's
finding is kept (its family carries the advice) unless it is only the generic rule's. Without the
SDK, detect-secrets' regex detectors for non-ML services (Stripe, Twilio, SendGrid...) stand in
for Kingfisher's catalogue.

Every finding gets a confidence (:mod:`._confidence`). Kingfisher's findings go through
leaseline's knowledge too: references, placeholders and digests are dropped, keyword findings
whose value reads as a stand-in are ``low``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .._detectors import REFERENCE, is_placeholder
from . import _pool
from ._confidence import KEYWORD_FAMILIES, at_least, comment_line, demote, in_docs
from ._prefilter import Prefilter
from ._rules import GENERIC, RULES, Rule, generic_ok, named_digest, redact
from ._sources import Segment, SourceFile, iter_paths, read_file, segments

if TYPE_CHECKING:
    from ._kingfisher import NativeEngine, NativeHit

__all__ = ["Finding", "Scanner"]


@dataclass(frozen=True)
class Finding:
    """One credential found. The value stays in memory (``secret``) and is never printed."""

    path: str
    line: int
    rule: str
    name: str
    family: str
    kind: str
    location: str | None
    redacted: str
    #: SHA-1 of the value, as detect-secrets baselines store it
    hashed_secret: str
    secret: str = field(repr=False, compare=False)
    managed_ref: str | None = None
    advice: str = ""
    #: ``high``, ``medium`` or ``low`` (:mod:`leaseline.scan._confidence`)
    confidence: str = "medium"

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "location": self.location,
            "rule": self.rule,
            "type": self.name,
            "family": self.family,
            "file_kind": self.kind,
            "redacted": self.redacted,
            "hashed_secret": self.hashed_secret,
            "managed_ref": self.managed_ref,
            "advice": self.advice,
            "confidence": self.confidence,
        }


def _ds_rules() -> tuple[Rule, ...]:
    """detect-secrets' regex detectors for services the table above does not cover."""
    try:
        from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
        from detect_secrets.plugins.discord import DiscordBotTokenDetector
        from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
        from detect_secrets.plugins.jwt import JwtTokenDetector
        from detect_secrets.plugins.mailchimp import MailchimpDetector
        from detect_secrets.plugins.npm import NpmDetector
        from detect_secrets.plugins.pypi_token import PypiTokenDetector
        from detect_secrets.plugins.sendgrid import SendGridDetector
        from detect_secrets.plugins.square_oauth import SquareOAuthDetector
        from detect_secrets.plugins.stripe import StripeDetector
        from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
        from detect_secrets.plugins.twilio import TwilioKeyDetector
    except ImportError:  # pragma: no cover - the scan extra is missing
        return ()
    out: list[Rule] = []
    for cls in (
        AzureStorageKeyDetector,
        DiscordBotTokenDetector,
        GitLabTokenDetector,
        JwtTokenDetector,
        MailchimpDetector,
        NpmDetector,
        PypiTokenDetector,
        SendGridDetector,
        SquareOAuthDetector,
        StripeDetector,
        TelegramBotTokenDetector,
        TwilioKeyDetector,
    ):
        check: Callable[[str], bool] = (
            JwtTokenDetector.is_formally_valid if cls is JwtTokenDetector else (lambda s: True)
        )
        for i, pattern in enumerate(cls.denylist):
            wrapped = re.compile(f"(?P<s>{pattern.pattern})", pattern.flags)
            out.append(
                Rule(f"ds-{cls.__name__}-{i}", str(cls.secret_type), "other", wrapped, check)
            )
    return tuple(out)


def _sha1(value: str) -> str:
    return hashlib.sha1(value.encode("utf-8")).hexdigest()


_ENGINES = ("auto", "kingfisher", "python")


_NATIVE: dict[int, NativeEngine] = {}  # one per process (pid): the compiled rules are reused


def _native(engine: str) -> NativeEngine | None:
    from . import _kingfisher

    if engine == "python" or (engine == "auto" and not _kingfisher.available()):
        return None
    pid = os.getpid()
    if pid not in _NATIVE:
        _NATIVE.clear()  # a forked child builds its own
        _NATIVE[pid] = _kingfisher.NativeEngine()  # ImportError: "kingfisher" asked, missing
    return _NATIVE[pid]


class Scanner:
    """Finds credentials in files, notebooks and the git index.

    ``engine``: ``auto`` (Kingfisher's native rules too when the SDK is installed; the default,
    or ``LEASELINE_SCAN_ENGINE``), ``kingfisher`` (required) or ``python`` (leaseline's rules and
    detect-secrets' only).

    >>> Scanner().scan_text("config.py", 'url = "postgresql://app:pw@db/x"')  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        rules: Iterable[Rule] | None = None,
        detect_secrets: bool = True,
        engine: str | None = None,
        workers: int | None = None,
    ) -> None:
        chosen = engine or os.environ.get("LEASELINE_SCAN_ENGINE") or "auto"
        if chosen not in _ENGINES:
            raise ValueError(f"scan engine {chosen!r}: expected one of {', '.join(_ENGINES)}")
        self.native = _native(chosen)
        base = tuple(rules) if rules is not None else RULES + GENERIC
        # Kingfisher's catalogue covers the services detect-secrets' detectors were here for
        extra = _ds_rules() if detect_secrets and self.native is None else ()
        self.rules: tuple[Rule, ...] = base + extra
        self._prefilter = Prefilter(self.rules, native=self.native is not None)
        self._anchors = {e.rule.id: e for e in self._prefilter.entries}
        self.files_scanned = 0
        self.bytes_scanned = 0
        self._count = threading.Lock()
        #: processes for a big :meth:`scan_paths` (``LEASELINE_SCAN_WORKERS``; default: the CPUs,
        #: <= 4; 1: everything in this process)
        self.workers = workers or _pool.env_workers()

    @property
    def engine(self) -> str:
        """``kingfisher`` or ``python``: what this scanner runs."""
        return "python" if self.native is None else "kingfisher"

    # -- entry points ---------------------------------------------------------------------------

    def scan_paths(self, paths: Iterable[str], excludes: Iterable[str] = ()) -> list[Finding]:
        excludes = tuple(excludes)
        jobs: list[tuple[str, str]] = []
        for root in paths:
            prefix = os.path.join(root, "")
            for path in iter_paths([root], excludes):
                # the path under the scanned root says "tests/", not where the root sits
                inner = path[len(prefix) :] if path.startswith(prefix) else path
                jobs.append((path, inner))
        if self.workers > 1 and _pool.worth_a_pool(jobs) and _pool.forkable():
            return self._scan_in_pool(jobs)
        return self._scan_batch(jobs)

    def _scan_batch(self, batch: list[tuple[str, str]]) -> list[Finding]:
        out: list[Finding] = []
        for path, inner in batch:
            src = read_file(path)
            if src is not None:
                out += self.scan_source(SourceFile(_display(path), src.data), inner)
        return out

    def _scan_in_pool(self, jobs: list[tuple[str, str]]) -> list[Finding]:
        found, files, size = _pool.scan_in_pool(self, jobs)
        with self._count:
            self.files_scanned += files
            self.bytes_scanned += size
        return found

    def scan_sources(self, sources: Iterable[SourceFile]) -> list[Finding]:
        out: list[Finding] = []
        for src in sources:
            out += self.scan_source(src)
        return out

    def scan_text(self, path: str, text: str) -> list[Finding]:
        return self.scan_source(SourceFile(path, text.encode("utf-8")))

    def scan_source(self, src: SourceFile, inner: str | None = None) -> list[Finding]:
        """Findings in one file; ``inner``: its path under the scanned root (confidence)."""
        with self._count:
            self.files_scanned += 1
            self.bytes_scanned += len(src.data)
        kind, raw, segs = segments(src)
        findings: list[Finding] = []
        cursor: dict[str, int] = {}  # notebook: where to look for the next copy of a value
        seen: set[tuple[int, str]] = set()  # a value two segments share (W&B config) once
        shown: set[tuple[str | None, str]] = set()  # a segment read again: what is new in it
        whole = len(segs) == 1 and segs[0].text is raw  # the file's own bytes can go native
        for seg in segs:
            ascii_bytes = src.data if whole and len(src.data) == len(raw) else None
            found = list(self._scan_segment(src.path, kind, seg, inner or src.path, ascii_bytes))
            if self.native is not None:
                data = src.data if whole else seg.text.encode("utf-8", "replace")
                found = _merge(
                    found, self._native_findings(src.path, kind, seg, data, inner or src.path)
                )
            for finding in found:
                if seg.again and (seg.location, finding.hashed_secret) in shown:
                    continue
                shown.add((seg.location, finding.hashed_secret))
                if seg.in_json:
                    finding = replace(finding, line=_json_line(raw, finding.secret, cursor))
                elif (finding.line, finding.hashed_secret) in seen:
                    continue
                seen.add((finding.line, finding.hashed_secret))
                findings.append(finding)
        return findings

    # -- the core loop --------------------------------------------------------------------------

    def _scan_segment(
        self,
        path: str,
        kind: str,
        seg: Segment,
        inner: str | None = None,
        data: bytes | None = None,
    ) -> Iterator[Finding]:
        text = seg.text
        inner = inner or path
        taken: list[tuple[int, int]] = []
        for rule, spans, at_start in self._prefilter.plan(text, kind, data):
            entry = self._anchors[rule.id]
            for lo, hi in spans:
                if at_start:
                    one = rule.pattern.match(text, lo, hi)
                    matches: Iterable[re.Match[str]] = (one,) if one else ()
                else:
                    matches = rule.pattern.finditer(text, lo, hi)
                for m in matches:
                    value = m.group("s")
                    start, end = m.span("s")
                    if any(start < e and s < end for s, e in taken):
                        continue
                    if not value or not rule.check(value):
                        continue
                    rule_id, rule_name, family = rule.id, rule.name, rule.family
                    if family == "generic" and not generic_ok(m.group("name"), value):
                        # a digest-shaped value is a key when its name says whose (Datadog)
                        owner = named_digest(m.group("name"), value)
                        if owner is None:
                            continue
                        rule_id, rule_name, family = owner.id, owner.name, owner.family
                    taken.append((start, end))
                    low = value.lower()
                    # a provider's own prefix in the value (not a keyword's word in it)
                    prefixed = rule.family not in KEYWORD_FAMILIES and any(
                        a in low for a in entry.words
                    )
                    level = demote(
                        "high" if prefixed else "medium",
                        family,
                        value,
                        inner,
                        docs=in_docs(text, start, inner),
                        comment=comment_line(text, start, inner),
                    )
                    yield Finding(
                        path=path,
                        line=seg.first_line + text.count("\n", 0, start),
                        rule=rule_id,
                        name=rule_name,
                        family=family,
                        kind=kind,
                        location=seg.location,
                        redacted=redact(value),
                        hashed_secret=_sha1(value),
                        secret=value,
                        confidence=level,
                    )

    def _native_findings(
        self, path: str, kind: str, seg: Segment, data: bytes, inner: str
    ) -> Iterator[Finding]:
        assert self.native is not None
        for hit in self.native.scan(data):
            if not _native_ok(hit):
                continue
            value = hit.secret
            at = len(data[: hit.offset].decode("utf-8", "replace"))  # bytes -> characters
            yield Finding(
                path=path,
                line=seg.first_line + hit.line - 1,
                rule=hit.rule,
                name=hit.name,
                family=hit.family,
                kind=kind,
                location=seg.location,
                redacted=redact(value),
                hashed_secret=_sha1(value),
                secret=value,
                confidence=demote(
                    hit.confidence,
                    hit.family,
                    value,
                    inner,
                    docs=in_docs(seg.text, at, inner),
                    comment=comment_line(seg.text, at, inner),
                ),
            )


def _native_ok(hit: NativeHit) -> bool:
    """leaseline's knowledge over Kingfisher's findings: references, placeholders, digests."""
    value = hit.secret
    if not value or is_placeholder(value) or REFERENCE.match(value):
        return False
    return hit.family != "generic" or generic_ok("", value)


def _merge(own: list[Finding], native: Iterable[Finding]) -> list[Finding]:
    """leaseline's findings, plus Kingfisher's that find something else. One value found by
    both is leaseline's finding (its family carries the advice), unless that is only the
    generic rule's and Kingfisher knows the provider; the higher confidence is kept."""
    out = list(own)
    for theirs in native:
        for i, ours in enumerate(out):
            if ours.line != theirs.line or not (
                theirs.secret in ours.secret or ours.secret in theirs.secret
            ):
                continue
            best = theirs if at_least(theirs.confidence, ours.confidence) else ours
            keep = theirs if ours.family == "generic" and theirs.family != "generic" else ours
            out[i] = replace(keep, confidence=best.confidence)
            break
        else:
            out.append(theirs)
    return out


def _display(path: str) -> str:
    if not os.path.isabs(path):
        return os.path.normpath(path)  # relative already: as relpath would give it, faster
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _json_line(raw: str, value: str, cursor: dict[str, int]) -> int:
    """Line of the raw notebook JSON holding ``value`` (next occurrence after the last one)."""
    needle = json.dumps(value)[1:-1]
    first = needle.split("\\n", 1)[0]
    pos = raw.find(first, cursor.get(first, 0))
    if pos < 0:
        pos = raw.find(first)
    if pos < 0:
        return 1
    cursor[first] = pos + 1
    return raw.count("\n", 0, pos) + 1
