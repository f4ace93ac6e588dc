"""``leaseline scan``: committed credentials in ML repositories, notebooks included.

Finds AI-platform keys (OpenAI, Anthropic, Hugging Face, Google AI, Cohere, Mistral, Groq,
Replicate, Weights & Biases, LangSmith, Pinecone), Vault/OpenBao tokens, AWS keys, database URLs
with passwords and private keys, plus detect-secrets' regex detectors, in source, notebooks (cell
sources and every output), Dockerfiles, compose and pipeline YAML, ``.env`` files and DAG files.
Each finding says which reference to use instead and, with ``[audit] hmac_key`` configured,
whether it is the *current* value of a managed reference (matched by HMAC, never by value).
With the ``scan`` extra, Kingfisher's native rules (``kingfisher-secret-scanner``) run beside
leaseline's own (:mod:`._engine`); every finding has a confidence (``high``/``medium``/``low``,
:mod:`._confidence`) and :func:`scan` returns those at or above ``confidence`` (default
``medium``).

>>> from leaseline.scan import scan
>>> result = scan(["."])  # doctest: +SKIP
>>> result.exit_code  # doctest: +SKIP
0
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .._config import Config, load_config
from .._exceptions import ConfigError
from ._advice import advise, suggested_reference
from ._baseline import filter_new, load_baseline, write_baseline
from ._confidence import LEVELS, at_least
from ._engine import Finding, Scanner
from ._managed import ManagedValues, managed_references
from ._rules import GENERIC, RULES, Rule, redact
from ._sources import SourceFile, staged_files

if TYPE_CHECKING:
    from .._resolver import Resolver

__all__ = [
    "GENERIC",
    "LEVELS",
    "RULES",
    "Finding",
    "ManagedValues",
    "Rule",
    "ScanResult",
    "Scanner",
    "advise",
    "filter_new",
    "load_baseline",
    "managed_references",
    "redact",
    "report",
    "scan",
    "suggested_reference",
    "write_baseline",
]


@dataclass
class ScanResult:
    """What :func:`scan` found: ``findings`` are the ones not accepted by the baseline."""

    findings: list[Finding]
    all_findings: list[Finding]
    files_scanned: int
    #: (reference, error class) for managed references that could not be read
    managed_errors: list[tuple[str, str]] = field(default_factory=list)
    managed_checked: int = 0
    #: new findings below the confidence threshold (not in ``findings``; ``--all`` shows them)
    hidden: int = 0
    #: ``kingfisher`` or ``python`` (:attr:`Scanner.engine`)
    engine: str = "python"

    @property
    def exit_code(self) -> int:
        return 1 if self.findings else 0


def _under(path: str, roots: Sequence[str]) -> bool:
    norm = os.path.normpath(path)
    return any(
        r in {".", ""}
        or norm == os.path.normpath(r)
        or norm.startswith(os.path.normpath(r) + os.sep)
        for r in roots
    )


def scan(
    paths: Sequence[str] = (),
    *,
    staged: bool = False,
    repo: str = ".",
    baseline: str | None = None,
    config: Config | None = None,
    managed: bool = True,
    excludes: Iterable[str] = (),
    resolver: Resolver | None = None,
    scanner: Scanner | None = None,
    confidence: str | None = None,
) -> ScanResult:
    """Scan ``paths`` (or the staged files of ``repo``), apply the baseline, match managed values.

    ``confidence`` (``high``, ``medium``, ``low``; default ``[scan] confidence``, else
    ``medium``): the lowest confidence reported; findings below it are counted in ``hidden``.
    Raises :class:`~leaseline.ConfigError` for a bad config or baseline file.
    """
    cfg = config if config is not None else load_config()
    section = cfg.section("scan")
    excl = list(excludes) + [str(p) for p in section.get("exclude", []) or []]
    if baseline:
        excl.append(os.path.basename(baseline))  # the baseline's hashes are not findings
    engine = scanner or Scanner()
    if staged:
        sources: Iterable[SourceFile] = (
            s for s in staged_files(repo) if not paths or _under(s.path, paths)
        )
        found = engine.scan_sources(sources)
    else:
        found = engine.scan_paths(paths or ["."], excl)
    result = report(
        found,
        engine.files_scanned,
        cfg,
        baseline=baseline,
        confidence=confidence,
        managed=managed,
        resolver=resolver,
    )
    result.engine = engine.engine
    return result


def report(
    found: list[Finding],
    files_scanned: int,
    cfg: Config,
    *,
    baseline: str | None = None,
    confidence: str | None = None,
    managed: bool = True,
    resolver: Resolver | None = None,
) -> ScanResult:
    """What every scan (paths, the index, images, MLflow runs) reports of what it found: the
    baseline's accepted findings left out, managed values matched, findings below the
    confidence threshold counted in ``hidden``, advice added. A finding that is the current
    value of a managed reference is ``high`` whatever its rule said: it is certain."""
    threshold = _threshold(confidence or cfg.section("scan").get("confidence"))
    accepted = load_baseline(baseline) if baseline else set()
    fresh = filter_new(found, accepted)
    result = ScanResult(fresh, found, files_scanned)
    if fresh and managed:
        fresh = _match_managed(fresh, cfg, resolver, result)
    fresh = [replace(f, confidence="high") if f.managed_ref else f for f in fresh]
    new = [f for f in fresh if at_least(f.confidence, threshold)]
    result.hidden = len(fresh) - len(new)
    result.findings = [replace(f, advice=advise(f, cfg.aliases)) for f in new]
    return result


def _threshold(value: object) -> str:
    level = str(value or "medium").lower()
    if level not in LEVELS:
        raise ConfigError(
            f"scan confidence {value!r}: expected one of {', '.join(LEVELS)} "
            "(--confidence, or [scan] confidence)"
        )
    return level


def _match_managed(
    findings: list[Finding], cfg: Config, resolver: Resolver | None, result: ScanResult
) -> list[Finding]:
    if not cfg.section("audit").get("hmac_key"):
        return findings
    from .._resolver import Resolver

    own = resolver is None
    res = resolver if resolver is not None else Resolver(cfg, handle_signals=False)
    try:
        values = ManagedValues.from_resolver(res)
    finally:
        if own:
            res.close()
    if values is None:
        return findings
    result.managed_errors = values.errors
    result.managed_checked = len(values)
    return [replace(f, managed_ref=values.match(f.secret)) for f in findings]
