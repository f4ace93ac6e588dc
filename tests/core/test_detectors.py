"""One credential-pattern table: what ``leaseline scan`` flags, the core treats as a credential.

``_detectors.DETECTORS`` is the only table. For every detector in it, a key of that format (made
now, never committed) is flagged by the scanner under that detector, named by
``looks_like_credential`` (the adapters' and KFP's check), and refused by ``parse`` without being
quoted; a placeholder of the same shape is none of these.
"""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Callable

import pytest
from leaseline import InvalidReference, parse
from leaseline._detectors import (
    DETECTORS,
    Detector,
    find_credential,
    is_placeholder,
    looks_like_credential,
    shannon_entropy,
)
from leaseline.scan import RULES, Scanner

_ALNUM = string.ascii_letters + string.digits


def _an(n: int) -> str:
    while True:
        out = "".join(secrets.choice(_ALNUM) for _ in range(n))
        if all(any(test(c) for c in out) for test in (str.isdigit, str.isupper, str.islower)):
            return out


def _hex(n: int) -> str:
    while True:
        out = secrets.token_hex(n // 2)
        if any(c.isdigit() for c in out) and any(c.isalpha() for c in out):
            return out


def _pem() -> str:
    body = base64.b64encode(secrets.token_bytes(300)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    kind = "EC " + "PRIVATE KEY"  # armor from parts: this file is no PEM look-alike
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----"


def _upper(n: int) -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def _num(n: int) -> str:
    return str(1 + secrets.randbelow(9)) + "".join(
        secrets.choice(string.digits) for _ in range(n - 1)
    )


def _b64(n: int) -> str:
    while True:
        out = base64.b64encode(secrets.token_bytes(n)).decode()
        if any(c.isdigit() for c in out):
            return out


def _uuid() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _aws_key_id() -> str:
    """Base32 after the prefix; a draw the detector's density check rejects (~1 in 50 of a
    14-letter alphabet came out under 3 bits a character: a flaky run) is drawn again."""
    while True:
        out = "ABIA" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ234567") for _ in range(16))
        if shannon_entropy(out) >= 3.3:
            return out


def sample(detector_id: str) -> tuple[str, str]:
    """(a line holding a key of this format, the key): generated now."""

    def jwt_part() -> str:
        return "eyJ" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")

    value = {
        "anthropic": lambda: f"sk-ant-oat01-{_an(40)}",
        "openai-project": lambda: f"sk-svcacct-{_an(40)}",
        "openai": lambda: f"sk-{_an(48)}",
        "huggingface": lambda: f"api_org_{_an(34)}",
        "google-ai": lambda: f"AIza{_an(35)}",
        "groq": lambda: f"gsk_{_an(52)}",
        "replicate": lambda: f"r8_{_an(37)}",
        "langsmith": lambda: f"lsv2_pt_{_hex(32)}_{_hex(10)}",
        "pinecone": lambda: f"pcsk_{_an(60)}",
        "pinecone-legacy": _uuid,
        "cohere": lambda: _an(40),
        "mistral": lambda: _an(32),
        "wandb": lambda: _hex(40),
        "wandb-netrc": lambda: _hex(40),
        "vault-token": lambda: f"hvs.{_an(90)}",
        "vault-token-legacy": lambda: f"s.{_an(24)}",
        "aws-access-key-id": _aws_key_id,
        "aws-secret-access-key": lambda: _an(40),
        "database-url": lambda: _an(20),
        "url-password": lambda: _an(20),
        "private-key": _pem,
        "jwt": lambda: f"{jwt_part()}.{jwt_part()}.{_an(43)}",
        "github-token": lambda: f"ghp_{_an(36)}",
        "slack-token": lambda: f"xoxb-{_an(12)}-{_an(24)}",
        "slack-app-token": lambda: f"xapp-1-A{_upper(10)}-{_num(13)}-{_hex(64)}",
        "slack-webhook": lambda: (
            f"https://hooks.slack.com/services/T{_upper(10)}/B{_upper(10)}/{_an(24)}"
        ),
        "stripe": lambda: "rk_" + f"live_{_an(99)}",
        "stripe-webhook-secret": lambda: "whsec" + f"_{_an(32)}",
        "braintree-access-token": lambda: (
            "access" + f"_token$production${_upper(16).lower()}${_hex(32)}"
        ),
        "discord-webhook": lambda: (
            "https://discord.com/api/" + f"webhooks/{_num(18)}/{_an(60)}-{_an(7)}"
        ),
        "perplexity": lambda: "pplx" + f"-{_an(48)}",
        "discord-bot-token": lambda: f"MT{_an(24)}.{_an(6)}.{_an(38)}",
        "pypi-token": lambda: "pypi" + f"-AgEIcHlwaS5vcmc{_an(120)}",
        "sentry-auth-token": lambda: "sntry" + f"u_{_hex(64)}",
        "databricks-token": lambda: f"dapi{_hex(32)}-3",
        "databricks-oauth-secret": lambda: f"dose{_hex(32)}",
        "azure-client-secret": lambda: f"{_an(3)}8Q~{_an(34)}",
        "azure-storage-key": lambda: _b64(64),
        "azure-openai": lambda: _hex(32),
        "azure-openai-client": lambda: _hex(32),
        "datadog": lambda: _hex(32),
        "datadog-agent": lambda: _hex(32),
        "wandb-login": lambda: _hex(40),
        "authorization-header": lambda: _an(40),
        "curl-user": lambda: _an(20),
    }[detector_id]()
    line = {
        "pinecone-legacy": f'PINECONE_API_KEY = "{value}"',
        "cohere": f'COHERE_API_KEY = "{value}"',
        "mistral": f'MISTRAL_API_KEY = "{value}"',
        "wandb": f'WANDB_API_KEY = "{value}"',
        "wandb-netrc": f"machine api.wandb.ai\n  login user\n  password {value}",
        "aws-secret-access-key": f'aws_secret_access_key = "{value}"',
        "database-url": f'DSN = "postgresql+psycopg://app:{value}@db:5432/x"',
        "url-password": f'REMOTE = "https://deploy:{value}@git.internal/repo.git"',
        "azure-storage-key": f'CONN = "AccountName=ml;AccountKey={value};EndpointSuffix=x"',
        "azure-openai": f"AZURE_OPENAI_API_KEY={value}",
        "datadog": f"DD_API_KEY={value}",
        "discord-bot-token": f'client.run("{value}")',
        "datadog-agent": f"api_key: {value}\nsite: datadoghq.eu",
        "azure-openai-client": (
            f'AzureOpenAI(azure_endpoint="https://x.openai.azure.com", api_key="{value}")'
        ),
        "wandb-login": f'wandb.login(host=HOST, key="{value}")',
        "authorization-header": f'curl -H "Authorization: Bearer {value}" https://x.internal',
        "curl-user": f"curl -fsS -u deploy:{value} https://x.internal",
    }.get(detector_id, f'value = "{value}"')
    return line, value


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.id)
def test_the_scanner_and_the_core_flag_the_same_keys(detector: Detector) -> None:
    line, value = sample(detector.id)
    findings = Scanner(detect_secrets=False, engine="python").scan_text("settings.py", line)
    assert [(f.rule, f.secret) for f in findings] == [(detector.id, value)]
    # the core: the same detector, the same value
    found = find_credential(line)
    assert found is not None and found == (detector, value)
    assert looks_like_credential(line) == detector.name
    # given where a reference belongs: refused, and the value is not quoted back
    with pytest.raises(InvalidReference, match="looks like a credential") as info:
        parse(line)
    assert value not in str(info.value)
    # alone, a prefixed key is still recognised (a named format needs its name: never quoted)
    with pytest.raises(InvalidReference) as info:
        parse(value)
    assert value not in str(info.value)
    if detector.find(value) is not None:
        assert looks_like_credential(value) == detector.name


def _placeholder(value: str) -> str:
    """The same shape with a stand-in (``x`` for every letter and digit): nobody's key."""
    keep = {"sk-ant-oat01-": 13, "sk-svcacct-": 11}
    head = next((n for p, n in keep.items() if value.startswith(p)), 4)
    return value[:head] + "".join("x" if c.isalnum() else c for c in value[head:])


@pytest.mark.parametrize("detector", DETECTORS, ids=lambda d: d.id)
def test_a_placeholder_of_the_same_shape_is_flagged_by_neither(detector: Detector) -> None:
    line, value = sample(detector.id)
    line = line.replace(value, _placeholder(value))
    assert Scanner(detect_secrets=False, engine="python").scan_text("settings.py", line) == []
    assert find_credential(line) is None
    assert looks_like_credential(line) is None


def test_the_scanner_has_no_format_table_of_its_own() -> None:
    assert RULES is DETECTORS


@pytest.mark.parametrize(
    "text",
    [
        'curl -u "admin:$ADMIN_PASSWORD" https://nexus.internal/',
        "curl --user ci:%CI_PASSWORD% https://ci.internal/",
        'curl -H "Authorization: Bearer $TOKEN" https://api.internal/',
        'curl -H "Authorization: Bearer {{ inputs.parameters.token }}" https://api.internal/',
    ],
)
def test_a_shell_variable_in_a_credential_slot_has_no_credential_shape(text: str) -> None:
    # KFP's check_spec matches command lines by shape alone: a variable there is the fix, not a leak
    from leaseline._detectors import credential_shape

    assert credential_shape(text) is None


def test_a_jwt_whose_claims_end_in_dash_s_is_a_jwt_not_a_legacy_vault_token() -> None:
    """``eyJ….eyJ…-s.SIGNATURE``: ``s.SIGNATURE`` read as a legacy Vault token (a flaky sample)."""
    head = "eyJ" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
    body = "eyJ" + base64.urlsafe_b64encode(secrets.token_bytes(21)).decode() + "-s"
    value = f"{head}.{body}.{_an(43)}"
    findings = Scanner(detect_secrets=False, engine="python").scan_text("a.py", f'v = "{value}"')
    assert [(f.rule, f.secret) for f in findings] == [("jwt", value)]


def test_a_counting_run_deep_in_a_long_random_body_is_not_a_stand_in() -> None:
    """A fresh CI run drew a Slack app token whose 64 hex digits held ``012345``: read as a
    counting run (a stand-in) and missed by both the scanner and the core. In a long value the
    run must be a quarter of it; a short value with one is still a stand-in."""
    body = _hex(60)
    cut = secrets.randbelow(len(body))
    value = f"xapp-1-A{_upper(10)}-{_num(13)}-{body[:cut]}012345{body[cut:]}"
    line = f'SLACK_APP_TOKEN = "{value}"'
    assert [(f.rule, f.secret) for f in Scanner(engine="python").scan_text("app.py", line)] == [
        ("slack-app-token", value)
    ]
    assert find_credential(line) is not None
    assert is_placeholder("sk-" + "1234567890") and is_placeholder("password" + "123456")


def test_a_short_stand_in_word_inside_a_long_random_body_is_not_a_stand_in() -> None:
    """A Pinecone sample's random body held ``your`` (``pcsk_…opyour6…``): read as a stand-in,
    missed (one sample in ~4,000). In a long value a short word counts only on its own."""
    body = _an(60)
    cut = secrets.randbelow(len(body) - 1) + 1
    value = f"pcsk_{body[:cut]}your{body[cut:]}"
    assert find_credential(f'value = "{value}"') is not None
    assert is_placeholder("pcsk_" + "your-key-here")
    assert is_placeholder("sk-" + "your-api-key-" + "0" * 24)


def _sparse(n: int, alphabet: str, prefix: str = "") -> str:
    """Random over a few of ``alphabet``'s symbols: what a random key is one time in ~10,000
    (an Azure OpenAI key of 32 hex digits, an AWS key id: under 3.0 bits a character)."""
    while True:
        few = "".join(secrets.choice(alphabet) for _ in range(7))
        value = prefix + "".join(secrets.choice(few) for _ in range(n))
        low = 2.75 <= shannon_entropy(value) < 3.0
        if (
            low
            and any(c.isdigit() for c in value)
            and any(c.isalpha() for c in value[len(prefix) :])
            and not is_placeholder(value)
        ):
            return value


@pytest.mark.parametrize(
    ("detector_id", "make", "line"),
    [
        (
            "aws-access-key-id",
            lambda: _sparse(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "AKIA"),
            'aws_access_key_id = "{}"',
        ),
        (
            "azure-openai-client",
            lambda: _sparse(32, "0123456789abcdef"),
            'AzureOpenAI(azure_endpoint="https://x.openai.azure.com", api_key="{}")',
        ),
        ("datadog", lambda: _sparse(32, "0123456789abcdef"), "DD_API_KEY={}"),
        ("databricks-token", lambda: _sparse(32, "0123456789abcdef", "dapi"), 'TOKEN = "{}"'),
    ],
)
def test_a_hex_or_base32_key_under_three_bits_a_character_is_found(
    detector_id: str, make: Callable[[], str], line: str
) -> None:
    """Found as flaky samples (an AWS key id in the scan corpus, an Azure OpenAI key): the
    density floor was 3.0 bits, which 16- and 32-symbol alphabets fall under by chance."""
    value = make()
    text = line.format(value)
    found = find_credential(text)
    assert found is not None and (found[0].id, found[1]) == (detector_id, value)
    findings = Scanner(detect_secrets=False, engine="python").scan_text("settings.py", text)
    assert [(f.rule, f.secret) for f in findings] == [(detector_id, value)]


def test_a_legacy_vault_token_shaped_like_camel_case_is_found() -> None:
    """A legacy token's body (a sample, one in ~4,000: ``khh`` 4 ``Alkyr`` ``Hdffwx``...) falls into the shape of a
    method's name (``disableForced4Spaces…``), which the legacy-token check drops as code; its
    words have no vowels or start as no word does."""
    cons = "bcdfghjklmnpqrstvwxz"

    def run(n: int) -> str:
        return "".join(secrets.choice(cons) for _ in range(n))

    while True:
        body = f"{run(3)}{secrets.randbelow(10)}{run(6).title()}{run(6).title()}{run(7).title()}{secrets.randbelow(10)}"
        value = f"s.{body}"
        if shannon_entropy(value) >= 3.5 and not is_placeholder(value):
            break
    found = find_credential(f'VAULT_TOKEN = "{value}"')
    assert found is not None and (found[0].id, found[1]) == ("vault-token-legacy", value)
    # a method's name is still code
    assert find_credential("s." + "disableForced4SpacesIndentedSublists") is None
