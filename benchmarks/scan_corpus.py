"""The scanner benchmark's corpus: credentials of ~80 providers generated at run time, in files.

Nothing here is fetched and nothing secret-looking is committed: every value is drawn at run time
(``random.Random(seed)``, the seed itself drawn from ``secrets`` unless given) in the provider's
documented format, and prefixes are written in parts (``_p("gh", "p_")``) so this file is no
credential to any scanner. The samples take the shapes of two peers' published rule tests:

- **set 1**, like Kingfisher's rule YAML ``examples``: one token in a short realistic line (a
  client call, an ``Authorization`` header, a connection string, a ``.env`` entry...), one file per
  example, in the file type the line belongs to;
- **set 2**, like gitleaks' generated ``tps`` (``utils.GenerateSampleSecrets(identifier, secret)``):
  the provider's short identifier and a fresh secret in each of gitleaks' shapes (INI, JSON and
  escaped JSON, XML elements, YAML scalars and blocks, C#, Go with and without backticks, Java,
  Kotlin, PHP ``.=``, Python, CSV, logstash, Makefile assignments) plus the contexts an ML
  repository adds (``.env``, TOML, shell ``export``, PHP arrays, XML attributes, Dockerfile ``ENV``,
  ``curl`` bearer and basic auth, a notebook's output); multi-line values (private keys) in the
  shapes that can hold them (triple quotes, YAML ``|``, JSON with ``\\n`` escapes, Go backticks...);
- **negatives**, like both peers' ``negative_examples`` / ``fps``: placeholders in each provider's
  shape, redacted forms, environment lookups, documentation examples, hashes, commit ids, UUIDs,
  lock-file integrity hashes, test values, references, and keys public by design (a Sentry DSN
  with only its public key, a Stripe ``pk_`` key);
- **notebooks**: secrets in a code source, a stream / ``execute_result`` / ``display_data``
  output, an error traceback, the notebook metadata or a cell's metadata (papermill parameters).

Providers come from both peers' rule lists, not from what leaseline detects. A sample's ``span`` is
the line range of its value in its file.

Why ~500 lines: the provider table (one generator per documented token format, one line each) and
the renderers of each syntax.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NOTEBOOK_PLACES", "PROVIDERS", "SYNTAXES", "Corpus", "Provider", "Sample", "build"]

UPPER = string.ascii_uppercase
LOWER = string.ascii_lowercase
DIGITS = string.digits
ALNUM = UPPER + LOWER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"


def _p(*parts: str) -> str:
    """A prefix written in parts, so the source holds no credential-shaped literal."""
    return "".join(parts)


class Gen:
    """Random strings drawn from one seeded generator, mixed like real tokens."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def s(self, n: int, alphabet: str = ALNUM) -> str:
        """``n`` characters of ``alphabet``; 12+ hold a digit and both cases when it has them."""
        classes = [set(a) for a in (UPPER, LOWER, DIGITS) if set(a) & set(alphabet)]
        while True:
            out = "".join(self.rng.choice(alphabet) for _ in range(n))
            if n < 12 or all(c & set(out) for c in classes):
                return out

    def hex(self, n: int) -> str:
        return self.s(n, HEX)

    def digits(self, n: int) -> str:
        return str(self.rng.randint(1, 9)) + self.s(n - 1, DIGITS)

    def raw(self, n: int) -> bytes:
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def uuid(self) -> str:
        h = self.hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{self.rng.choice('89ab')}{h[17:20]}-{h[20:]}"

    def password(self, n: int, extra: str = "!%^*-_") -> str:
        """Starts with a letter or digit (so it needs no quoting in YAML); no ``#``/quotes/``$``."""
        return self.s(1) + self.s(n - 1, ALNUM + extra)

    def pem(self, kind: str) -> str:
        head = {
            "OPENSSH": _p("openssh", "-key-v1").encode() + b"\0",
            "RSA": b"\x30\x82\x04\xa4\x02\x01\x00\x02\x82\x01\x01\x00",
            "EC": b"\x30\x77\x02\x01\x01\x04\x20",
            "PKCS8": b"\x30\x82\x04\xbd\x02\x01\x00\x30\x0d\x06\x09",
        }[kind]
        body = b64(head + self.raw({"OPENSSH": 380, "EC": 112}.get(kind, 1180)))
        width = 70 if kind == "OPENSSH" else 64
        lines = [body[i : i + width] for i in range(0, len(body), width)]
        label = ("" if kind == "PKCS8" else kind + " ") + _p("PRIVATE", " KEY")
        return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"

    def jwt(self) -> str:
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode(), url=True)
        claims = {"sub": self.uuid(), "iat": self.rng.randint(1_600_000_000, 1_800_000_000)}
        body = b64(json.dumps({**claims, "scope": "api"}).encode(), url=True)
        return f"{head}.{body}.{b64(self.raw(32), url=True)}"


def b64(raw: bytes, url: bool = False) -> str:
    """Standard base64 with padding, or URL-safe without (as JWTs and PyPI tokens have it)."""
    return (
        base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if url
        else base64.b64encode(raw).decode()
    )


