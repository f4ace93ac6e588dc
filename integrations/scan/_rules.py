"""The scanner's rules: the credential formats of :data:`leaseline._detectors.DETECTORS` (the one
table, shared with ``parse`` and the adapters' checks), plus the context rules (:data:`GENERIC`):
a literal given to a credential-named thing.

Each rule is a regular expression run over a whole text segment (not line by line) with one group,
``s``, capturing the secret, and a ``check`` that rejects look-alikes (placeholders, hashes,
words). The context rules also capture the name (``name``) for :func:`generic_ok`.

The generic rule is keyword + context + value: a name ending in ``password``/``secret``/
``token``/``api_key``...; an assignment (``=``, ``:``, ``:=``, ``?=``, ``=>``, ``define('K', 'v')``),
an XML element or ``key``/``value`` attribute pair, an HTML table row, or a command-line flag (``--api-token=…``);
and a value that looks generated: dense, with a digit (or long and high-entropy), not made of
stock words (``my-secret-token``, ``password1234``), not code (``keyword.$0``), not a digest.
No backreferences, so the patterns also compile for Hyperscan/Vectorscan.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .._detectors import DETECTORS, REFERENCE, Detector, dense, shannon_entropy

__all__ = ["GENERIC", "RULES", "Rule", "generic_ok", "named_digest", "redact"]

#: a rule is a detector; the scanner adds only context rules of its own
Rule = Detector

ENV_LIKE = frozenset({"env", "docker", "yaml", "ini", "shell", "make"})

RULES: tuple[Rule, ...] = DETECTORS


def _r(
    id_: str,
    name: str,
    family: str,
    pattern: str,
    check: Callable[[str], bool],
    kinds: frozenset[str] | None = None,
) -> Rule:
    return Rule(id_, name, family, re.compile(pattern), check, kinds)


#: the separators spelled out (``api_key|api-key|apikey``, not ``api[_-]?key``): the same names,
#: and the prefilter's anchors are these words, not ``api``/``client``/``auth`` (in every file)
_KEYWORD = (
    "(?i:pass(?:word|wd)?|pwd|secret|token|credentials?|"
    + "|".join(
        f"{a}{sep}{b}"
        for a, b in (
            ("api", "key"),
            ("access", "key"),
            ("secret", "key"),
            ("private", "key"),
            ("auth", "key"),
            ("client", "secret"),
        )
        for sep in ("_", "-", "")
    )
    + ")"
)
#: the catch-all's names: anything ending in password/secret/token/key...
_GENERIC_NAME = r"(?P<name>(?<![\w.\-])(?:[A-Za-z_][\w.\-]{0,60}?)?" + _KEYWORD + ")"
# a quote, escaped inside a JSON or code string (``{\"api_key\": \"…\"}``) or not; Go raw strings
_Q = r"\\?['\"`]"
_VALUE = r"(?P<s>[^'\"`\s\\]{8,200})"

GENERIC: tuple[Rule, ...] = (
    _r(
        "generic-secret",
        "secret assigned to a credential-named variable",
        "generic",
        # NAME = "v", NAME: "v", NAME := `v`, 'NAME' => 'v', os.environ["NAME"] = "v",
        # $NAME .= "v"; a declared type between (Go ``var NAME string = "v"``, Kotlin/Python
        # ``NAME: String = "v"``)
        _GENERIC_NAME
        + r"\\?['\"]?\]?(?:(?:[ \t]*:[ \t]*|[ \t]+)[A-Za-z_][\w.]{0,30}\??[ \t]*="
        + r"|\s*(?:::=|:=|\?=|=>|\.=|\+=|:|=))\s*[rbuf]?"
        + _Q
        + _VALUE
        + _Q,
        dense(3.0),
    ),
    _r(
        "generic-secret-call",
        "secret given with a credential name to a setter",
        "generic",
        # define('API_KEY', 'v'), os.environ.setdefault("TOKEN", "v"), os.putenv(...), conf.set(...)
        r"\b(?i:define|setdefault|setenv|putenv|setproperty|set|put)\(\s*['\"]"
        + _GENERIC_NAME
        + r"['\"]\s*,\s*[rbuf]?['\"]"
        + _VALUE
        + r"['\"]",
        dense(3.0),
    ),
    _r(
        "generic-secret-unquoted",
        "secret assigned to a credential-named variable",
        "generic",
        r"(?m)^[ \t]*(?:-[ \t]+|export[ \t]+|(?:ENV|ARG)[ \t]+)?"
        + _GENERIC_NAME
        + r"[ \t]*(?:=|::?=|\?=|:[ \t]|[ \t])[ \t]*(?P<s>[^'\"\s#]{8,200})[ \t]*$",
        dense(3.0),
        # a notebook's ``!env`` output is such a line too
        kinds=ENV_LIKE | {"notebook"},
    ),
    _r(
        "generic-secret-yaml-block",
        "secret in a credential-named YAML block scalar",
        "generic",
        # NAME: |  (or >, |-, >+2) and the value on the next, indented line
        r"(?m)^[ \t]*(?:-[ \t]+)?"
        + _GENERIC_NAME
        + r"[ \t]*:[ \t]*[|>][+-]?[0-9]?[ \t]*\r?\n[ \t]+(?P<s>[^'\"\s#]{8,200})[ \t]*\r?$",
        dense(3.0),
        kinds=frozenset({"yaml"}),
    ),
    _r(
        "generic-secret-csv",
        "secret in a credential-named row of a table file",
        "generic",
        # name,value (a CSV or TSV export of settings)
        r"(?m)^[ \t]*['\"]?"
        + _GENERIC_NAME
        + r"['\"]?[ \t]*[,;\t][ \t]*['\"]?(?P<s>[^'\"\s,;]{8,200})['\"]?[ \t]*(?:[,;\t]|\r?$)",
        dense(3.0),
        kinds=frozenset({"csv"}),
    ),
    _r(
        "generic-secret-xml",
        "secret in a credential-named XML element",
        "generic",
        r"<(?P<name>[\w.:-]{0,60}?"
        + _KEYWORD
        + r")(?:\s[^<>]{0,200})?>\s*(?P<s>[^<>\s]{8,200})\s*</",
        dense(3.0),
    ),
    _r(
        "generic-secret-xml-attribute",
        "secret in a credential-named XML setting",
        "generic",
        # <add key="ApiKey" value="v"/>; <setting name="ClientSecret"><value>v</value>
        r"(?i:key|name)\s*=\s*[\"'](?P<name>[\w.:-]{0,60}?"
        + _KEYWORD
        + r")[\"'](?:\s+(?i:value)\s*=\s*[\"']|[^<>]{0,200}>\s*<(?i:value)>)(?P<s>[^\"'<>\s]{8,200})",
        dense(3.0),
    ),
    _r(
        "generic-secret-table",
        "secret in a credential-named row of an HTML table",
        "generic",
        # a notebook's rendered settings: <tr><td>db_password</td><td>v</td></tr>
        r"<t[dh](?:\s[^<>]{0,200})?>\s*"
        + _GENERIC_NAME
        + r"\s*</t[dh]>\s*<td(?:\s[^<>]{0,200})?>\s*(?P<s>[^<>\s]{8,200})\s*</td>",
        dense(3.0),
    ),
    _r(
        "generic-secret-flag",
        "secret given to a credential-named command-line flag",
        "generic",
        r"(?:^|[\s'\"(\[,])--?(?P<name>[A-Za-z][\w-]{0,40}?"
        + _KEYWORD
        + r")(?:=|[ \t]+)['\"]?(?P<s>[^\s'\"\\]{8,200})",
        dense(3.0),
    ),
)

#: names that end in "token" or "key" without being credentials
_NOT_SECRET_NAME = re.compile(
    r"(?i)(?:hash|digest|checksum|sha\d*|md5|fingerprint|etag|salt|_id|_url|"
    r"(?:page|next|prev(?:ious)?|continuation|pagination|cursor|sync|resume|cancel(?:lation)?|"
    r"pad|eos|bos|unk|mask|sep|cls|start|end|special|stop|max|num|total|"
    r"request|client[_-]?request|change|idempotency)[_-]?tokens?|"
    r"public[_-]?key|primary[_-]?key|foreign[_-]?key|sort[_-]?key|cache[_-]?key|partition[_-]?key)$"
)
_CODE = re.compile(
    r"[\[\]{}<>$\\]|^(?:os|env|self|settings|config|process)\.|^(?:https?:)?//|^\.?\.?/|"
    # a format (``%(name)s``, ``%s``, ``%{VAR}``), not a ``%`` in a random value
    r"%(?:\(|\{)|%s(?=$|[/:@.,;\s-])|%d(?=[/:@.,;\s-])"
)
# digests of any length (``b899a0d240b53d9d``), UUIDs
_DIGEST = re.compile(
    r"[0-9a-f]{16,128}|[0-9A-F]{16,128}|[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}|"
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# ``keyword.$0``, ``pkg.module:Attr`` (an entry point)
_DOTTED_WORDS = re.compile(r"[A-Za-z_$@-]+(?:[.:][A-Za-z_$@-]+)+")


#: a neighbour's quote (``token =",Dup:"``) or an operator (``x&&y``); one ``&`` is a value's
_EDGE = re.compile(r"^(?:[,;:=]|&&|\|\|?)|(?:[,;:.]|&&|\|\|?)$")
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[_.-][A-Za-z0-9]+)*")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")


def _random_with_parens(value: str) -> bool:
    """A generated key whose alphabet has parentheses (Django's ``SECRET_KEY``:
    ``!@#$%^&*(-_=+)``), not code: long, dense (code with parentheses, ``Variable.get(conn_id)``,
    stays near 4 bits a character) and with digits."""
    return len(value) >= 32 and shannon_entropy(value) >= 4.5 and any(c.isdigit() for c in value)


def _identifier(value: str) -> bool:
    """``doesExternalFilterPass``, ``X-Amz-Credential``, ``r2_temp_credentials``: a name in code.
    Words then a number (``CorrectHorseBattery42``) read as a password people pick: a finding,
    rated ``low`` as a stand-in (:mod:`._confidence`), not dropped."""
    if not _IDENT.fullmatch(value) or sum(c.isdigit() for c in value) > 2 or value[-1].isdigit():
        return False
    words = _WORD.findall(value)
    letters = sum(len(w) for w in words)
    wordlike = sum(len(w) for w in words if len(w) >= 3 and _VOWEL.search(w))
    return wordlike >= 0.9 * letters


def generic_ok(name: str, value: str) -> bool:
    """The catch-all's value test: looks generated, not a name, a digest, a reference or code."""
    if _NOT_SECRET_NAME.search(name) or REFERENCE.match(value):
        return False
    if _DIGEST.fullmatch(value):
        return False  # a bare digest or UUID: too many checksums and ids look exactly like this
    if _CODE.search(value) or _DOTTED_WORDS.fullmatch(value) or _EDGE.search(value):
        return False
    if ("(" in value or ")" in value) and not _random_with_parens(value):
        return False  # a call (``getenv(NAME)``), not a value
    if _identifier(value):
        return False
    # a label ("API-Token", "Contrasenya") has no digit; a long random value has entropy
    if not any(c.isdigit() for c in value):
        return len(value) >= 16 and shannon_entropy(value) >= 3.5
    return True


