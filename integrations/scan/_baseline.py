"""Baselines: accepted findings, in detect-secrets' baseline format (so its tools read ours).

A finding is accepted when the baseline lists the same file and the same ``hashed_secret``
(detect-secrets' SHA-1 of the value); type and line are ignored, so edits elsewhere in the file and
baselines written by ``detect-secrets scan`` both keep working.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from .._exceptions import ConfigError
from ._engine import Finding

__all__ = ["filter_new", "load_baseline", "write_baseline"]


def _norm(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def load_baseline(path: str) -> set[tuple[str, str]]:
    """(file, hashed_secret) pairs accepted by the baseline at ``path``.

    Raises :class:`ConfigError` when the file is missing or not a baseline.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"baseline {path} does not exist; create it with --update-baseline"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"baseline {path} is not JSON: {exc}") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise ConfigError(f"baseline {path}: expected a 'results' table (detect-secrets format)")
    accepted: set[tuple[str, str]] = set()
    for filename, entries in results.items():
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and "hashed_secret" in entry:
                accepted.add(
                    (_norm(str(entry.get("filename", filename))), str(entry["hashed_secret"]))
                )
    return accepted


def filter_new(findings: Iterable[Finding], accepted: set[tuple[str, str]]) -> list[Finding]:
    return [f for f in findings if (_norm(f.path), f.hashed_secret) not in accepted]


def write_baseline(path: str, findings: Iterable[Finding]) -> int:
    """Write ``findings`` as a detect-secrets baseline; returns how many entries."""
    results: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, str]] = set()
    for f in sorted(findings, key=lambda f: (_norm(f.path), f.line)):
        key = (_norm(f.path), f.hashed_secret)
        if key in seen:
            continue
        seen.add(key)
        results.setdefault(key[0], []).append(
            {
                "type": f.name,
                "filename": key[0],
                "hashed_secret": f.hashed_secret,
                "is_verified": False,
                "line_number": f.line,
            }
        )
    doc = {
        "version": "1.5.0",
        "generated_by": "leaseline scan",
        "plugins_used": [],
        "filters_used": [],
        "results": results,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return len(seen)