@dataclass(frozen=True)
class Provider:
    name: str
    make: Callable[[Gen], str]
    #: set 1 (Kingfisher ``examples``): (file name, text with ``{v}``); ``@sa``: a service-account file
    examples: tuple[tuple[str, str], ...]
    #: the identifier set 2 assigns it to (gitleaks' ``identifier``); default: the name's first word
    word: str = ""
    multiline: bool = False
    #: other forms a scanner may report for the value (a base64 blob's decoded token)
    decoded: Callable[[str], tuple[str, ...]] = lambda v: ()

    @property
    def ident(self) -> str:
        return self.word or self.name.split("-")[0]


def _openai(kind: str) -> Callable[[Gen], str]:
    return lambda g: _p("sk-", kind, "-") + g.s(74, URLSAFE) + _p("T3Bl", "bkFJ") + g.s(74, URLSAFE)


def _url(scheme: str, tail: str, user: str = "app") -> Callable[[Gen], str]:
    return lambda g: f"{scheme}://{user}:{g.password(18, '-_.')}@{tail}"


def _sentry(g: Gen) -> str:
    doc = {
        "iat": g.rng.randint(1_600_000_000, 1_800_000_000),
        "url": "https://sentry.io",
        "org": "acme",
    }
    return _p("sntr", "ys_") + b64(json.dumps(doc).encode()).rstrip("=") + "_" + g.s(43, URLSAFE)


def _jwt_b64(g: Gen) -> str:
    return b64(g.jwt().encode())


def _unb64(v: str) -> tuple[str, ...]:
    return (base64.b64decode(v).decode(),)


def _x(*pairs: str) -> tuple[tuple[str, str], ...]:
    """Examples as alternating file name, text."""
    return tuple(zip(pairs[::2], pairs[1::2], strict=True))


_AWS_ID = UPPER + "234567"
_BECH32 = "QPZRY9X8GF2TVDW0" + "S3JN54KHCE6MUA7L"

