"""Findings as a table, JSON or SARIF 2.1.0. Values never appear: only their redacted form.

Each finding carries its confidence (``high``/``medium``/``low``): after the name in the table,
``confidence`` in JSON, ``properties.confidence`` of each SARIF result. Findings below the
threshold are not listed; the table and the JSON summary count them (``hidden``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ._engine import Finding

__all__ = ["render"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _where(f: Finding) -> str:
    return f"{f.path}:{f.line}" + (f" [{f.location}]" if f.location else "")


def _hidden(hidden: int) -> str:
    if not hidden:
        return ""
    return f"; {hidden} lower-confidence finding(s) not shown (--all shows them)"


def table(findings: Sequence[Finding], files: int, hidden: int = 0) -> str:
    if not findings:
        return f"no credentials found ({files} files scanned{_hidden(hidden)})"
    lines = []
    for f in findings:
        lines.append(f"{_where(f)}: {f.name} {f.redacted} ({f.confidence} confidence)")
        lines.append(f"    -> {f.advice}")
    lines.append(
        f"{len(findings)} finding(s) in {len({f.path for f in findings})} file(s) "
        f"({files} files scanned{_hidden(hidden)})"
    )
    return "\n".join(lines)


def as_json(findings: Sequence[Finding], files: int, hidden: int = 0) -> str:
    doc = {
        "findings": [f.to_dict() for f in findings],
        "summary": {"findings": len(findings), "files_scanned": files, "hidden": hidden},
    }
    return json.dumps(doc, indent=2)


def sarif(findings: Sequence[Finding], files: int, hidden: int = 0) -> str:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in findings:
        rules.setdefault(
            f.rule,
            {
                "id": f.rule,
                "name": f.name,
                "shortDescription": {"text": f.name},
                "defaultConfiguration": {"level": "error"},
                "properties": {"family": f.family, "tags": ["security", "secret"]},
            },
        )
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "level": "error",
            "message": {
                "text": f"{f.name} {f.redacted}"
                + (f" in {f.location}" if f.location else "")
                + f". {f.advice}"
            },
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.path.replace("\\", "/")},
                        "region": {"startLine": f.line},
                    },
                }
            ],
            "partialFingerprints": {"hashedSecret/v1": f.hashed_secret},
            "properties": {"confidence": f.confidence},
        }
        if f.location:
            result["locations"][0]["logicalLocations"] = [{"name": f.location, "kind": "cell"}]
        if f.managed_ref:
            result["properties"]["managedReference"] = f.managed_ref
        results.append(result)
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "leaseline-scan",
                        "informationUri": "https://pypi.org/project/leaseline/",
                        "rules": sorted(rules.values(), key=lambda r: str(r["id"])),
                    }
                },
                "results": results,
                "properties": {"filesScanned": files, "hidden": hidden},
            }
        ],
    }
    return json.dumps(doc, indent=2)


def render(fmt: str, findings: Sequence[Finding], files: int, hidden: int = 0) -> str:
    return {"table": table, "json": as_json, "sarif": sarif}[fmt](findings, files, hidden)
