"""The native engine: MongoDB's Kingfisher rules (``kingfisher-secret-scanner``, the ``scan``
extra) run in process over each segment's bytes.

Kingfisher brings ~490 provider rules (its own and the Betterleaks set, gitleaks-derived) compiled
to one Vectorscan database: ~170 MB/s on one core. It is used for detection only: scanning is
offline, and no ``Validator`` is ever built, so no credential found is sent anywhere. The
compiled rules are cached in leaseline's own cache folder (``$XDG_CACHE_HOME/leaseline`` or
``~/.cache/leaseline``, created private), never in a shared temporary folder; without a usable
home the rules are compiled for each run (~3 s) and nothing is written.

Imported only when a scan starts (``import leaseline`` stays light). Without the package the
pure-Python engine scans alone (:func:`available`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["NativeEngine", "NativeHit", "available", "cache_dir"]

#: words of a Kingfisher rule id -> leaseline's family (advice and references use the family)
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("anthropic", "anthropic"),
    ("openai", "openai"),
    ("hugging", "huggingface"),
    ("gemini", "google"),
    ("google", "google"),
    ("gcp", "google"),
    ("cohere", "cohere"),
    ("mistral", "mistral"),
    ("groq", "groq"),
    ("replicate", "replicate"),
    ("wandb", "wandb"),
    ("weights", "wandb"),
    ("langsmith", "langsmith"),
    ("pinecone", "pinecone"),
    ("vault", "vault"),
    ("aws", "aws"),
    ("private-key", "private-key"),
    ("privatekey", "private-key"),
    ("github", "github"),
    ("slack", "slack"),
    ("credential-uri", "url"),
    ("postgres", "database"),
    ("mysql", "database"),
    ("mongo", "database"),
    ("jdbc", "database"),
    ("jwt", "jwt"),
    ("generic", "generic"),
)


def available() -> bool:
    """Is the Kingfisher SDK installed (without importing it)?"""
    return importlib.util.find_spec("kingfisher_sdk") is not None


def family(rule_id: str) -> str:
    low = rule_id.lower()
    for word, fam in _FAMILIES:
        if word in low:
            return fam
    return "other"


def cache_dir() -> str | None:
    """leaseline's private cache folder for compiled rules, or ``None`` (compile, write nothing)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):
        home = os.environ.get("HOME") or ""
        if not os.path.isabs(home) or not os.path.isdir(home):
            return None
        base = os.path.join(home, ".cache")
    path = os.path.join(base, "leaseline", "kingfisher")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None
    return path


@dataclass(frozen=True, slots=True)
class NativeHit:
    """One Kingfisher finding, reduced to what leaseline keeps (the value stays in memory)."""

    rule: str
    name: str
    family: str
    confidence: str
    line: int  # 1-based, in the scanned bytes
    offset: int  # of the value, in the scanned bytes
    secret: str

    def __repr__(self) -> str:
        return f"NativeHit({self.rule!r}, line={self.line})"


class NativeEngine:
    """Kingfisher's built-in rules at medium confidence and up, offline."""

    def __init__(self) -> None:
        import kingfisher_sdk

        where = cache_dir()
        rules = kingfisher_sdk.Rules(confidence="medium", cache=where is not None, cache_dir=where)
        self.rules = len(rules)
        self.version: str = kingfisher_sdk.__version__
        # base64 blobs are decoded by leaseline's own reader (``_sources``) for both engines: one
        # finding per value, named by its segment (``base64-decoded``), not one per engine
        self._scanner: Any = kingfisher_sdk.DetectionScanner(rules, base64=False)
        self._names: dict[str, tuple[str, str]] = {}

    def scan(self, data: bytes) -> list[NativeHit]:
        out: list[NativeHit] = []
        for f in self._scanner.scan(data):
            if not f.visible:
                continue  # a helper match another rule needs (an AWS key's id...)
            rule = f.rule_id
            if "base64" in rule:
                continue  # an encoded form's rule (``jwt-base64``): the decoded segment has it
            named = self._names.get(rule)
            if named is None:
                named = self._names[rule] = (_short_name(f.rule_name, rule), family(rule))
            where = f.location
            out.append(
                NativeHit(
                    rule,
                    named[0],
                    named[1],
                    f.confidence,
                    where["line"],
                    where["start_offset"],
                    f.secret,
                )
            )
        return out


def _short_name(name: str, rule: str) -> str:
    """Kingfisher names are sentences ("Identified a Groq API Key, which may..."): the rule id's
    last part reads better in a table ("groq-api-key")."""
    tail = rule.split(".", 1)[-1]
    return tail if len(name) > 60 or not name else name