# fmt: off
PROVIDERS: tuple[Provider, ...] = (
    Provider("aws-access-key-id", lambda g: _p("AK", "IA") + g.s(16, _AWS_ID),
             _x("credentials", "[default]\naws_access_key_id = {v}\nregion = eu-west-1",
                "boto.py", 's3 = boto3.client("s3", aws_access_key_id="{v}")')),
    Provider("aws-secret-access-key", lambda g: g.s(40, B64),
             _x("credentials", "[default]\naws_secret_access_key = {v}", "deploy.env", "AWS_SECRET_ACCESS_KEY={v}")),
    Provider("gcp-service-account-key", lambda g: g.pem("PKCS8") + "\n", _x("service-account.json", "@sa"),
             "gcp_private_key", multiline=True),
    Provider("gcp-api-key", lambda g: _p("AI", "za") + g.s(35, URLSAFE),
             _x("maps.js", 'const url = "https://maps.googleapis.com/maps/api/js?key={v}";',
                "gemini.py", 'genai.configure(api_key="{v}")'), "google"),
    Provider("google-oauth-client-secret", lambda g: _p("GOC", "SPX-") + g.s(28, URLSAFE),
             _x("client_secret.json", '{{"web": {{"client_id": "1234-abc.apps.googleusercontent.com", "client_secret": "{v}"}}}}')),
    Provider("azure-ad-client-secret", lambda g: g.s(3) + g.s(1, DIGITS) + "Q~" + g.s(34, ALNUM + "_~.-"),
             _x("auth.py", 'credential = ClientSecretCredential(tenant_id, client_id, client_secret="{v}")',
                "azure.env", "AZURE_CLIENT_SECRET={v}")),
    Provider("azure-storage-account-key", lambda g: b64(g.raw(64)),
             _x("storage.py", 'CONN = "DefaultEndpointsProtocol=https;AccountName=mlartifacts;AccountKey={v};EndpointSuffix=core.windows.net"')),
    Provider("azure-openai-key", lambda g: g.hex(32),
             _x("llm.py", 'client = AzureOpenAI(azure_endpoint="https://acme.openai.azure.com", api_key="{v}", api_version="2024-06-01")',
                "azure.env", "AZURE_OPENAI_API_KEY={v}"), "azure_openai"),
    Provider("github-classic-pat", lambda g: _p("gh", "p_") + g.s(36),
             _x("ci.sh", 'curl -H "Authorization: token {v}" https://api.github.com/user', "gh.py", 'gh = Github("{v}")')),
    Provider("github-fine-grained-pat", lambda g: _p("github", "_pat_") + g.s(22) + "_" + g.s(59),
             _x("push.sh", "git push https://x-access-token:{v}@github.com/acme/models.git")),
    Provider("github-oauth-token", lambda g: _p("gh", "o_") + g.s(36),
             _x("hosts.yml", "github.com:\n    oauth_token: {v}\n    user: ci-bot")),
    Provider("github-app-token", lambda g: _p("gh", "s_") + g.s(36),
             _x("clone.sh", "git clone https://x-access-token:{v}@github.com/acme/data.git")),
    Provider("gitlab-pat", lambda g: _p("gl", "pat-") + g.s(20, URLSAFE),
             _x("gitlab.sh", 'curl --header "PRIVATE-TOKEN: {v}" "https://gitlab.example.com/api/v4/projects"')),
    Provider("gitlab-runner-token", lambda g: _p("gl", "rt-") + g.s(20, URLSAFE),
             _x("config.toml", '[[runners]]\n  name = "ml"\n  url = "https://gitlab.com"\n  token = "{v}"')),
    Provider("slack-bot-token", lambda g: _p("xo", "xb-") + g.digits(12) + "-" + g.digits(13) + "-" + g.s(24),
             _x("notify.py", 'client = WebClient(token="{v}")')),
    Provider("slack-user-token", lambda g: _p("xo", "xp-") + "-".join([g.digits(12), g.digits(12), g.digits(13), g.hex(32)]),
             _x("slack.env", "SLACK_USER_TOKEN={v}")),
    Provider("slack-webhook", lambda g: _p("https://hooks.", "slack.com/services/T") + g.s(10, UPPER + DIGITS) + "/B" + g.s(10, UPPER + DIGITS) + "/" + g.s(24),
             _x("alert.py", 'requests.post("{v}", json={{"text": "training done"}})')),
    Provider("stripe-secret-key", lambda g: _p("sk", "_live_") + g.s(99), _x("billing.py", 'stripe.api_key = "{v}"')),
    Provider("stripe-restricted-key", lambda g: _p("rk", "_live_") + g.s(24), _x("billing.env", "STRIPE_KEY={v}"), "stripe"),
    Provider("twilio-api-key", lambda g: _p("S", "K") + g.hex(32), _x("sms.py", 'client = Client("{v}", api_secret, account_sid)')),
    Provider("sendgrid-api-key", lambda g: _p("S", "G.") + g.s(22, URLSAFE) + "." + g.s(43, URLSAFE),
             _x("mail.py", 'sg = SendGridAPIClient("{v}")')),
    Provider("mailgun-api-key", lambda g: _p("ke", "y-") + g.hex(32),
             _x("mail.sh", "curl -s -" + "-user 'api:{v}' https://api.mailgun.net/v3/mg.example.com/messages")),
    Provider("mailchimp-api-key", lambda g: g.hex(32) + "-us" + str(g.rng.randint(1, 20)),
             _x("news.py", 'client.set_config({{"api_key": "{v}", "server": "us6"}})')),
    Provider("npm-token", lambda g: _p("np", "m_") + g.s(36), _x(".npmrc", "//registry.npmjs.org/:_authToken={v}")),
    Provider("pypi-token", lambda g: _p("pypi", "-") + b64(b"\x02\x01\x08pypi.org" + g.raw(120), url=True),
             _x(".pypirc", "[pypi]\nusername = __token__\npassword = {v}")),
    Provider("dockerhub-pat", lambda g: _p("dckr", "_pat_") + g.s(27, URLSAFE),
             _x("login.sh", "echo {v} | docker login -u acme --password-stdin"), "docker"),
    Provider("datadog-api-key", lambda g: g.hex(32),
             _x("datadog.yaml", "api_key: {v}\nsite: datadoghq.eu", "dd.env", "DD_API_KEY={v}")),
    Provider("newrelic-user-key", lambda g: _p("NR", "AK-") + g.s(27, UPPER + DIGITS),
             _x("newrelic.sh", 'curl -H "API-Key: {v}" https://api.newrelic.com/graphql')),
    # the legacy DSN with its secret half: a credential (a DSN with only the public key is
    # public by design, like Stripe's pk_: a negative below)
    Provider("sentry-dsn", lambda g: "https://" + g.hex(32) + ":" + g.hex(32) + "@o" + g.digits(6) + ".ingest.sentry.io/" + g.digits(7),
             _x("app.py", 'sentry_sdk.init(dsn="{v}", traces_sample_rate=0.1)')),
    Provider("sentry-auth-token", _sentry, _x(".sentryclirc", "[auth]\ntoken={v}")),
    Provider("shopify-access-token", lambda g: _p("shp", "at_") + g.hex(32),
             _x("shop.py", 'session = shopify.Session("acme.myshopify.com", "2024-01", "{v}")')),
    Provider("square-access-token", lambda g: _p("EA", "AA") + g.s(60, URLSAFE),
             _x("pay.py", 'client = Client(access_token="{v}", environment="production")')),
    Provider("square-oauth-secret", lambda g: _p("sq0", "csp-") + g.s(43, URLSAFE), _x("square.env", "SQUARE_OAUTH_SECRET={v}")),
    Provider("braintree-access-token", lambda g: _p("access_token", "$production$") + g.s(16, LOWER + DIGITS) + "$" + g.hex(32),
             _x("paypal.py", 'gateway = braintree.BraintreeGateway(access_token="{v}")')),
    Provider("heroku-api-key", lambda g: _p("HR", "KU-") + g.s(60, URLSAFE),
             _x(".netrc", "machine api.heroku.com\n  login ci@acme.io\n  password {v}")),
    Provider("digitalocean-pat", lambda g: _p("do", "p_v1_") + g.hex(64),
             _x("do.sh", 'curl -H "Authorization: Bearer {v}" https://api.digitalocean.com/v2/droplets')),
    Provider("cloudflare-api-token", lambda g: g.s(40, URLSAFE),
             _x("cf.sh", 'curl -H "Authorization: Bearer {v}" https://api.cloudflare.com/client/v4/user/tokens/verify',
                "cf.env", "CLOUDFLARE_API_TOKEN={v}")),
    Provider("linear-api-key", lambda g: _p("lin", "_api_") + g.s(40), _x("linear.py", 'headers = {{"Authorization": "{v}"}}')),
    Provider("notion-token", lambda g: _p("nt", "n_") + g.digits(11) + g.s(35), _x("notion.py", 'notion = Client(auth="{v}")')),
    Provider("atlassian-api-token", lambda g: _p("ATA", "TT3") + g.s(178, URLSAFE) + "=" + g.hex(8).upper(),
             _x("jira.py", 'jira = JIRA(server, basic_auth=("ci@acme.io", "{v}"))')),
    Provider("okta-api-token", lambda g: "00" + g.s(40, URLSAFE),
             _x("okta.sh", 'curl -H "Authorization: SSWS {v}" https://acme.okta.com/api/v1/users')),
    Provider("databricks-token", lambda g: _p("da", "pi") + g.hex(32),
             _x(".databrickscfg", "[DEFAULT]\nhost = https://adb-123.azuredatabricks.net\ntoken = {v}",
                "db.py", 'w = WorkspaceClient(host=host, token="{v}")')),
    Provider("snowflake-url", _url("snowflake", "xy12345.eu-west-1/analytics?warehouse=ML_WH", "svc_ml"),
             _x("warehouse.py", 'engine = create_engine("{v}")')),
    Provider("huggingface-token", lambda g: _p("h", "f_") + g.s(34, UPPER + LOWER),
             _x("hub.py", 'login(token="{v}")', "hf.sh", "huggingface-cli login --token {v}")),
    Provider("openai-project-key", _openai("proj"),
             _x("chat.py", 'client = OpenAI(api_key="{v}")', "openai.env", "OPENAI_API_KEY={v}")),
    Provider("openai-service-account-key", _openai("svcacct"),
             _x("batch.sh", 'curl https://api.openai.com/v1/models -H "Authorization: Bearer {v}"'), "openai"),
    Provider("anthropic-api-key", lambda g: _p("sk-", "ant-", "api03-") + g.s(93, URLSAFE) + "AA",
             _x("claude.py", 'client = anthropic.Anthropic(api_key="{v}")')),
    Provider("cohere-api-key", lambda g: g.s(40), _x("rerank.py", 'co = cohere.Client("{v}")', "co.env", "COHERE_API_KEY={v}")),
    Provider("mistral-api-key", lambda g: g.s(32), _x("mistral.py", 'client = Mistral(api_key="{v}")')),
    Provider("groq-api-key", lambda g: _p("gs", "k_") + g.s(52), _x("groq.py", 'client = Groq(api_key="{v}")')),
    Provider("perplexity-api-key", lambda g: _p("pp", "lx-") + g.s(48),
             _x("search.py", 'client = OpenAI(api_key="{v}", base_url="https://api.perplexity.ai")')),
    Provider("replicate-token", lambda g: _p("r", "8_") + g.s(37), _x("gen.env", "REPLICATE_API_TOKEN={v}")),
    Provider("wandb-api-key", lambda g: g.hex(40),
             _x("train.py", 'wandb.login(key="{v}")', ".netrc", "machine api.wandb.ai\n  login user\n  password {v}")),
    Provider("pinecone-api-key", lambda g: _p("pc", "sk_") + g.s(5) + "_" + g.s(63), _x("index.py", 'pc = Pinecone(api_key="{v}")')),
    Provider("langsmith-api-key", lambda g: _p("lsv2", "_pt_") + g.hex(32) + "_" + g.hex(10), _x("trace.env", "LANGCHAIN_API_KEY={v}")),
    Provider("telegram-bot-token", lambda g: g.digits(10) + ":AA" + g.s(33, URLSAFE), _x("bot.py", 'bot = telegram.Bot(token="{v}")')),
    Provider("discord-bot-token", lambda g: "M" + g.s(25) + "." + g.s(6, URLSAFE) + "." + g.s(38, URLSAFE), _x("bot.py", 'client.run("{v}")')),
    Provider("discord-webhook", lambda g: _p("https://discord", ".com/api/webhooks/") + g.digits(18) + "/" + g.s(68, URLSAFE),
             _x("notify.py", 'DiscordWebhook(url="{v}").execute()')),
    Provider("vault-token", lambda g: _p("hv", "s.") + "CAESI" + g.s(90, URLSAFE), _x("vault.sh", "export VAULT_TOKEN={v}")),
    Provider("doppler-token", lambda g: _p("dp", ".st.") + g.s(43), _x("doppler.env", "DOPPLER_TOKEN={v}")),
    Provider("grafana-service-account-token", lambda g: _p("gl", "sa_") + g.s(32) + "_" + g.hex(8),
             _x("grafana.py", 'headers = {{"Authorization": "Bearer {v}"}}')),
    Provider("postman-api-key", lambda g: _p("PM", "AK-") + g.hex(24) + "-" + g.hex(34),
             _x("postman.sh", 'curl -H "X-Api-Key: {v}" https://api.getpostman.com/collections')),
    Provider("terraform-cloud-token", lambda g: g.s(14) + _p(".atlas", "v1.") + g.s(67),
             _x(".terraformrc", 'credentials "app.terraform.io" {{\n  token = "{v}"\n}}')),
    Provider("pulumi-token", lambda g: _p("pu", "l-") + g.hex(40), _x("pulumi.env", "PULUMI_ACCESS_TOKEN={v}")),
    Provider("supabase-token", lambda g: _p("sb", "p_") + g.hex(40), _x("supa.sh", "supabase login --token {v}")),
    Provider("figma-token", lambda g: _p("fi", "gd_") + g.s(40, URLSAFE), _x("figma.py", 'headers = {{"X-Figma-Token": "{v}"}}')),
    Provider("age-secret-key", lambda g: _p("AGE-SECRET", "-KEY-1") + g.s(58, _BECH32),
             _x("keys.txt", "# created: 2024-05-01T10:00:00Z\n# public key: age1example\n{v}")),
    Provider("rubygems-api-key", lambda g: _p("rubyg", "ems_") + g.hex(48), _x("credentials.yaml", "---\n:rubygems_api_key: {v}")),
    Provider("jwt", lambda g: g.jwt(), _x("api.sh", 'curl -H "Authorization: Bearer {v}" https://api.acme.io/v1/runs'), "auth"),
    Provider("jwt-base64", _jwt_b64, _x("k8s-secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\ndata:\n  token: {v}"),
             "auth", decoded=_unb64),
    Provider("rsa-private-key", lambda g: g.pem("RSA"), _x("id_rsa", "{v}"), "rsa_private_key", multiline=True),
    Provider("ec-private-key", lambda g: g.pem("EC"), _x("tls.key", "{v}"), "ec_private_key", multiline=True),
    Provider("openssh-private-key", lambda g: g.pem("OPENSSH"), _x("id_ed25519", "{v}"), "ssh_private_key", multiline=True),
    Provider("postgres-url", _url("postgresql", "db.internal:5432/features"), _x("settings.py", 'SQLALCHEMY_DATABASE_URI = "{v}"'), "database"),
    Provider("mysql-url", _url("mysql", "mysql.internal:3306/runs", "mlflow"), _x("mlflow.sh", "mlflow server --backend-store-uri {v}"), "mysql"),
    Provider("mongodb-url", _url("mongodb+srv", "cluster0.ab1cd.mongodb.net/?retryWrites=true", "etl"), _x("mongo.py", 'client = MongoClient("{v}")'), "mongo"),
    Provider("redis-url", _url("redis", "redis.internal:6379/0", "default"), _x("celery.py", 'broker_url = "{v}"')),
    Provider("amqp-url", _url("amqps", "rabbit.internal:5671/ml", "worker"), _x("worker.env", "CELERY_BROKER_URL={v}"), "broker"),
    Provider("generic-password", lambda g: g.password(22),
             _x("settings.py", 'DATABASES = {{"default": {{"USER": "app", "PASSWORD": "{v}"}}}}', "app.ini", "[database]\nuser = app\npassword = {v}")),
    Provider("generic-secret-key", lambda g: g.password(50, "!@%^*(-_=+)"), _x("settings.py", 'SECRET_KEY = "{v}"')),
)

