"""The detector table: one :class:`Rule` per credential format, plus the context rules.

Each rule is a regular expression run over a whole text segment (not line by line) with one group,
``s``, capturing the secret, and a ``check`` that rejects look-alikes (placeholders, hashes,
words). The prefixed formats follow ``leaseline._detectors.PATTERNS``; formats without a prefix
(Cohere, Mistral, Weights & Biases, legacy Pinecone keys, AWS secret keys) are only accepted next
to a name that says what they are, which is what keeps hashes and UUIDs out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .._detectors import shannon_entropy

__all__ = ["GENERIC", "RULES", "Rule", "redact"]

#: stand-ins people commit instead of a value: never findings
PLACEHOLDERS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "secret",
        "token",
        "changeme",
        "change_me",
        "example",
        "placeholder",
        "redacted",
        "none",
        "null",
        "undefined",
        "xxx",
        "xxxx",
        "your_api_key",
        "your-api-key",
        "yourapikey",
        "todo",
        "fixme",
        "dummy",
        "test",
        "user",
        "username",
        "admin",
        "true",
        "false",
    }
)
_PLACEHOLDER_MARKS = re.compile(r"\$\{|\$\(|\{\{|\}\}|<[^>]*>|%\(|%s|\*{3}|x{6}|X{6}|\.\.\.|^\$")
#: a leaseline reference (or any URL-like reference) is what we want people to write
_REFERENCE = re.compile(r"^[a-z][a-z0-9+.-]*://")


def _classes(s: str) -> int:
    return sum(
        (
            any(c.islower() for c in s),
            any(c.isupper() for c in s),
            any(c.isdigit() for c in s),
        )
    )


def is_placeholder(value: str) -> bool:
    low = value.lower().strip("'\"")
    if low in PLACEHOLDERS or _PLACEHOLDER_MARKS.search(value):
        return True
    if len(set(low)) <= 3:  # "aaaaaaaa", "00000000", "x-x-x-x"
        return True
    return any(
        w in low for w in ("your", "example", "placeholder", "dummy", "changeme", "redacted")
    )


def dense(min_entropy: float = 3.0, min_classes: int = 2) -> Callable[[str], bool]:
    """A check: high enough entropy, enough character classes, not a placeholder."""

    def check(value: str) -> bool:
        return (
            not is_placeholder(value)
            and _classes(value) >= min_classes
            and shannon_entropy(value) >= min_entropy
        )

    return check


def _any(value: str) -> bool:
    return not is_placeholder(value)


def _private_key(value: str) -> bool:
    body = re.sub(r"-----[A-Z ]+-----|\s|Proc-Type:.*|DEK-Info:.*", "", value)
    return len(body) >= 64 and not is_placeholder(body)


def _db_password(value: str) -> bool:
    return not is_placeholder(value) and not _REFERENCE.match(value) and len(value) >= 4


@dataclass(frozen=True, slots=True)
class Rule:
    """One detector. ``family`` groups rules for advice (``openai``, ``aws``, ``database``...)."""

    id: str
    name: str
    family: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] = _any
    #: file kinds the rule is limited to (``None``: every kind)
    kinds: frozenset[str] | None = None


def _r(
    id_: str,
    name: str,
    family: str,
    pattern: str,
    check: Callable[[str], bool] = _any,
    kinds: frozenset[str] | None = None,
    flags: int = 0,
) -> Rule:
    return Rule(id_, name, family, re.compile(pattern, flags), check, kinds)


# A name that says "this is the X key", then an assignment, then the value (same line).
def _named(word: str, value: str) -> str:
    return rf"(?i:{word})[\w.\-]{{0,30}}['\"]?\s*(?:[:=]|=>|\(|,)?\s*[\w.\-]{{0,20}}['\"= ]\s*(?P<s>{value})(?![A-Za-z0-9])"


ENV_LIKE = frozenset({"env", "docker", "yaml", "ini", "shell"})

RULES: tuple[Rule, ...] = (
    _r(
        "anthropic",
        "Anthropic API key",
        "anthropic",
        r"\b(?P<s>sk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_-]{20,})",
        dense(3.0),
    ),
    _r(
        "openai-project",
        "OpenAI API key",
        "openai",
        r"\b(?P<s>sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,})",
        dense(3.0),
    ),
    _r("openai", "OpenAI API key", "openai", r"\b(?P<s>sk-[A-Za-z0-9_-]{20,})", dense(3.5, 3)),
    _r(
        "huggingface",
        "Hugging Face token",
        "huggingface",
        r"\b(?P<s>(?:hf_|api_org_)[A-Za-z0-9]{30,})",
        dense(3.0),
    ),
    _r(
        "google-ai",
        "Google AI (Gemini) API key",
        "google",
        r"\b(?P<s>AIza[0-9A-Za-z_-]{35})(?![0-9A-Za-z_-])",
        dense(3.0),
    ),
    _r("groq", "Groq API key", "groq", r"\b(?P<s>gsk_[A-Za-z0-9]{40,})", dense(3.0)),
    _r(
        "replicate", "Replicate API token", "replicate", r"\b(?P<s>r8_[A-Za-z0-9]{30,})", dense(3.0)
    ),
    _r(
        "langsmith",
        "LangSmith API key",
        "langsmith",
        r"\b(?P<s>lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10})",
        dense(3.0),
    ),
    _r("pinecone", "Pinecone API key", "pinecone", r"\b(?P<s>pcsk_[A-Za-z0-9_]{40,})", dense(3.0)),
    _r(
        "pinecone-legacy",
        "Pinecone API key (legacy UUID form)",
        "pinecone",
        _named("pinecone", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    ),
    _r(
        "cohere",
        "Cohere API key",
        "cohere",
        _named("cohere|co_api", r"[A-Za-z0-9]{40}"),
        dense(3.5, 3),
    ),
    _r(
        "mistral",
        "Mistral API key",
        "mistral",
        _named("mistral", r"[A-Za-z0-9]{32}"),
        dense(3.5, 3),
    ),
    _r(
        "wandb",
        "Weights & Biases API key",
        "wandb",
        _named("wandb|weights_and_biases", r"[a-f0-9]{40}"),
        dense(3.0, 2),
    ),
    _r(
        "wandb-netrc",
        "Weights & Biases API key (netrc)",
        "wandb",
        r"machine\s+api\.wandb\.ai\s+login\s+\S+\s+password\s+(?P<s>[a-f0-9]{40})",
        dense(3.0, 2),
    ),
    _r(
        "vault-token",
        "Vault/OpenBao token",
        "vault",
        r"\b(?P<s>hv[sbr]\.[A-Za-z0-9_-]{24,})",
        dense(3.0),
    ),
    _r(
        "vault-token-legacy",
        "Vault/OpenBao token (legacy form)",
        "vault",
        r"(?<![\w.])(?P<s>[sbr]\.[A-Za-z0-9]{24})(?![\w.(])",
        dense(3.5, 3),
    ),
    _r(
        "aws-access-key-id",
        "AWS access key id",
        "aws",
        r"\b(?P<s>(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16})\b",
        dense(3.0),
    ),
    _r(
        "aws-secret-access-key",
        "AWS secret access key",
        "aws",
        _named(r"aws[\w.\-]{0,20}secret|secret[_-]?access[_-]?key", r"[A-Za-z0-9/+]{40}"),
        dense(4.0, 3),
    ),
    _r(
        "database-url",
        "database URL with a password",
        "database",
        r"\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|"
        r"oracle|snowflake|clickhouse|cockroachdb)(?:\+[a-z0-9]+)?://[^\s:/@'\"]+:"
        r"(?P<s>[^\s@/'\"]{3,})@[^\s/'\"]+",
        _db_password,
    ),
    _r(
        "private-key",
        "private key",
        "private-key",
        r"(?P<s>-----BEGIN (?P<kt>[A-Z0-9 ]*)PRIVATE KEY(?: BLOCK)?-----[\s\S]{0,10000}?"
        r"-----END (?P=kt)PRIVATE KEY(?: BLOCK)?-----)",
        _private_key,
    ),
    _r("github-token", "GitHub token", "github", r"\b(?P<s>gh[pousr]_[A-Za-z0-9]{36,})", dense()),
    _r("slack-token", "Slack token", "slack", r"\b(?P<s>xox[abpors]-[A-Za-z0-9-]{10,})", dense()),
)

#: the catch-all: a literal assigned to a name that ends in password/secret/token/key
_GENERIC_NAME = (
    r"(?P<name>(?<![\w.\-])(?:[A-Za-z_][\w.\-]{0,60}?)?(?i:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|"
    r"access[_-]?key|secret[_-]?key|private[_-]?key|auth[_-]?key|client[_-]?secret|credentials?))"
)
GENERIC: tuple[Rule, ...] = (
    _r(
        "generic-secret",
        "secret assigned to a credential-named variable",
        "generic",
        _GENERIC_NAME + r"['\"]?\s*(?::|=|:=)\s*[rbuf]?(?P<q>['\"])(?P<s>[^'\"\s]{8,200})(?P=q)",
        dense(3.0),
    ),
    _r(
        "generic-secret-unquoted",
        "secret assigned to a credential-named variable",
        "generic",
        r"(?m)^[ \t]*(?:-[ \t]+|export[ \t]+|(?:ENV|ARG)[ \t]+)?"
        + _GENERIC_NAME
        + r"[ \t]*(?:=|:[ \t]|[ \t])[ \t]*(?P<s>[^'\"\s#]{8,200})[ \t]*$",
        dense(3.0),
        kinds=ENV_LIKE,
    ),
)

_HASHY_NAME = re.compile(r"(?i)(hash|digest|checksum|sha\d*|md5|fingerprint|etag|salt|_id|_url)$")


def generic_ok(name: str, value: str) -> bool:
    """Extra checks for the catch-all: no hashes by name, no references, no code."""
    if _HASHY_NAME.search(name) or _REFERENCE.match(value):
        return False
    if re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", value):
        return False  # a bare digest: too many checksums look exactly like this
    return not re.search(r"[()\[\]{}]|^(?:os|env|self|settings|config)\.", value)


def redact(value: str) -> str:
    """A form that identifies a finding without showing it: ``sk-p…(51 chars)``."""
    head = value[:4] if len(value) >= 16 else ""
    return f"{head}…({len(value)} chars)"
