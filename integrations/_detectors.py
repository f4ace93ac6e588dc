"""Patterns for strings that look like credentials.

Used where a *reference* is expected (a value passed by mistake is refused) and by the KFP spec
check. ``leaseline scan`` builds its detectors on the same table.
"""

from __future__ import annotations

import math
import re
from collections import Counter

#: (name, compiled pattern) for well-known credential formats.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("OpenAI API key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        ("Anthropic API key", r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{20,}"),
        ("Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}"),
        ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}"),
        ("Groq API key", r"\bgsk_[A-Za-z0-9]{40,}"),
        ("Replicate API token", r"\br8_[A-Za-z0-9]{30,}"),
        ("LangSmith API key", r"\blsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}"),
        ("Pinecone API key", r"\bpcsk_[A-Za-z0-9_]{40,}"),
        ("Vault/OpenBao token", r"\b(?:hvs|hvb|hvr|s|b|r)\.[A-Za-z0-9_-]{24,}"),
        ("AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
        ("Slack token", r"\bxox[abpors]-[A-Za-z0-9-]{10,}"),
        ("private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        ("JSON web token", r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
        ("database URL with password", r"\b[a-z][a-z0-9+]*://[^\s:/@]+:[^\s@/]{3,}@[^\s/]+"),
    )
)


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_TOKENISH = re.compile(r"[A-Za-z0-9+/=_.-]{24,}")


def looks_like_credential(text: str) -> str | None:
    """Return the name of the credential kind ``text`` looks like, or ``None``.

    >>> looks_like_credential("vault://secret/llm/openai") is None
    True
    """
    for name, pattern in PATTERNS:
        if pattern.search(text):
            return name
    # A long, dense, high-entropy token with both letters and digits is most likely a key.
    if _TOKENISH.fullmatch(text) and shannon_entropy(text) > 4.0:
        has_digit = any(c.isdigit() for c in text)
        has_alpha = any(c.isalpha() for c in text)
        if has_digit and has_alpha:
            return "high-entropy string"
    return None