Renderer = Callable[[str, str], str]
#: set 2, one-line values: (syntax, file name, template with {i} identifier, {I} upper, {s} secret)
ONE_LINE: tuple[tuple[str, str, str], ...] = (
    # gitleaks' GenerateSampleSecrets shapes, each in a small file of its kind
    ("ini-quoted", "settings.ini", '[service]\n{i}Token="{s}"\n'),
    ("ini-unquoted", "app.ini", "[service]\n{i}Token = {s}\n"),
    ("json", "config.json", '{\n    "{i}_token": "{s}"\n}\n'),
    ("json-escaped", "payload.json", '{"body": "{\\n    \\"{i}_token\\": \\"{s}\\"\\n}"}\n'),
    ("xml-element", "settings.xml", '<?xml version="1.0"?>\n<settings>\n  <{i}Token>{s}</{i}Token>\n</settings>\n'),
    ("xml-element-multiline", "config.xml", "<config>\n<{i}Token>\n    {s}\n</{i}Token>\n</config>\n"),
    ("yaml-unquoted", "config.yaml", "service:\n  name: trainer\n  {i}_token: {s}\n"),
    ("yaml-single-quoted", "values.yaml", "{i}_token: '{s}'\nreplicas: 2\n"),
    ("yaml-double-quoted", "params.yaml", 'epochs: 10\n{i}_token: "{s}"\n'),
    ("yaml-literal", "job.yaml", "{i}_token: |\n  {s}\n"),
    ("yaml-folded", "task.yaml", "{i}_token: >\n  {s}\n"),
    ("csharp", "Settings.cs", 'class Settings {\n    string {i}Token = "{s}";\n}\n'),
    ("go-var", "config.go", 'package config\n\nvar {i}Token string = "{s}"\n'),
    ("go-short", "main.go", 'package main\n\nfunc main() {\n\t{i}Token := "{s}"\n\trun({i}Token)\n}\n'),
    ("go-backtick", "client.go", "package main\n\nfunc client() {\n\t{i}Token := `{s}`\n\tuse({i}Token)\n}\n"),
    ("java", "Config.java", 'public class Config {\n    String {i}Token = "{s}";\n}\n'),
    ("kotlin", "Config.kt", 'object Config {\n    var {i}Token = "{s}"\n}\n'),
    ("php-concat", "auth.php", '<?php\n${i}Token = "";\n${i}Token .= "{s}";\n'),
    ("python-single-quoted", "settings.py", "import os\n\n{i}Token = '{s}'\n"),
    ("python-double-quoted", "config.py", 'import os\n\n{i}Token = "{s}"\n'),
    ("csv", "tokens.csv", "name,value,\n{i}Token,{s},\n"),
    ("logstash", "pipeline.conf", 'output {\n  http {\n    "{i}Token" => "{s}"\n  }\n}\n'),
    ("make-recursive", "Makefile", '{I}_TOKEN = "{s}"\n\ntrain:\n\tpython train.py\n'),
    ("make-simple", "build.mk", '{I}_TOKEN := "{s}"\n\nall:\n\t@echo ok\n'),
    ("make-conditional", "rules.mk", '{I}_TOKEN ?= "{s}"\n\ndeploy:\n\t./deploy.sh\n'),
    # the contexts an ML repository adds
    ("dotenv", ".env", "# service\n{I}_TOKEN={s}\nLOG_LEVEL=info\n"),
    ("toml", "pipeline.toml", '[service]\nname = "trainer"\n{i}_token = "{s}"\n'),
    ("shell-export", "env.sh", '#!/bin/sh\nexport {I}_TOKEN="{s}"\npython train.py\n'),
    ("php-array", "config.php", "<?php\n$config['{i}_token'] = '{s}';\n"),
    ("xml-attribute", "app.config", '<configuration>\n  <appSettings>\n    <add key="{I}_TOKEN" value="{s}" />\n  </appSettings>\n</configuration>\n'),
    ("dockerfile", "Dockerfile", 'FROM python:3.11-slim\nENV {I}_TOKEN={s}\nCMD ["python", "serve.py"]\n'),
    ("curl-bearer", "call.sh", 'curl -sS https://api.example.com/v1/me \\\n  -H "Authorization: Bearer {s}"\n'),
    ("curl-basic", "fetch.sh", "curl -sS " + "-u ci-bot:{s} https://api.example.com/v1/artifacts\n"),  # in parts: no curl -u here
)
#: set 2, multi-line values: (syntax, file name, render(identifier, value))
MULTI_LINE: tuple[tuple[str, str, Renderer], ...] = (
    ("python-triple-quoted", "keys.py", lambda i, s: f'{i.upper()} = """{s}\n"""\n'),
    ("json-escaped-newlines", "config.json", lambda i, s: json.dumps({"name": "trainer", i: s + "\n"}, indent=2) + "\n"),
    ("dotenv-escaped", ".env", lambda i, s: f"{i.upper()}={json.dumps(s)}\n"),
    ("yaml-literal", "secret.yaml", lambda i, s: f"{i}: |\n" + "".join(f"  {line}\n" for line in s.splitlines())),
    ("toml-multiline", "pipeline.toml", lambda i, s: f"[service]\n{i} = '''\n{s}\n'''\n"),
    ("go-backtick", "key.go", lambda i, s: f"package key\n\nconst {i.title().replace('_', '')} = `{s}`\n"),
    ("xml-element-multiline", "key.xml", lambda i, s: f"<config>\n<{i}>\n{s}\n</{i}>\n</config>\n"),
    ("shell-export", "env.sh", lambda i, s: f'#!/bin/sh\nexport {i.upper()}="{s}"\n'),
)
# fmt: on


