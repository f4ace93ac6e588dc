"""The one table of credential formats, and the checks that tell a key from a look-alike.

Three users, one table (a second copy drifted once: the scanner flagged keys that ``parse``
accepted):

- ``parse`` refuses a string given as a reference when any pattern's *shape* matches it
  (:func:`credential_shape`: cautious, placeholders included, so nothing credential-shaped is ever
  quoted back in an error);
- :func:`looks_like_credential` (the adapters' and the KFP check's "is this value a secret?") and
  ``leaseline scan`` (its rules are :data:`DETECTORS`) both use :meth:`Detector.find`: the shape
  *and* the check that rejects placeholders, hashes and words. So a key one flags the other flags.

Each pattern has one group, ``s``, capturing the secret. Formats without a prefix (Cohere,
Mistral, Weights & Biases, legacy Pinecone keys, AWS secret keys) only match next to a name that
says what they are (``named``), which keeps hashes and UUIDs out.

Why ~540 lines: the table itself (38 formats, one row of name, pattern and check each) is most
of it; the placeholder test beside it (stock words, sequences, fillers) is what every row's check
shares, and splitting the two would give the table's users two modules to keep in step.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DETECTORS",
    "PATTERNS",
    "REFERENCE",
    "Detector",
    "credential_shape",
    "dense",
    "find_credential",
    "is_placeholder",
    "looks_like_credential",
    "sayable",
    "shannon_entropy",
]


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


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
# ``{password}`` (an f-string or str.format field) is a template, not a value
# ``{pg.password}`` too (an attribute in an f-string); ``…`` ends a shortened (redacted) value
_PLACEHOLDER_MARKS = re.compile(
    r"\$\{|\$\(|\{\{|\}\}|\{[A-Za-z_][\w.]*\}|<[^>]*>|%\(|%s(?=$|[/:@.,;\s-])|\*{3}|x{6}|X{6}|\.\.\.|…|^\$"
)
#: a leaseline reference (or any URL-like reference) is what we want people to write
REFERENCE = re.compile(r"^[a-z][a-z0-9+.-]*://")


def _classes(s: str) -> int:
    return sum(
        (
            any(c.islower() for c in s),
            any(c.isupper() for c in s),
            any(c.isdigit() for c in s),
        )
    )


#: the words docs, tests and default configs build stand-in values from (``my-secret-token``,
#: ``SuperSecret``, ``fake-client-secret-for-tests``, ``guest``, ``airflow``): a value made only
#: of these (and at most a short or sequential number) is nobody's credential
STOCK_WORDS = frozenset(
    word
    for line in (
        "a an the my your our some any this that for of to in on is not no only here me it be",
        "secret secrets super top password passwords passwd pass pwd pw passphrase token tokens key keys",
        "api apikey auth access private public client credential credentials login logon signin",
        "test tests testing tester fake mock mocked dummy sample samples example examples demo default",
        "defaults placeholder value values string str insert put enter replace with real actual",
        "change changeme new old temp tmp local dev development staging prod foo bar baz qux quux",
        "hello world abc xyz qwerty letmein admin administrator root user users username guest",
        "db database postgres postgresql mysql mariadb redis rabbitmq mongo mongodb celery minio",
        "minioadmin airflow prefect mlflow kubeflow jupyter notebook service app bot svc prefix",
        "bearer basic oauth oauth2 jwt session cookie hmac signing shared none null empty invalid",
        "wrong bad good valid long short very random generated dont use do kind sort type",
        "scott tiger alice bob",  # SQLAlchemy's and Oracle's scott:tiger, the crypto couple
    )
    for word in line.split()
)
#: a word written as words are (``your``, ``YOUR``, ``Your``), not ``yOUr`` in random letters
_STAND_IN_WORD = re.compile(
    "|".join(
        f"{w}|{w.upper()}|{w.capitalize()}"
        for w in ("your", "example", "placeholder", "dummy", "changeme", "redacted")
    )
)


def _stand_in_word(value: str) -> bool:
    """``your``, ``EXAMPLE``, ``dummy``... in the value; a short one inside a long value only
    as a word of its own (``pcsk_…opyour6…``: random letters, one Pinecone sample in ~4,000)."""
    for m in _STAND_IN_WORD.finditer(value):
        if len(m.group()) >= 6 or len(value) <= 24:
            return True
        before = value[m.start() - 1 : m.start()]
        after = value[m.end() : m.end() + 1]
        if not before.isalnum() and not after.isalnum():
            return True
    return False


_SEQUENCES = "0123456789 9876543210 abcdefghijklmnopqrstuvwxyz zyxwvutsrqponmlkjihgfedcba"
_RUN = 6  # "123456", "abcdef": typed, not generated
_REPEAT = re.compile(r"(.)\1{7,}")  # "dapi00000000...": a filler


def _has_run(low: str) -> bool:
    """A counting run (``123456``, ``abcdef``) that is a fair part of the value: in a short one
    anywhere, in a long one a quarter of it (64 random hex digits hold ``012345`` one time in
    ~9,000: a Slack token's body, not a stand-in)."""
    need = _RUN if len(low) <= 24 else max(_RUN, len(low) // 4)
    return any(low[i : i + need] in _SEQUENCES for i in range(len(low) - need + 1))


def _stock_words(low: str) -> bool:
    """``low`` (lower case) is stock words, separators and a short or sequential number."""
    numbers = re.findall(r"\d+", low)
    if any(len(n) > 4 and n not in _SEQUENCES for n in numbers):
        return False
    letters = re.sub(r"[^a-z]", "", low)
    if not letters or len(letters) > 64:
        return False
    # word break: can ``letters`` be cut into stock words?
    ends = [True] + [False] * len(letters)
    for i in range(1, len(letters) + 1):
        ends[i] = any(ends[j] and letters[j:i] in STOCK_WORDS for j in range(max(0, i - 14), i))
    return ends[-1]


def is_placeholder(value: str) -> bool:
    """True for ``changeme``, ``${TOKEN}``, ``<your key>``, ``xxxxxx``, ``password1234``,
    ``my-secret-token``... (never a finding)."""
    low = value.lower().strip("'\"")
    if low in PLACEHOLDERS or _PLACEHOLDER_MARKS.search(value):
        return True
    if len(set(low)) <= 3:  # "aaaaaaaa", "00000000", "x-x-x-x"
        return True
    if _stand_in_word(value):
        return True
    if "%" in low:
        low = urllib.parse.unquote(low)
    return _has_run(low) or _REPEAT.search(low) is not None or _stock_words(low)


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


def _url_password(value: str) -> bool:
    return not is_placeholder(value) and not REFERENCE.match(value) and len(value) >= 4


@dataclass(frozen=True, slots=True)
class Detector:
    """One credential format. ``family`` groups detectors for advice (``openai``, ``aws``...)."""

    id: str
    name: str
    family: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] = _any
    #: file kinds the scanner limits the detector to (``None``: every kind)
    kinds: frozenset[str] | None = None

    def find(self, text: str) -> str | None:
        """The first secret of this format in ``text`` that passes the check, or ``None``."""
        for match in self.pattern.finditer(text):
            value = match.group("s")
            if value and self.check(value):
                return value
        return None


def _d(
    id_: str,
    name: str,
    family: str,
    pattern: str,
    check: Callable[[str], bool] = _any,
    kinds: frozenset[str] | None = None,
) -> Detector:
    return Detector(id_, name, family, re.compile(pattern), check, kinds)


# A name that says "this is the X key", then an assignment, then the value (same line).
# (``COHERE_API_KEY="…"``, ``cohere.Client("…")``, ``wandb.login(key="…")``, ``-H "api-key: …"``)
def _named(word: str, value: str) -> str:
    return (
        rf"(?i:{word})[\w.\-]{{0,30}}\\?['\"]?\s*(?:[:=]|=>|\(|,)?\s*"
        rf"(?:[\w.\-]{{0,20}}['\"= ]|\w{{1,20}}\s*=\s*\\?['\"])\s*(?P<s>{value})(?![A-Za-z0-9])"
    )


#: four consonants in a row (``y`` among them), three vowels: random letters, unless English
_CONSONANTS = re.compile(r"(?i)[b-df-hj-np-tv-z]{4,}")
_DIGRAPH = re.compile(r"(?i)th|ch|sh|ng|ck|ph|st|gh|ght|tch|nd|nt|rt")
_VOWELS3 = re.compile(r"(?i)[aeiou]{3,}")
_TRIPHTHONGS = frozenset({"eau", "iou", "uee", "eou", "oui", "uie"})
#: how English words (and a few of code's) start with two consonants
_ONSETS = frozenset(
    re.findall(
        r"\w+",
        "bl br ch cl cr dr dw fl fr gh gl gn gr kl kn kr ml ph pl pr ps sc sh sk sl sm sn sp sq st"
        " sv sw th tr ts tw wh wr",
    )
)


def sayable(word: str) -> bool:
    """A run of letters that reads as a word, as random letters rarely do: no four consonants
    in a row but English ones (``ngth``, ``nstr``; not ``vjts``), no three vowels but ``eau``
    and kin, a two-letter word with a vowel, and two consonants at the start only as words
    start (``Str``, ``Pr``; not ``Cf``, ``Vx``)."""
    if any(not _DIGRAPH.search(run) for run in _CONSONANTS.findall(word)):
        return False
    if any(run.lower() not in _TRIPHTHONGS for run in _VOWELS3.findall(word)):
        return False
    if len(word) < 2:
        return True
    head = word[:2].lower()
    if len(word) == 2:
        return any(c in "aeiouy" for c in head)  # ``Rw``, ``Dv``: no word
    return head[0] in "aeiou" or head[1] in "aeiouy" or head in _ONSETS


def _code_identifier(body: str) -> bool:
    """``disableForced4SpacesIndentedSublists``, ``getExperimentTraceInfoV3``: code, not a key."""
    if re.fullmatch(r"[a-z]{2,}(?:[A-Z][a-z]{2,}|\d)+[A-Z]?\d*", body) is None:
        return False
    # words, not random letters that fall into the same shape (``khh4AlkyrHdffwx…``)
    return all(
        sayable(w) and re.search("[aeiouy]", w.lower()) for w in re.findall(r"[A-Za-z][a-z]+", body)
    )


def _vault_legacy(value: str) -> bool:
    return dense(3.5, 3)(value) and not _code_identifier(value[2:])


#: the entropy floor for a body of hex or base32 (16 or 32 symbols): random 32 hex digits fall
#: under 3.0 bits one time in ~10,000 (``8883778f5670…``), under 2.7 not in 200,000 draws;
#: ``deadbeef`` repeated is 2.2
_SMALL_ALPHABET = 2.7

#: every credential format, most specific first (``sk-ant-`` before ``sk-``). Newer rows start
#: with their literal prefix (no leading ``\b``): the regex engine then skips ahead to it
DETECTORS: tuple[Detector, ...] = (
    _d(
        "anthropic",
        "Anthropic API key",
        "anthropic",
        r"\b(?P<s>sk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_-]{20,})",
        dense(3.0),
    ),
    _d(
        "openai-project",
        "OpenAI API key",
        "openai",
        r"\b(?P<s>sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{20,})",
        dense(3.0),
    ),
    _d("openai", "OpenAI API key", "openai", r"\b(?P<s>sk-[A-Za-z0-9_-]{20,})", dense(3.5, 3)),
    _d(
        "huggingface",
        "Hugging Face token",
        "huggingface",
        r"\b(?P<s>(?:hf_|api_org_)[A-Za-z0-9]{30,})",
        dense(3.0),
    ),
    _d(
        "google-ai",
        "Google AI (Gemini) API key",
        "google",
        r"\b(?P<s>AIza[0-9A-Za-z_-]{35})(?![0-9A-Za-z_-])",
        dense(3.0),
    ),
    _d("groq", "Groq API key", "groq", r"\b(?P<s>gsk_[A-Za-z0-9]{40,})", dense(3.0)),
    _d(
        "replicate", "Replicate API token", "replicate", r"\b(?P<s>r8_[A-Za-z0-9]{30,})", dense(3.0)
    ),
    _d(
        "langsmith",
        "LangSmith API key",
        "langsmith",
        r"\b(?P<s>lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10})",
        dense(3.0),
    ),
    _d("pinecone", "Pinecone API key", "pinecone", r"\b(?P<s>pcsk_[A-Za-z0-9_]{40,})", dense(3.0)),
    _d(
        "pinecone-legacy",
        "Pinecone API key (legacy UUID form)",
        "pinecone",
        _named("pinecone", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    ),
    _d(
        "cohere",
        "Cohere API key",
        "cohere",
        _named("cohere|co_api", r"[A-Za-z0-9]{40}"),
        dense(3.5, 3),
    ),
    _d(
        "mistral",
        "Mistral API key",
        "mistral",
        _named("mistral", r"[A-Za-z0-9]{32}"),
        dense(3.5, 3),
    ),
    _d(
        "wandb",
        "Weights & Biases API key",
        "wandb",
        _named("wandb|weights_and_biases", r"[a-f0-9]{40}"),
        dense(_SMALL_ALPHABET, 2),
    ),
    _d(
        "wandb-netrc",
        "Weights & Biases API key (netrc)",
        "wandb",
        r"machine\s+api\.wandb\.ai\s+login\s+\S+\s+password\s+(?P<s>[a-f0-9]{40})",
        dense(_SMALL_ALPHABET, 2),
    ),
    _d(
        "vault-token",
        "Vault/OpenBao token",
        "vault",
        r"\b(?P<s>hv[sbr]\.[A-Za-z0-9_-]{24,})",
        dense(3.0),
    ),
    _d(
        "vault-token-legacy",
        "Vault/OpenBao token (legacy form)",
        "vault",
        # not the end of another token's part (a JWT header ending ``-s`` before its ``.eyJ``)
        r"(?<![\w.-])(?P<s>[sbr]\.[A-Za-z0-9_-]{24,})(?![\w.(-])",
        _vault_legacy,
    ),
    _d(
        "aws-access-key-id",
        "AWS access key id",
        "aws",
        r"\b(?P<s>(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16})\b",
        dense(_SMALL_ALPHABET, 1),  # base32: an id of letters only is as real as one with digits
    ),
    _d(
        "aws-secret-access-key",
        "AWS secret access key",
        "aws",
        _named(r"aws[\w.\-]{0,20}secret|secret[_-]?access[_-]?key", r"[A-Za-z0-9/+]{40}"),
        dense(4.0, 3),
    ),
    _d(
        "database-url",
        "database URL with a password",
        "database",
        r"\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|"
        r"oracle|snowflake|clickhouse|cockroachdb)(?:\+[a-z0-9]+)?://[^\s:/@'\"]+:"
        r"(?P<s>[^\s@/'\"]{3,})@[^\s/'\"]+",
        _url_password,
    ),
    _d(
        "url-password",
        "URL with a password",
        "url",
        r"\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]+:(?P<s>[^\s@/'\"]{3,})@[^\s/'\"]+",
        _url_password,
    ),
    _d(
        "private-key",
        "private key",
        "private-key",
        # the END line is optional in the shape (a pasted header alone is refused unquoted),
        # the check wants the whole block
        r"(?P<s>-----BEGIN (?P<kt>[A-Z0-9 ]*)PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]{0,10000}?-----END (?P=kt)PRIVATE KEY(?: BLOCK)?-----)?)",
        _private_key,
    ),
    _d(
        "jwt",
        "JSON web token",
        "jwt",
        r"\b(?P<s>eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})",
        dense(3.0),
    ),
    _d("github-token", "GitHub token", "github", r"\b(?P<s>gh[pousr]_[A-Za-z0-9]{36,})", dense()),
    _d(
        "slack-token",
        "Slack token",
        "slack",
        # bot/user/app-level/refresh/config tokens: xoxb-, xoxp-, xoxa-2-, xoxe.xoxp-1-, xoxe-1-...
        r"(?P<s>xox(?:e\.xox)?[abeoprs]-[A-Za-z0-9-]{10,})",
        dense(),
    ),
    _d(
        "slack-app-token",
        "Slack app-level token",
        "slack",
        r"(?P<s>xapp-\d-[A-Z0-9]{9,}-\d{6,}-[a-f0-9]{32,})\b",
        dense(_SMALL_ALPHABET),
    ),
    _d(
        "slack-webhook",
        "Slack incoming webhook URL",
        "slack",
        r"(?P<s>https://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{6,}/"
        r"[A-Z0-9]{6,}/[A-Za-z0-9]{20,})",
        dense(3.0),
    ),
    _d(
        "stripe",
        "Stripe secret or restricted key",
        "stripe",
        # pk_ (publishable) keys are meant for browsers: not secrets
        r"(?P<s>[rs]k_(?:live|test)_[A-Za-z0-9]{20,247})\b",
        dense(3.0),
    ),
    _d(
        "braintree-access-token",
        "Braintree (PayPal) access token",
        "braintree",
        r"(?P<s>access_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32})\b",
        dense(3.0),
    ),
    _d(
        "discord-webhook",
        "Discord webhook URL",
        "discord",
        r"(?P<s>https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d{17,20}/"
        r"[A-Za-z0-9_-]{60,68})",
        dense(3.0),
    ),
    _d(
        "discord-bot-token",
        "Discord bot token",
        "discord",
        # the bot's id in base64, a timestamp, an HMAC; named, or given to discord.py's run()
        r"(?:(?i:discord)[\w.\-]{0,30}\\?['\"]?\s*(?:[:=]|=>)\s*\\?['\"]?|"
        r"\b(?:client|bot)\.run\(\s*['\"])"
        r"(?P<s>[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38})(?![\w-])",
        dense(3.0),
    ),
    _d(
        "pypi-token",
        "PyPI API token",
        "pypi",
        # a macaroon for pypi.org or test.pypi.org: base64 of its location after the prefix
        r"\b(?P<s>pypi-(?:AgEIcHlwaS5vcm|AgENdGVzdC5weXBpLm9yZ)[A-Za-z0-9_-]{50,})",
        dense(3.0),
    ),
    _d(
        "sentry-auth-token",
        "Sentry auth token",
        "sentry",
        # organization tokens (sntrys_ + base64 JSON + _ + secret) and user tokens (sntryu_)
        r"\b(?P<s>sntrys_eyJ[A-Za-z0-9+/=_-]{20,}_[A-Za-z0-9+/_-]{43}|sntryu_[a-f0-9]{64})\b",
        dense(3.0),
    ),
    _d(
        "stripe-webhook-secret",
        "Stripe webhook signing secret",
        "stripe",
        r"(?P<s>whsec_[A-Za-z0-9]{32,})\b",
        dense(3.0),
    ),
    _d(
        "perplexity",
        "Perplexity API key",
        "perplexity",
        r"(?P<s>pplx-[A-Za-z0-9]{48})\b",
        dense(3.0),
    ),
    _d(
        "databricks-token",
        "Databricks personal access token",
        "databricks",
        r"(?P<s>dapi[a-f0-9]{32}(?:-\d)?)\b",
        dense(_SMALL_ALPHABET),
    ),
    _d(
        "databricks-oauth-secret",
        "Databricks OAuth secret",
        "databricks",
        r"(?P<s>dose[a-f0-9]{32})\b",
        dense(_SMALL_ALPHABET),
    ),
    _d(
        "datadog",
        "Datadog API or application key",
        "datadog",
        _named(
            # spelled out, so the prefilter's anchors are these words, not ``api``
            r"datadog|(?<![a-z])(?:dd[_-]api[_-]key|dd[_-]app[_-]key|ddapikey|ddappkey)",
            r"[a-f0-9]{40}|[a-f0-9]{32}",
        ),
        dense(_SMALL_ALPHABET, 2),
    ),
    _d(
        "datadog-agent",
        "Datadog API key (agent configuration)",
        "datadog",
        # datadog.yaml: ``api_key: …`` with ``site: datadoghq.com`` (or .eu, us3...) near it
        r"(?m)^[ \t]*api_key:[ \t]*['\"]?(?P<s>[a-f0-9]{32})['\"]?[ \t]*$"
        r"[\s\S]{0,400}?^[ \t]*site:[ \t]*['\"]?(?:[\w-]+\.)*datadoghq\.",
        dense(_SMALL_ALPHABET, 2),
    ),
    _d(
        "azure-client-secret",
        "Azure (Entra ID) client secret",
        "azure",
        r"(?:^|[\s'\"`=:,(>])(?P<s>[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34})(?:$|[\s'\"`<),;])",
        dense(3.0),
    ),
    _d(
        "azure-storage-key",
        "Azure storage account key",
        "azure",
        _named(
            r"AccountKey|account[_-]?key|storage[_-]?(?:account[_-]?)?key|azure[_-]?storage",
            r"[A-Za-z0-9+/]{86}==",
        ),
        dense(4.0, 3),
    ),
    _d(
        "azure-openai",
        "Azure OpenAI API key",
        "azure",
        _named(r"azure[_-]?openai|openai[_-]?azure|api-key", r"[a-f0-9]{32}"),
        dense(_SMALL_ALPHABET, 2),
    ),
    _d(
        "azure-openai-client",
        "Azure OpenAI API key",
        "azure",
        # a client built for an Azure endpoint, its key a few lines further
        r"(?:openai\.azure\.com|azure_endpoint|AZURE_OPENAI_ENDPOINT|AzureOpenAI\(|AzureChatOpenAI\()"
        r"[\s\S]{0,400}?"
        r"(?i:api[_-]?key)\W{1,5}(?P<s>[a-f0-9]{32})\b",
        dense(_SMALL_ALPHABET, 2),
    ),
    _d(
        "wandb-login",
        "Weights & Biases API key",
        "wandb",
        r"wandb\.login\([^)]{0,200}?\bkey\s*=\s*['\"](?P<s>[a-f0-9]{40})['\"]",
        dense(_SMALL_ALPHABET, 2),
    ),
    _d(
        "authorization-header",
        "credential in an Authorization header",
        "http",
        r"(?i:authorization)\\?['\"]?\s*[:=]\s*\\?['\"]?\s*(?i:bearer|basic|token|ssws)[ \t]+"
        r"(?P<s>[A-Za-z0-9._~+/-]{16,}=*)",
        dense(3.0),
    ),
    _d(
        "curl-user",
        "password in a curl --user option",
        "http",
        r"\bcurl\b[^\n]{0,300}?\s(?:-u|--user)(?:[ \t]+|=)['\"]?[^\s:'\"$]+:"
        r"(?P<s>[^\s'\"$%{<][^\s'\"]{2,})",  # not $PASS, %PASS%, {pw}, <pw>: shapes too
        _url_password,
    ),
)

#: (name, compiled pattern) pairs of :data:`DETECTORS`, for callers that only need the shapes
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((d.name, d.pattern) for d in DETECTORS)


def credential_shape(text: str) -> str | None:
    """Name of the first format whose *shape* occurs in ``text`` (no check): ``parse`` refuses
    such a string without quoting it, placeholders included."""
    for detector in DETECTORS:
        if detector.pattern.search(text):
            return detector.name
    return None


def find_credential(text: str) -> tuple[Detector, str] | None:
    """The first (detector, secret) in ``text`` that passes its detector's check, or ``None``."""
    for detector in DETECTORS:
        value = detector.find(text)
        if value is not None:
            return detector, value
    return None


_TOKENISH = re.compile(r"[A-Za-z0-9+/=_.-]{24,}")


def looks_like_credential(text: str) -> str | None:
    """Return the name of the credential kind ``text`` looks like, or ``None``.

    >>> looks_like_credential("vault://secret/llm/openai") is None
    True
    """
    found = find_credential(text)
    if found is not None:
        return found[0].name
    # A long, dense, high-entropy token with both letters and digits is most likely a key.
    if _TOKENISH.fullmatch(text) and shannon_entropy(text) > 4.0:
        has_digit = any(c.isdigit() for c in text)
        has_alpha = any(c.isalpha() for c in text)
        if has_digit and has_alpha:
            return "high-entropy string"
    return None
