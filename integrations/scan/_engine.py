"""The scanner: rules over segments, findings out.

Every rule's expression runs once over a whole segment (C-speed ``finditer``), not once per line
per plugin as ``detect-secrets`` does; line numbers are computed only for the rare hits. The
regex detectors of ``detect-secrets`` for non-ML services (Stripe, Twilio, SendGrid, GitLab,
JWT...) run the same way, so their coverage comes along. detect-secrets' entropy and keyword
heuristics are replaced by :data:`~._rules.GENERIC`, which knows what a hash or a reference is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from ._rules import GENERIC, RULES, Rule, generic_ok, redact
from ._sources import Segment, SourceFile, iter_paths, read_file, segments

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


class Scanner:
    """Finds credentials in files, notebooks and the git index.

    >>> Scanner().scan_text("config.py", 'url = "postgresql://app:pw@db/x"')  # doctest: +SKIP
    """

    def __init__(self, *, rules: Iterable[Rule] | None = None, detect_secrets: bool = True) -> None:
        base = tuple(rules) if rules is not None else RULES + GENERIC
        self.rules: tuple[Rule, ...] = base + (_ds_rules() if detect_secrets else ())
        self._by_kind: dict[str, tuple[Rule, ...]] = {}
        self.files_scanned = 0
        self.bytes_scanned = 0

    def _rules_for(self, kind: str) -> tuple[Rule, ...]:
        rules = self._by_kind.get(kind)
        if rules is None:
            rules = tuple(r for r in self.rules if r.kinds is None or kind in r.kinds)
            self._by_kind[kind] = rules
        return rules

    # -- entry points ---------------------------------------------------------------------------

    def scan_paths(self, paths: Iterable[str], excludes: Iterable[str] = ()) -> list[Finding]:
        out: list[Finding] = []
        for path in iter_paths(paths, excludes):
            src = read_file(path)
            if src is not None:
                out += self.scan_source(SourceFile(_display(path), src.data))
        return out

    def scan_sources(self, sources: Iterable[SourceFile]) -> list[Finding]:
        out: list[Finding] = []
        for src in sources:
            out += self.scan_source(src)
        return out

    def scan_text(self, path: str, text: str) -> list[Finding]:
        return self.scan_source(SourceFile(path, text.encode("utf-8")))

    def scan_source(self, src: SourceFile) -> list[Finding]:
        self.files_scanned += 1
        self.bytes_scanned += len(src.data)
        kind, raw, segs = segments(src)
        findings: list[Finding] = []
        cursor: dict[str, int] = {}  # notebook: where to look for the next copy of a value
        seen: set[tuple[int, str]] = set()  # a value two segments share (W&B config) once
        for seg in segs:
            for finding in self._scan_segment(src.path, kind, seg):
                if seg.in_json:
                    finding = replace(finding, line=_json_line(raw, finding.secret, cursor))
                elif (finding.line, finding.hashed_secret) in seen:
                    continue
                seen.add((finding.line, finding.hashed_secret))
                findings.append(finding)
        return findings

    # -- the core loop --------------------------------------------------------------------------

    def _scan_segment(self, path: str, kind: str, seg: Segment) -> Iterator[Finding]:
        text = seg.text
        taken: list[tuple[int, int]] = []
        for rule in self._rules_for(kind):
            for m in rule.pattern.finditer(text):
                value = m.group("s")
                start, end = m.span("s")
                if any(start < e and s < end for s, e in taken):
                    continue
                if not value or not rule.check(value):
                    continue
                if rule.family == "generic" and not generic_ok(m.group("name"), value):
                    continue
                taken.append((start, end))
                line = seg.first_line + text.count("\n", 0, start)
                yield Finding(
                    path=path,
                    line=line,
                    rule=rule.id,
                    name=rule.name,
                    family=rule.family,
                    kind=kind,
                    location=seg.location,
                    redacted=redact(value),
                    hashed_secret=_sha1(value),
                    secret=value,
                )


def _display(path: str) -> str:
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