def _one_line_renderer(template: str) -> Renderer:
    return lambda i, s: template.replace("{i}", i).replace("{I}", i.upper()).replace("{s}", s)


def _notebook_output(i: str, s: str) -> str:
    name = i.upper() + ("" if "\n" in s else "_TOKEN")
    return _notebook_text([_code(f"!env | grep {name}", [_stream(f"{name}={s}\n")])], {})[0]


#: every set-2 syntax: (syntax, file name, render or None when it cannot hold a multi-line value,
#: render for multi-line values or None)
SYNTAXES: tuple[tuple[str, str, Renderer | None, Renderer | None], ...] = (
    *((syn, name, _one_line_renderer(t), None) for syn, name, t in ONE_LINE),
    *((syn + " (multi-line)", name, None, r) for syn, name, r in MULTI_LINE),
    ("notebook-output", "print.ipynb", _notebook_output, _notebook_output),
)


# -- notebooks -------------------------------------------------------------------------------


def _code(
    source: str, outputs: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": 1,
        "metadata": meta or {},
        "outputs": outputs or [],
        "source": source.splitlines(keepends=True),
    }


def _stream(text: str) -> dict[str, Any]:
    return {"name": "stdout", "output_type": "stream", "text": text.splitlines(keepends=True)}


def _result(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"data": data, "metadata": {}, "output_type": kind}
    if kind == "execute_result":
        out["execution_count"] = 4
    return out