#: keys shaped like digests, which :func:`generic_ok` drops, that a name can still give an owner:
#: (words in the name, the table's detector for that provider's named key)
_DIGEST_OWNERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)datadog|(?<![a-z])dd[_-]?(?:api|app)"), "datadog"),
    (re.compile(r"(?i)wandb|weights[_-]?and[_-]?biases"), "wandb"),
    (re.compile(r"(?i)azure[_-]?openai|openai[_-]?azure"), "azure-openai"),
)
_BY_ID = {d.id: d for d in DETECTORS}


def named_digest(name: str, value: str) -> Rule | None:
    """The provider's rule when a credential-named, digest-shaped ``value`` is that provider's
    key by its name (``wandb_token`` in an HTML table, ``datadog_token: |`` in YAML): the same
    detector, tried on ``NAME = "value"``; else ``None``."""
    for words, rule_id in _DIGEST_OWNERS:
        if words.search(name):
            rule = _BY_ID[rule_id]
            m = rule.pattern.search(f'{name} = "{value}"')
            if m is not None and m.group("s") == value and rule.check(value):
                return rule
    return None


def redact(value: str) -> str:
    """A form that identifies a finding without showing it: ``sk-p…(51 chars)``."""
    head = value[:4] if len(value) >= 16 else ""
    return f"{head}…({len(value)} chars)"