def _notebook_text(
    cells: list[dict[str, Any]], meta: dict[str, Any]
) -> tuple[str, list[tuple[int, int]], tuple[int, int]]:
    """The notebook as JSON text, each cell's line range and the metadata block's (1-based)."""
    lines = ["{", ' "cells": [']
    ranges = []
    for n, cell in enumerate(cells):
        body = ["  " + line for line in json.dumps(cell, indent=1).splitlines()]
        if n < len(cells) - 1:
            body[-1] += ","
        ranges.append((len(lines) + 1, len(lines) + len(body)))
        lines += body
    lines.append(" ],")
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    body = [
        " " + line for line in json.dumps({"kernelspec": kernel, **meta}, indent=1).splitlines()
    ]
    body[0] = ' "metadata": {'
    body[-1] += ","
    meta_range = (len(lines) + 1, len(lines) + len(body))
    lines += [*body, ' "nbformat": 4,', ' "nbformat_minor": 5', "}"]
    return "\n".join(lines) + "\n", ranges, meta_range


NOTEBOOK_PLACES = (
    "code source",
    "stream output",
    "execute_result",
    "display_data html",
    "error traceback",
    "notebook metadata",
    "cell metadata",
)


def _notebook_sample(
    place: str, name: str, value: str, g: Gen
) -> tuple[str, int | None, list[tuple[int, int]], tuple[int, int]]:
    """(text, the 1-based cell holding the value or None for notebook metadata, cell lines,
    metadata lines)."""
    upper = name.upper()
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Training run\n", "Fits the model.\n"]},
        _code("import os\nimport pandas as pd\n\ndf = pd.read_parquet('features.parquet')\ndf.shape",
              [_result("execute_result", {"text/plain": ["(1200, 18)"]})]),
    ]  # fmt: skip
    meta: dict[str, Any] = {}
    holder: int | None = len(cells) + 1
    err = f"AuthenticationError: invalid credentials for {name}={value!r}"
    tb = [
        "\x1b[0;31m" + "-" * 75 + "\x1b[0m",
        "\x1b[0;31mAuthenticationError\x1b[0m       Traceback (most recent call last)",
        f"\x1b[0;31mAuthenticationError\x1b[0m: {err}",
    ]
    if place == "code source":
        cells.append(_code(f'{name} = "{value}"\nclient = connect({name}={name})'))
    elif place == "stream output":
        env = f"environ({{'HOME': '/home/jovyan', '{upper}': '{value}'}})\n"
        cells.append(_code("print(os.environ)", [_stream(env)]))
    elif place == "execute_result":
        out = _result("execute_result", {"text/plain": [repr(value)]})
        cells.append(_code(f"os.environ['{upper}']", [out]))
    elif place == "display_data html":
        html = f"<table><tr><td>{name}</td><td>{value}</td></tr></table>"
        out = _result("display_data", {"text/html": [html], "text/plain": ["<Settings>"]})
        cells.append(_code("show_settings()", [out]))
    elif place == "error traceback":
        out = {
            "ename": "AuthenticationError",
            "evalue": err,
            "output_type": "error",
            "traceback": tb,
        }
        cells.append(_code("client.models.list()", [out]))
    elif place == "notebook metadata":
        params = {name: value, "epochs": 10}
        meta = {"papermill": {"parameters": params, "input_path": "train.ipynb"}}
        holder = None
    else:  # cell metadata: the parameters cell papermill injects, tagged, holding its values
        cell_meta = {"tags": ["injected-parameters"], "papermill": {"parameters": {name: value}}}
        cells.append(_code("# Parameters\nepochs = 10\n", meta=cell_meta))
    score = _result("execute_result", {"text/plain": [f"0.9{g.rng.randint(10, 99)}"]})
    cells.append(_code("model.fit(df)\nmodel.score(df)", [score]))
    text, ranges, meta_range = _notebook_text(cells, meta)
    return text, holder, ranges, meta_range


# -- negatives -------------------------------------------------------------------------------


def _negatives(g: Gen) -> Iterator[tuple[str, str, str]]:
    """(kind, file name, text): what the peers' negative examples look like, in realistic files."""
    for prov in PROVIDERS:
        real = prov.make(g)
        up = prov.ident.upper()
        if prov.multiline:
            head, tail = real.splitlines()[0], real.splitlines()[-1]
            doc = f"Paste your key between the markers:\n\n```\n{head}\n...\n{tail}\n```\n"
            yield "placeholder", f"{prov.name}.md", doc
            continue
        prefix = real[: min(8, max(4, len(real) // 3))]
        filler = "x" * max(len(real) - len(prefix), 8)
        yield "placeholder", f"{prov.name}.env.example", f"{up}_TOKEN=<your-{prov.name}>\n"
        yield "placeholder", f"{prov.name}.py", f'{up}_TOKEN = "{prefix}{filler}"  # replace me\n'
        yield (
            "redacted",
            f"{prov.name}.log",
            f"INFO using {prov.ident}_token={real[:4]}{'*' * 16}\n",
        )
        yield (
            "env-lookup",
            f"{prov.name}_env.py",
            f'{prov.ident}_token = os.environ["{up}_TOKEN"]\n',
        )
    for n in range(15):
        yield "hash", f"hash{n}.py", f'SHA256 = "{g.hex(64)}"\nMODEL_MD5 = "{g.hex(32)}"\n'
        yield "commit", f"commit{n}.yaml", f"revision: {g.hex(40)}\nrepo: acme/models\n"
        ids = {"run_id": g.uuid(), "experiment_id": g.uuid()}
        yield "uuid", f"uuid{n}.json", json.dumps(ids, indent=1) + "\n"
        yield (
            "integrity",
            f"lock{n}.json",
            json.dumps({"integrity": "sha512-" + b64(g.raw(64))}) + "\n",
        )
    for n in range(5):
        # public by design: Sentry documents a DSN's public key as safe to expose (it only
        # submits events), Stripe's pk_ keys are for browsers
        dsn = f"https://{g.hex(32)}@o{g.digits(6)}.ingest.sentry.io/{g.digits(7)}"
        yield "public", f"sentry{n}.py", f'sentry_sdk.init(dsn="{dsn}")\n'
        yield (
            "public",
            f"stripe{n}.js",
            f'const stripe = Stripe("{_p("pk_", "live_")}{g.s(24)}");\n',
        )
    tests = ("test", "changeme", "password", "secret", "example", "dummy", "<password>")
    tests += ("${DB_PASSWORD}", "{{ password }}", "********")
    for n, t in enumerate(tests):
        test = f'def test_login():\n    assert login("user", password="{t}")\n'
        yield "test-value", f"test_value{n}.py", test
    refs = ("vault://secret/llm/openai#api_key", "{{ var.value.openai_key }}")
    refs += ("${{ secrets.HF_TOKEN }}", "env:OPENAI_API_KEY", "$(cat /run/secrets/db)")
    for n, ref in enumerate(refs):
        yield "reference", f"reference{n}.yaml", f"api_key: {ref}\n"
    docs = (
        _p("AKIA", "IOSFODNN7", "EXAMPLE"),
        _p("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCY", "EXAMPLEKEY"),
        "postgresql://user:" + "password@localhost:5432/db",
        "postgresql://user:" + "${DB_PASSWORD}@localhost/db",
        "https://user:" + "pass@example.com/",
        _p("sk-", "proj-", "...."),
        _p("xo", "xb-", "your-bot-token"),
        _p("gh", "p_", "YOUR_TOKEN_HERE"),
    )
    for n, d in enumerate(docs):
        yield "docs-example", f"README{n}.md", f"Set it up like this:\n\n    export TOKEN={d}\n"


# -- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    set: str  # "set1", "set2", "negative", "notebook"
    group: str  # provider name (negatives: their kind)
    path: str  # relative to the corpus root, "/" separated
    syntax: str = ""  # set 2: the syntax; notebooks: the place
    #: 1-based line range of the value in the file ((0, 0) for negatives)
    span: tuple[int, int] = (0, 0)
    #: the value and other forms a scanner may report for it (never printed)
    values: tuple[str, ...] = field(default=(), repr=False)
    #: notebooks: the cell holding the value (1-based), None for the notebook's metadata
    cell: int | None = None
    #: notebooks: line ranges of each cell and of the metadata block
    cell_lines: tuple[tuple[int, int], ...] = ()
    meta_lines: tuple[int, int] = (0, 0)

    @property
    def sha1s(self) -> frozenset[str]:
        return frozenset(hashlib.sha1(v.encode()).hexdigest() for v in self.values)


@dataclass
class Corpus:
    root: Path
    seed: int
    samples: list[Sample]

    def of(self, kind: str) -> list[Sample]:
        return [s for s in self.samples if s.set == kind]


def _span(text: str, value: str) -> tuple[int, int]:
    """Line range of ``value`` in ``text``: from its first line's line to its last line's."""
    parts = [p.strip() for p in value.strip().splitlines() if p.strip()]
    start = text.find(parts[0])
    if start < 0:
        raise ValueError("a sample's value is not in its own file")
    end = text.find(parts[-1], start)
    return text.count("\n", 0, start) + 1, text.count("\n", 0, max(end, start)) + 1


def _sa_json(g: Gen, key: str) -> str:
    doc = {
        "type": "service_account",
        "project_id": "acme-ml",
        "private_key_id": g.hex(40),
        "private_key": key,
        "client_email": "trainer@acme-ml.iam.gserviceaccount.com",
        "client_id": g.digits(21),
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return json.dumps(doc, indent=2) + "\n"


def build(root: Path, *, seed: int | None = None, notebooks: int = 50, every: int = 1) -> Corpus:
    """Write the corpus under ``root`` and return its labelled samples.

    ``every`` > 1 keeps every n-th set-2 syntax per provider (``--quick``), rotating so every
    syntax still appears.
    """
    seed = secrets.randbits(32) if seed is None else seed
    g = Gen(random.Random(seed))
    out: list[Sample] = []

    def put(kind: str, group: str, name: str, text: str, value: str | None, **kw: Any) -> None:
        rel = f"{kind}/{group}/{name}"
        path = root / rel
        if path.exists():
            raise ValueError(f"two samples at {rel}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if value is None:
            out.append(Sample(kind, group, rel, kw.get("syntax", "")))
            return
        prov = next((p for p in PROVIDERS if p.name == group), None)
        values = (value, *(prov.decoded(value) if prov else ()))
        out.append(Sample(kind, group, rel, span=_span(text, value), values=values, **kw))

    for prov in PROVIDERS:
        for n, (name, template) in enumerate(prov.examples):
            v = prov.make(g)
            text = _sa_json(g, v) if template == "@sa" else template.format(v=v) + "\n"
            put("set1", prov.name, f"{n}/{name}", text, v.strip())
    for pn, prov in enumerate(PROVIDERS):
        for sn, (syntax, name, one, multi) in enumerate(SYNTAXES):
            render = multi if prov.multiline else one
            if render is None or (sn + pn) % every:
                continue
            v = prov.make(g).rstrip("\n")
            slug = syntax.replace(" ", "-").replace("(", "").replace(")", "")
            put("set2", prov.name, f"{slug}/{name}", render(prov.ident, v), v, syntax=syntax)
    for n, (kind, name, text) in enumerate(_negatives(g)):
        put("negative", kind, f"{n}/{name}", text, None)
    single = [p for p in PROVIDERS if not p.multiline]
    offset = g.rng.randrange(len(single))
    for n in range(notebooks):
        place = NOTEBOOK_PLACES[n % len(NOTEBOOK_PLACES)]
        prov = single[(offset + n) % len(single)]
        v = prov.make(g)
        text, cell, ranges, meta = _notebook_sample(place, prov.ident + "_token", v, g)
        put("notebook", prov.name, f"{n:02d}-{place.replace(' ', '-')}.ipynb", text, v,
            syntax=place, cell=cell, cell_lines=tuple(ranges), meta_lines=meta)  # fmt: skip
    return Corpus(root, seed, out)
