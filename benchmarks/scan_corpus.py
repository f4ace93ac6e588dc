"""The scanner benchmark's corpus: credentials of ~70 providers generated at run time, placed in files.

Nothing here is fetched and nothing secret-looking is committed: every value is drawn at run time
(``random.Random(seed)``, the seed itself drawn from ``secrets`` unless given) in the provider's
documented format, and every prefix is written in parts (``_p("gh", "p_")``) so this file is not
a credential to any scanner. The samples take the shapes of two peers' published rule tests:

- **set 1**, like Kingfisher's rule YAML ``examples``: one token in a short realistic line (a
  client call, an ``Authorization`` header, a connection string, a ``.env`` entry...), one file per
  example, in the file type the line belongs to;
- **set 2**, like gitleaks' generated ``tps`` (``utils.GenerateSampleSecrets``): the same kind of
  secret assigned under the provider's identifier in many syntaxes (Python, ``.env``, YAML, JSON,
  TOML, Go and Go backticks, shell ``export``, PHP, XML element and attribute, Makefile, Dockerfile,
  properties, ``curl`` headers) and printed in a notebook's output;
- **negatives**, like both peers' ``negative_examples`` / ``fps``: placeholders in each provider's
  shape, redacted forms, documentation examples, hashes, UUIDs, test values, references;
- **notebooks**: secrets in code sources, stream / ``execute_result`` / ``display_data`` outputs,
  error tracebacks, notebook metadata and cell metadata (papermill parameters).

Providers are taken from both peers' rule lists, not from what leaseline detects. A sample's
``span`` is the line range of its value in its file; a scanner finds it when it reports a finding
in that file on one of those lines (or, when it reports values, one overlapping the value).

Why over 400 lines: the provider table (one generator per documented token format) and the
renderers of each syntax.
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

__all__ = ["PROVIDERS", "SYNTAXES", "Corpus", "Provider", "Sample", "build"]

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


class _Gen:
    """Random strings of a given alphabet, mixed like real tokens (a digit and both cases)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def s(self, n: int, alphabet: str = ALNUM) -> str:
        for _ in range(100):
            out = "".join(self.rng.choice(alphabet) for _ in range(n))
            kinds = [set(out) & set(a) for a in (UPPER, LOWER, DIGITS) if set(a) & set(alphabet)]
            if n < 12 or all(kinds):
                return out
        return out

    def hex(self, n: int) -> str:
        return self.s(n, HEX)

    def digits(self, n: int) -> str:
        return str(self.rng.randint(1, 9)) + self.s(n - 1, DIGITS)

    def bytes(self, n: int) -> bytes:
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def b64(self, raw: bytes, urlsafe: bool = False, pad: bool = True) -> str:
        out = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
        return out if pad else out.rstrip("=")

    def uuid(self) -> str:
        h = self.hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{self.rng.choice('89ab')}{h[17:20]}-{h[20:]}"

    def password(self, n: int = 20) -> str:
        return self.s(n, ALNUM + "!#%^*-_") if n else ""

    def pem(self, kind: str) -> str:
        if kind == "OPENSSH":
            raw = _p("openssh", "-key-v1").encode() + b"\0" + self.bytes(380)
        elif kind == "RSA":
            raw = b"\x30\x82\x04\xa4\x02\x01\x00\x02\x82\x01\x01\x00" + self.bytes(1180)
        elif kind == "EC":
            raw = b"\x30\x77\x02\x01\x01\x04\x20" + self.bytes(112)
        else:  # PKCS#8
            raw = b"\x30\x82\x04\xbd\x02\x01\x00\x30\x0d\x06\x09" + self.bytes(1200)
        body = self.b64(raw)
        lines = [
            body[i : i + (70 if kind == "OPENSSH" else 64)]
            for i in range(0, len(body), 70 if kind == "OPENSSH" else 64)
        ]
        label = (kind + " " if kind != "PKCS8" else "") + _p("PRIVATE", " KEY")
        return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"

    def jwt(self) -> str:
        head = self.b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode(), True, False)
        claims = {"sub": self.uuid(), "iat": self.rng.randint(1.6e9, 1.8e9), "scope": "api"}
        body = self.b64(json.dumps(claims).encode(), True, False)
        return f"{head}.{body}.{self.b64(self.bytes(32), True, False)}"


@dataclass(frozen=True)
class Provider:
    name: str
    make: Callable[[_Gen], str]
    #: the identifier a user would assign it to (gitleaks' ``identifier``), snake case
    ident: str
    #: set 1: (file name, line template with ``{v}``), Kingfisher ``examples`` style
    examples: tuple[tuple[str, str], ...] = ()
    #: a placeholder in the provider's shape (``{v}`` is the value; may use ``g``)
    multiline: bool = False
    #: other strings a scanner may report for this value (a decoded form)
    decoded: Callable[[str], tuple[str, ...]] = lambda v: ()


def _jwt_b64(g: _Gen) -> str:
    return g.b64(g.jwt().encode())


def _sa_key(g: _Gen) -> str:
    return g.pem("PKCS8") + "\n"


def _sentry_org(g: _Gen) -> str:
    doc = {"iat": g.rng.randint(1.6e9, 1.8e9), "url": "https://sentry.io", "org": "acme"}
    payload = g.b64(json.dumps(doc).encode(), False, False)
    return _p("sntr", "ys_") + payload + "_" + g.s(43, URLSAFE)


def _pypi(g: _Gen) -> str:
    return _p("pypi", "-") + g.b64(b"\x02\x01\x08pypi.org" + g.bytes(120), True, False)


def _openai(kind: str) -> Callable[[_Gen], str]:
    return lambda g: _p("sk-", kind, "-") + g.s(74, URLSAFE) + _p("T3Bl", "bkFJ") + g.s(74, URLSAFE)


def _url(scheme: str, tail: str, user: str = "app") -> Callable[[_Gen], str]:
    return lambda g: f"{scheme}://{user}:{g.password(18)}@{tail}"


E = tuple[tuple[str, str], ...]


def _ex(*pairs: tuple[str, str]) -> E:
    return pairs


PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "aws-access-key-id",
        lambda g: _p("AK", "IA") + g.s(16, UPPER + "234567"),
        "aws_access_key_id",
        _ex(
            ("credentials", "[default]\naws_access_key_id = {v}\nregion = eu-west-1"),
            ("boto.py", 's3 = boto3.client("s3", aws_access_key_id="{v}")'),
        ),
    ),
    Provider(
        "aws-secret-access-key",
        lambda g: g.s(40, B64),
        "aws_secret_access_key",
        _ex(
            ("credentials", "[default]\naws_secret_access_key = {v}"),
            ("deploy.env", "AWS_SECRET_ACCESS_KEY={v}"),
        ),
    ),
    Provider(
        "gcp-service-account-key",
        _sa_key,
        "gcp_private_key",
        _ex(
            ("service-account.json", "@sa"),
        ),
        multiline=True,
    ),
    Provider(
        "gcp-api-key",
        lambda g: _p("AI", "za") + g.s(35, URLSAFE),
        "google_api_key",
        _ex(
            ("maps.js", 'const url = "https://maps.googleapis.com/maps/api/js?key={v}";'),
            ("gemini.py", 'genai.configure(api_key="{v}")'),
        ),
    ),
    Provider(
        "google-oauth-client-secret",
        lambda g: _p("GOC", "SPX-") + g.s(28, URLSAFE),
        "google_client_secret",
        _ex(
            (
                "client_secret.json",
                '{{"web": {{"client_id": "1234-abc.apps.googleusercontent.com", "client_secret": "{v}"}}}}',
            ),
        ),
    ),
    Provider(
        "azure-ad-client-secret",
        lambda g: g.s(3, ALNUM) + g.s(1, DIGITS) + "Q~" + g.s(34, ALNUM + "_~.-"),
        "azure_client_secret",
        _ex(
            (
                "auth.py",
                'credential = ClientSecretCredential(tenant_id, client_id, client_secret="{v}")',
            ),
            ("azure.env", "AZURE_CLIENT_SECRET={v}"),
        ),
    ),
    Provider(
        "azure-storage-account-key",
        lambda g: g.b64(g.bytes(64)),
        "azure_storage_key",
        _ex(
            (
                "storage.py",
                'CONN = "DefaultEndpointsProtocol=https;AccountName=mlartifacts;AccountKey={v};EndpointSuffix=core.windows.net"',
            ),
        ),
    ),
    Provider(
        "azure-openai-key",
        lambda g: g.hex(32),
        "azure_openai_api_key",
        _ex(
            (
                "llm.py",
                'client = AzureOpenAI(azure_endpoint="https://acme.openai.azure.com", api_key="{v}", api_version="2024-06-01")',
            ),
            ("azure.env", "AZURE_OPENAI_API_KEY={v}"),
        ),
    ),
    Provider(
        "github-classic-pat",
        lambda g: _p("gh", "p_") + g.s(36),
        "github_token",
        _ex(
            ("ci.sh", 'curl -H "Authorization: token {v}" https://api.github.com/user'),
            ("gh.py", 'gh = Github("{v}")'),
        ),
    ),
    Provider(
        "github-fine-grained-pat",
        lambda g: _p("github", "_pat_") + g.s(22) + "_" + g.s(59),
        "github_pat",
        _ex(
            ("push.sh", "git push https://x-access-token:{v}@github.com/acme/models.git"),
        ),
    ),
    Provider(
        "github-oauth-token",
        lambda g: _p("gh", "o_") + g.s(36),
        "github_oauth_token",
        _ex(
            ("hosts.yml", "github.com:\n    oauth_token: {v}\n    user: ci-bot"),
        ),
    ),
    Provider(
        "github-app-token",
        lambda g: _p("gh", "s_") + g.s(36),
        "github_app_token",
        _ex(
            ("clone.sh", "git clone https://x-access-token:{v}@github.com/acme/data.git"),
        ),
    ),
    Provider(
        "gitlab-pat",
        lambda g: _p("gl", "pat-") + g.s(20, URLSAFE),
        "gitlab_token",
        _ex(
            (
                "gitlab.sh",
                'curl --header "PRIVATE-TOKEN: {v}" "https://gitlab.example.com/api/v4/projects"',
            ),
        ),
    ),
    Provider(
        "gitlab-runner-token",
        lambda g: _p("gl", "rt-") + g.s(20, URLSAFE),
        "gitlab_runner_token",
        _ex(
            (
                "config.toml",
                '[[runners]]\n  name = "ml"\n  url = "https://gitlab.com"\n  token = "{v}"',
            ),
        ),
    ),
    Provider(
        "slack-bot-token",
        lambda g: _p("xo", "xb-") + g.digits(12) + "-" + g.digits(13) + "-" + g.s(24),
        "slack_bot_token",
        _ex(
            ("notify.py", 'client = WebClient(token="{v}")'),
        ),
    ),
    Provider(
        "slack-user-token",
        lambda g: (
            _p("xo", "xp-")
            + g.digits(12)
            + "-"
            + g.digits(12)
            + "-"
            + g.digits(13)
            + "-"
            + g.hex(32)
        ),
        "slack_user_token",
        _ex(
            ("slack.env", "SLACK_USER_TOKEN={v}"),
        ),
    ),
    Provider(
        "slack-webhook",
        lambda g: (
            _p("https://hooks.", "slack.com/services/T")
            + g.s(10, UPPER + DIGITS)
            + "/B"
            + g.s(10, UPPER + DIGITS)
            + "/"
            + g.s(24)
        ),
        "slack_webhook_url",
        _ex(
            ("alert.py", 'requests.post("{v}", json={{"text": "training done"}})'),
        ),
    ),
    Provider(
        "stripe-secret-key",
        lambda g: _p("sk", "_live_") + g.s(99),
        "stripe_secret_key",
        _ex(
            ("billing.py", 'stripe.api_key = "{v}"'),
        ),
    ),
    Provider(
        "stripe-restricted-key",
        lambda g: _p("rk", "_live_") + g.s(24),
        "stripe_restricted_key",
        _ex(
            ("billing.env", "STRIPE_KEY={v}"),
        ),
    ),
    Provider(
        "twilio-api-key",
        lambda g: _p("S", "K") + g.hex(32),
        "twilio_api_key",
        _ex(
            ("sms.py", 'client = Client("{v}", api_secret, account_sid)'),
        ),
    ),
    Provider(
        "sendgrid-api-key",
        lambda g: _p("S", "G.") + g.s(22, URLSAFE) + "." + g.s(43, URLSAFE),
        "sendgrid_api_key",
        _ex(
            ("mail.py", 'sg = SendGridAPIClient("{v}")'),
        ),
    ),
    Provider(
        "mailgun-api-key",
        lambda g: _p("ke", "y-") + g.hex(32),
        "mailgun_api_key",
        _ex(
            (
                "mail.sh",
                "curl -s --user 'api:{v}' https://api.mailgun.net/v3/mg.example.com/messages",
            ),
        ),
    ),
    Provider(
        "mailchimp-api-key",
        lambda g: g.hex(32) + "-us" + str(g.rng.randint(1, 20)),
        "mailchimp_api_key",
        _ex(
            ("news.py", 'client.set_config({{"api_key": "{v}", "server": "us6"}})'),
        ),
    ),
    Provider(
        "npm-token",
        lambda g: _p("np", "m_") + g.s(36),
        "npm_token",
        _ex(
            (".npmrc", "//registry.npmjs.org/:_authToken={v}"),
        ),
    ),
    Provider(
        "pypi-token",
        _pypi,
        "pypi_token",
        _ex(
            (".pypirc", "[pypi]\nusername = __token__\npassword = {v}"),
        ),
    ),
    Provider(
        "dockerhub-pat",
        lambda g: _p("dckr", "_pat_") + g.s(27, URLSAFE),
        "docker_hub_token",
        _ex(
            ("login.sh", "echo {v} | docker login -u acme --password-stdin"),
        ),
    ),
    Provider(
        "datadog-api-key",
        lambda g: g.hex(32),
        "datadog_api_key",
        _ex(("datadog.yaml", "api_key: {v}\nsite: datadoghq.eu"), ("dd.env", "DD_API_KEY={v}")),
    ),
    Provider(
        "newrelic-user-key",
        lambda g: _p("NR", "AK-") + g.s(27, UPPER + DIGITS),
        "new_relic_api_key",
        _ex(
            ("newrelic.sh", 'curl -H "API-Key: {v}" https://api.newrelic.com/graphql'),
        ),
    ),
    Provider(
        "sentry-dsn",
        lambda g: "https://" + g.hex(32) + "@o" + g.digits(6) + ".ingest.sentry.io/" + g.digits(7),
        "sentry_dsn",
        _ex(
            ("app.py", 'sentry_sdk.init(dsn="{v}", traces_sample_rate=0.1)'),
        ),
    ),
    Provider(
        "sentry-auth-token",
        _sentry_org,
        "sentry_auth_token",
        _ex(
            (".sentryclirc", "[auth]\ntoken={v}"),
        ),
    ),
    Provider(
        "shopify-access-token",
        lambda g: _p("shp", "at_") + g.hex(32),
        "shopify_access_token",
        _ex(
            ("shop.py", 'session = shopify.Session("acme.myshopify.com", "2024-01", "{v}")'),
        ),
    ),
    Provider(
        "square-access-token",
        lambda g: _p("EA", "AA") + g.s(60, URLSAFE),
        "square_access_token",
        _ex(
            ("pay.py", 'client = Client(access_token="{v}", environment="production")'),
        ),
    ),
    Provider(
        "square-oauth-secret",
        lambda g: _p("sq0", "csp-") + g.s(43, URLSAFE),
        "square_oauth_secret",
        _ex(
            ("square.env", "SQUARE_OAUTH_SECRET={v}"),
        ),
    ),
    Provider(
        "braintree-access-token",
        lambda g: _p("access_token", "$production$") + g.s(16, LOWER + DIGITS) + "$" + g.hex(32),
        "braintree_access_token",
        _ex(
            ("paypal.py", 'gateway = braintree.BraintreeGateway(access_token="{v}")'),
        ),
    ),
    Provider(
        "heroku-api-key",
        lambda g: _p("HR", "KU-") + g.s(60, URLSAFE),
        "heroku_api_key",
        _ex(
            (".netrc", "machine api.heroku.com\n  login ci@acme.io\n  password {v}"),
        ),
    ),
    Provider(
        "digitalocean-pat",
        lambda g: _p("do", "p_v1_") + g.hex(64),
        "digitalocean_token",
        _ex(
            (
                "do.sh",
                'curl -H "Authorization: Bearer {v}" https://api.digitalocean.com/v2/droplets',
            ),
        ),
    ),
    Provider(
        "cloudflare-api-token",
        lambda g: g.s(40, URLSAFE),
        "cloudflare_api_token",
        _ex(
            (
                "cf.sh",
                'curl -H "Authorization: Bearer {v}" https://api.cloudflare.com/client/v4/user/tokens/verify',
            ),
            ("cf.env", "CLOUDFLARE_API_TOKEN={v}"),
        ),
    ),
    Provider(
        "linear-api-key",
        lambda g: _p("lin", "_api_") + g.s(40),
        "linear_api_key",
        _ex(
            ("linear.py", 'headers = {{"Authorization": "{v}"}}'),
        ),
    ),
    Provider(
        "notion-token",
        lambda g: _p("nt", "n_") + g.digits(11) + g.s(35),
        "notion_token",
        _ex(
            ("notion.py", 'notion = Client(auth="{v}")'),
        ),
    ),
    Provider(
        "atlassian-api-token",
        lambda g: _p("ATA", "TT3") + g.s(178, URLSAFE) + "=" + g.hex(8).upper(),
        "atlassian_api_token",
        _ex(
            ("jira.py", 'jira = JIRA(server, basic_auth=("ci@acme.io", "{v}"))'),
        ),
    ),
    Provider(
        "okta-api-token",
        lambda g: "00" + g.s(40, URLSAFE),
        "okta_api_token",
        _ex(
            ("okta.sh", 'curl -H "Authorization: SSWS {v}" https://acme.okta.com/api/v1/users'),
        ),
    ),
    Provider(
        "databricks-token",
        lambda g: _p("da", "pi") + g.hex(32),
        "databricks_token",
        _ex(
            (
                ".databrickscfg",
                "[DEFAULT]\nhost = https://adb-123.azuredatabricks.net\ntoken = {v}",
            ),
            ("db.py", 'w = WorkspaceClient(host=host, token="{v}")'),
        ),
    ),
    Provider(
        "snowflake-url",
        _url("snowflake", "xy12345.eu-west-1/analytics?warehouse=ML_WH", "svc_ml"),
        "snowflake_url",
        _ex(
            ("warehouse.py", 'engine = create_engine("{v}")'),
        ),
    ),
    Provider(
        "huggingface-token",
        lambda g: _p("h", "f_") + g.s(34, UPPER + LOWER),
        "hf_token",
        _ex(("hub.py", 'login(token="{v}")'), ("hf.sh", "huggingface-cli login --token {v}")),
    ),
    Provider(
        "openai-project-key",
        _openai("proj"),
        "openai_api_key",
        _ex(("chat.py", 'client = OpenAI(api_key="{v}")'), ("openai.env", "OPENAI_API_KEY={v}")),
    ),
    Provider(
        "openai-service-account-key",
        _openai("svcacct"),
        "openai_api_key",
        _ex(
            ("batch.sh", 'curl https://api.openai.com/v1/models -H "Authorization: Bearer {v}"'),
        ),
    ),
    Provider(
        "anthropic-api-key",
        lambda g: _p("sk-", "ant-", "api03-") + g.s(93, URLSAFE) + "AA",
        "anthropic_api_key",
        _ex(
            ("claude.py", 'client = anthropic.Anthropic(api_key="{v}")'),
        ),
    ),
    Provider(
        "cohere-api-key",
        lambda g: g.s(40),
        "cohere_api_key",
        _ex(("rerank.py", 'co = cohere.Client("{v}")'), ("co.env", "COHERE_API_KEY={v}")),
    ),
    Provider(
        "mistral-api-key",
        lambda g: g.s(32),
        "mistral_api_key",
        _ex(
            ("mistral.py", 'client = Mistral(api_key="{v}")'),
        ),
    ),
    Provider(
        "groq-api-key",
        lambda g: _p("gs", "k_") + g.s(52),
        "groq_api_key",
        _ex(
            ("groq.py", 'client = Groq(api_key="{v}")'),
        ),
    ),
    Provider(
        "perplexity-api-key",
        lambda g: _p("pp", "lx-") + g.s(48),
        "perplexity_api_key",
        _ex(
            ("search.py", 'client = OpenAI(api_key="{v}", base_url="https://api.perplexity.ai")'),
        ),
    ),
    Provider(
        "replicate-token",
        lambda g: _p("r", "8_") + g.s(37),
        "replicate_api_token",
        _ex(
            ("gen.env", "REPLICATE_API_TOKEN={v}"),
        ),
    ),
    Provider(
        "wandb-api-key",
        lambda g: g.hex(40),
        "wandb_api_key",
        _ex(
            ("train.py", 'wandb.login(key="{v}")'),
            (".netrc", "machine api.wandb.ai\n  login user\n  password {v}"),
        ),
    ),
    Provider(
        "pinecone-api-key",
        lambda g: _p("pc", "sk_") + g.s(5) + "_" + g.s(63),
        "pinecone_api_key",
        _ex(
            ("index.py", 'pc = Pinecone(api_key="{v}")'),
        ),
    ),
    Provider(
        "langsmith-api-key",
        lambda g: _p("lsv2", "_pt_") + g.hex(32) + "_" + g.hex(10),
        "langchain_api_key",
        _ex(
            ("trace.env", "LANGCHAIN_API_KEY={v}"),
        ),
    ),
    Provider(
        "telegram-bot-token",
        lambda g: g.digits(10) + ":AA" + g.s(33, URLSAFE),
        "telegram_bot_token",
        _ex(
            ("bot.py", 'bot = telegram.Bot(token="{v}")'),
        ),
    ),
    Provider(
        "discord-bot-token",
        lambda g: "M" + g.s(25) + "." + g.s(6, URLSAFE) + "." + g.s(38, URLSAFE),
        "discord_bot_token",
        _ex(
            ("bot.py", 'client.run("{v}")'),
        ),
    ),
    Provider(
        "discord-webhook",
        lambda g: (
            _p("https://discord", ".com/api/webhooks/") + g.digits(18) + "/" + g.s(68, URLSAFE)
        ),
        "discord_webhook_url",
        _ex(
            ("notify.py", 'DiscordWebhook(url="{v}").execute()'),
        ),
    ),
    Provider(
        "vault-token",
        lambda g: _p("hv", "s.") + "CAESI" + g.s(90, URLSAFE),
        "vault_token",
        _ex(
            ("vault.sh", "export VAULT_TOKEN={v}"),
        ),
    ),
    Provider(
        "doppler-token",
        lambda g: _p("dp", ".st.") + g.s(43),
        "doppler_token",
        _ex(
            ("doppler.env", "DOPPLER_TOKEN={v}"),
        ),
    ),
    Provider(
        "grafana-service-account-token",
        lambda g: _p("gl", "sa_") + g.s(32) + "_" + g.hex(8),
        "grafana_token",
        _ex(
            ("grafana.py", 'headers = {{"Authorization": "Bearer {v}"}}'),
        ),
    ),
    Provider(
        "postman-api-key",
        lambda g: _p("PM", "AK-") + g.hex(24) + "-" + g.hex(34),
        "postman_api_key",
        _ex(
            ("postman.sh", 'curl -H "X-Api-Key: {v}" https://api.getpostman.com/collections'),
        ),
    ),
    Provider(
        "terraform-cloud-token",
        lambda g: g.s(14) + _p(".atlas", "v1.") + g.s(67),
        "tfe_token",
        _ex(
            (".terraformrc", 'credentials "app.terraform.io" {{\n  token = "{v}"\n}}'),
        ),
    ),
    Provider(
        "pulumi-token",
        lambda g: _p("pu", "l-") + g.hex(40),
        "pulumi_access_token",
        _ex(
            ("pulumi.env", "PULUMI_ACCESS_TOKEN={v}"),
        ),
    ),
    Provider(
        "supabase-token",
        lambda g: _p("sb", "p_") + g.hex(40),
        "supabase_access_token",
        _ex(
            ("supa.sh", "supabase login --token {v}"),
        ),
    ),
    Provider(
        "figma-token",
        lambda g: _p("fi", "gd_") + g.s(40, URLSAFE),
        "figma_token",
        _ex(
            ("figma.py", 'headers = {{"X-Figma-Token": "{v}"}}'),
        ),
    ),
    Provider(
        "age-secret-key",
        lambda g: _p("AGE-SECRET", "-KEY-1") + g.s(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"),
        "age_secret_key",
        _ex(
            ("keys.txt", "# created: 2024-05-01T10:00:00Z\n# public key: age1example\n{v}"),
        ),
    ),
    Provider(
        "rubygems-api-key",
        lambda g: _p("rubyg", "ems_") + g.hex(48),
        "rubygems_api_key",
        _ex(
            ("credentials.yaml", "---\n:rubygems_api_key: {v}"),
        ),
    ),
    Provider(
        "jwt",
        lambda g: g.jwt(),
        "auth_token",
        _ex(
            ("api.sh", 'curl -H "Authorization: Bearer {v}" https://api.acme.io/v1/runs'),
        ),
    ),
    Provider(
        "jwt-base64",
        _jwt_b64,
        "auth_token_b64",
        _ex(
            (
                "k8s-secret.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\ndata:\n  token: {v}",
            ),
        ),
        decoded=lambda v: (base64.b64decode(v).decode(),),
    ),
    Provider(
        "rsa-private-key",
        lambda g: g.pem("RSA"),
        "rsa_private_key",
        _ex(
            ("id_rsa", "{v}"),
        ),
        multiline=True,
    ),
    Provider(
        "ec-private-key",
        lambda g: g.pem("EC"),
        "ec_private_key",
        _ex(
            ("tls.key", "{v}"),
        ),
        multiline=True,
    ),
    Provider(
        "openssh-private-key",
        lambda g: g.pem("OPENSSH"),
        "ssh_private_key",
        _ex(
            ("id_ed25519", "{v}"),
        ),
        multiline=True,
    ),
    Provider(
        "postgres-url",
        _url("postgresql", "db.internal:5432/features"),
        "database_url",
        _ex(
            ("settings.py", 'SQLALCHEMY_DATABASE_URI = "{v}"'),
        ),
    ),
    Provider(
        "mysql-url",
        _url("mysql", "mysql.internal:3306/runs", "mlflow"),
        "mysql_url",
        _ex(
            ("mlflow.sh", "mlflow server --backend-store-uri {v}"),
        ),
    ),
    Provider(
        "mongodb-url",
        _url("mongodb+srv", "cluster0.ab1cd.mongodb.net/?retryWrites=true", "etl"),
        "mongo_uri",
        _ex(
            ("mongo.py", 'client = MongoClient("{v}")'),
        ),
    ),
    Provider(
        "redis-url",
        lambda g: f"redis://default:{g.password(20)}@redis.internal:6379/0",
        "redis_url",
        _ex(
            ("celery.py", 'broker_url = "{v}"'),
        ),
    ),
    Provider(
        "amqp-url",
        _url("amqps", "rabbit.internal:5671/ml", "worker"),
        "broker_url",
        _ex(
            ("worker.env", "CELERY_BROKER_URL={v}"),
        ),
    ),
    Provider(
        "generic-password",
        lambda g: g.password(22),
        "db_password",
        _ex(
            ("settings.py", 'DATABASES = {{"default": {{"USER": "app", "PASSWORD": "{v}"}}}}'),
            ("app.ini", "[database]\nuser = app\npassword = {v}"),
        ),
    ),
    Provider(
        "generic-secret-key",
        lambda g: g.s(50, ALNUM + "!@#%^&*(-_=+)"),
        "secret_key",
        _ex(
            ("settings.py", 'SECRET_KEY = "{v}"'),
        ),
    ),
)


def _names(ident: str) -> tuple[str, str, str]:
    """snake, UPPER and camelCase forms of an identifier."""
    words = ident.split("_")
    return ident, ident.upper(), words[0] + "".join(w.title() for w in words[1:])


def _one_line(r: Callable[[str, str, str, str], str]) -> Callable[[str, str, str, str], str | None]:
    return lambda s, u, c, v: None if "\n" in v else r(s, u, c, v)


def _indent(v: str, pad: str) -> str:
    return "\n".join(pad + line for line in v.splitlines())


Renderer = Callable[[str, str, str, str], "str | None"]

#: set 2: (syntax, file name, render(snake, UPPER, camel, value) -> text or None if it cannot hold it)
SYNTAXES: tuple[tuple[str, str, Renderer], ...] = (
    (
        "python",
        "settings.py",
        lambda s, u, c, v: (
            f'{u} = """{v}"""\n'
            if "\n" in v
            else f'import os\n\n{u} = "{v}"\nclient = Client({s}={u})\n'
        ),
    ),
    (
        "python-dict",
        "config.py",
        _one_line(lambda s, u, c, v: f'CONFIG = {{\n    "{s}": "{v}",\n    "timeout": 30,\n}}\n'),
    ),
    (
        "dotenv",
        ".env",
        lambda s, u, c, v: (
            f"# service\n{u}={json.dumps(v) if chr(10) in v else v}\nLOG_LEVEL=info\n"
        ),
    ),
    (
        "yaml",
        "config.yaml",
        lambda s, u, c, v: (
            f"service:\n  name: trainer\n  {s}: |\n{_indent(v, '    ')}\n"
            if "\n" in v
            else f"service:\n  name: trainer\n  {s}: {v}\n"
        ),
    ),
    (
        "json",
        "config.json",
        lambda s, u, c, v: json.dumps({"service": {"name": "trainer", c: v}}, indent=2) + "\n",
    ),
    (
        "toml",
        "pipeline.toml",
        lambda s, u, c, v: (
            f"[service]\nname = \"trainer\"\n{s} = '''\n{v}'''\n"
            if "\n" in v
            else f'[service]\nname = "trainer"\n{s} = "{v}"\n'
        ),
    ),
    (
        "go",
        "main.go",
        _one_line(
            lambda s, u, c, v: f'package main\n\nfunc main() {{\n\t{c} := "{v}"\n\trun({c})\n}}\n'
        ),
    ),
    ("go-backtick", "config.go", lambda s, u, c, v: f"package config\n\nconst {c} = `{v}`\n"),
    (
        "shell-export",
        "env.sh",
        lambda s, u, c, v: f'#!/bin/sh\nexport {u}="{v}"\npython train.py\n',
    ),
    (
        "php",
        "config.php",
        _one_line(
            lambda s, u, c, v: f"<?php\n$config['{s}'] = '{v}';\ndefine('APP_ENV', 'prod');\n"
        ),
    ),
    (
        "xml",
        "settings.xml",
        lambda s, u, c, v: f'<?xml version="1.0"?>\n<settings>\n  <{c}>{v}</{c}>\n</settings>\n',
    ),
    (
        "xml-attribute",
        "app.config",
        _one_line(
            lambda s, u, c, v: (
                f'<configuration>\n  <appSettings>\n    <add key="{u}" value="{v}" />\n  </appSettings>\n</configuration>\n'
            )
        ),
    ),
    (
        "makefile",
        "Makefile",
        _one_line(lambda s, u, c, v: f"{u} ?= {v}\n\ntrain:\n\tpython train.py --key $({u})\n"),
    ),
    (
        "dockerfile",
        "Dockerfile",
        _one_line(
            lambda s, u, c, v: f'FROM python:3.11-slim\nENV {u}={v}\nCMD ["python", "serve.py"]\n'
        ),
    ),
    (
        "properties",
        "application.properties",
        _one_line(lambda s, u, c, v: f"app.name=trainer\n{s.replace('_', '.')}={v}\n"),
    ),
    (
        "curl-header",
        "call.sh",
        _one_line(
            lambda s, u, c, v: (
                f'curl -sS https://api.example.com/v1/me \\\n  -H "Authorization: Bearer {v}"\n'
            )
        ),
    ),
    (
        "notebook-output",
        "print.ipynb",
        lambda s, u, c, v: _notebook_text([_code(f"!env | grep {u}", [_stream(f"{u}={v}\n")])], {})[
            0
        ],
    ),
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


def _notebook_text(
    cells: list[dict[str, Any]], meta: dict[str, Any]
) -> tuple[str, list[tuple[int, int]], tuple[int, int]]:
    """The notebook as JSON text, each cell's line range and the metadata block's (1-based)."""
    lines = ["{", ' "cells": [']
    ranges = []
    for i, cell in enumerate(cells):
        body = ["  " + line for line in json.dumps(cell, indent=1).splitlines()]
        if i < len(cells) - 1:
            body[-1] += ","
        ranges.append((len(lines) + 1, len(lines) + len(body)))
        lines += body
    lines.append(" ],")
    meta_doc = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        **meta,
    }
    body = json.dumps(meta_doc, indent=1).splitlines()
    body = [" " + line for line in body]
    body[0] = ' "metadata": ' + body[0].lstrip()
    body[-1] += ","
    meta_range = (len(lines) + 1, len(lines) + len(body))
    lines += body
    lines += [' "nbformat": 4,', ' "nbformat_minor": 5', "}"]
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
    place: str, prov: Provider, value: str, g: _Gen
) -> tuple[str, int | None, list[tuple[int, int]], tuple[int, int]]:
    """(text, 1-based cell holding the value or None for notebook metadata, cell and metadata lines)."""
    s, u, _ = _names(prov.ident)
    cells = [
        {
            "cell_type": "markdown",
            "metadata": {},
            "source": ["# Training run\n", "Loads features and fits the model.\n"],
        },
        _code(
            "import os\nimport pandas as pd\n\ndf = pd.read_parquet('features.parquet')\ndf.shape",
            [
                {
                    "data": {"text/plain": ["(1200, 18)"]},
                    "execution_count": 2,
                    "metadata": {},
                    "output_type": "execute_result",
                }
            ],
        ),
    ]
    meta: dict[str, Any] = {}
    holder = len(cells) + 1
    if place == "code source":
        cells.append(_code(f'{s} = "{value}"\nclient = connect({s}={s})'))
    elif place == "stream output":
        cells.append(
            _code(
                "print(os.environ)",
                [_stream(f"environ({{'HOME': '/home/jovyan', '{u}': '{value}'}})\n")],
            )
        )
    elif place == "execute_result":
        cells.append(
            _code(
                f"os.environ['{u}']",
                [
                    {
                        "data": {"text/plain": [repr(value)]},
                        "execution_count": 4,
                        "metadata": {},
                        "output_type": "execute_result",
                    }
                ],
            )
        )
    elif place == "display_data html":
        cells.append(
            _code(
                "show_settings()",
                [
                    {
                        "data": {
                            "text/html": [f"<table><tr><td>{s}</td><td>{value}</td></tr></table>"],
                            "text/plain": ["<Settings>"],
                        },
                        "metadata": {},
                        "output_type": "display_data",
                    }
                ],
            )
        )
    elif place == "error traceback":
        err = f"AuthenticationError: invalid credentials for {s}={value!r}"
        cells.append(
            _code(
                "client.models.list()",
                [
                    {
                        "ename": "AuthenticationError",
                        "evalue": err,
                        "output_type": "error",
                        "traceback": [
                            "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
                            "\x1b[0;31mAuthenticationError\x1b[0m                       Traceback (most recent call last)",
                            f"\x1b[0;31mAuthenticationError\x1b[0m: {err}",
                        ],
                    }
                ],
            )
        )
    elif place == "notebook metadata":
        meta = {
            "papermill": {
                "parameters": {s: value, "epochs": 10},
                "input_path": "train.ipynb",
                "output_path": "out/train.ipynb",
            }
        }
        holder = 0
    else:  # cell metadata: the parameters cell papermill injects, tagged, holding its values
        cells.append(
            _code(
                "# Parameters\nepochs = 10\n",
                meta={"tags": ["injected-parameters"], "papermill": {"parameters": {s: value}}},
            )
        )
    cells.append(
        _code(
            "model.fit(df)\nmodel.score(df)",
            [
                {
                    "data": {"text/plain": [f"0.9{g.rng.randint(10, 99)}"]},
                    "execution_count": 6,
                    "metadata": {},
                    "output_type": "execute_result",
                }
            ],
        )
    )
    text, ranges, meta_range = _notebook_text(cells, meta)
    return text, (holder or None), ranges, meta_range


# -- negatives -------------------------------------------------------------------------------


def _negatives(g: _Gen) -> Iterator[tuple[str, str, str]]:
    """(kind, file name, text): what the peers' negative examples look like, in realistic files."""
    for prov in PROVIDERS:
        s, u, _ = _names(prov.ident)
        real = prov.make(g)
        if prov.multiline:
            head, tail = real.splitlines()[0], real.splitlines()[-1]
            yield (
                "placeholder",
                f"{prov.name}.md",
                f"Paste your key between the markers:\n\n```\n{head}\n...\n{tail}\n```\n",
            )
            continue
        cut = max(4, min(len(real) // 3, 12))
        prefix = real[: min(cut, 8)]
        yield "placeholder", f"{prov.name}.env.example", f"{u}=<your-{s.replace('_', '-')}>\n"
        yield "redacted", f"{prov.name}.log", f"INFO using {s}={real[:4]}{'*' * 16}\n"
        yield (
            "placeholder",
            f"{prov.name}.py",
            f'{u} = "{prefix}{"x" * max(len(real) - len(prefix), 8)}"  # replace me\n',
        )
        yield "env-lookup", f"{prov.name}_env.py", f'{s} = os.environ["{u}"]\n'
    for i in range(15):
        yield "hash", f"hash{i}.py", f'SHA256 = "{g.hex(64)}"\nMODEL_MD5 = "{g.hex(32)}"\n'
        yield "commit", f"commit{i}.yaml", f"revision: {g.hex(40)}\nrepo: acme/models\n"
        yield (
            "uuid",
            f"uuid{i}.json",
            json.dumps({"run_id": g.uuid(), "experiment_id": g.uuid()}, indent=1) + "\n",
        )
        yield (
            "integrity",
            f"lock{i}.json",
            json.dumps({"integrity": "sha512-" + g.b64(g.bytes(64))}) + "\n",
        )
    tests = (
        "test",
        "changeme",
        "password",
        "secret",
        "example",
        "dummy",
        "<password>",
        "${DB_PASSWORD}",
        "{{ password }}",
        "********",
    )
    for i, t in enumerate(tests):
        yield (
            "test-value",
            f"test_value{i}.py",
            f'def test_login():\n    assert login("user", password="{t}")\n',
        )
    for i, ref in enumerate(
        (
            "vault://secret/llm/openai#api_key",
            "{{ var.value.openai_key }}",
            "${{ secrets.HF_TOKEN }}",
            "env:OPENAI_API_KEY",
            "$(cat /run/secrets/db)",
        )
    ):
        yield "reference", f"reference{i}.yaml", f"api_key: {ref}\n"
    docs = (
        _p("AKIA", "IOSFODNN7", "EXAMPLE"),
        _p("wJalrXUtnFEMI/K7MDENG/", "bPxRfiCY", "EXAMPLEKEY"),
        "postgresql://user:password@localhost:5432/db",
        "postgresql://user:${DB_PASSWORD}@localhost/db",
        "https://user:pass@example.com/",
        _p("sk-", "proj-", "...."),
        _p("xo", "xb-", "your-bot-token"),
        _p("gh", "p_", "YOUR_TOKEN_HERE"),
    )
    for i, d in enumerate(docs):
        yield "docs-example", f"README{i}.md", f"Set it up like this:\n\n    export TOKEN={d}\n"


# -- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    set: str  # "set1", "set2", "negative", "notebook"
    group: str  # provider name (negatives: their kind)
    path: str  # relative to the corpus root
    syntax: str = ""
    #: 1-based line range of the value in the file (empty for negatives)
    span: tuple[int, int] = (0, 0)
    #: the value and other forms a scanner may report for it (never printed)
    values: tuple[str, ...] = field(default=(), repr=False)
    #: notebooks: the cell holding the value (1-based), None for notebook metadata
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
    first = text.count("\n", 0, start) + 1
    return first, text.count("\n", 0, max(end, start)) + 1


def _sa_json(g: _Gen, key: str) -> str:
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


def build(
    root: Path, *, seed: int | None = None, notebooks: int = 50, set2_every: int = 1
) -> Corpus:
    """Write the corpus under ``root`` (empty or missing) and return its labelled samples.

    ``set2_every`` > 1 keeps every n-th syntax per provider (``--quick``), rotating so every
    syntax still appears.
    """
    seed = secrets.randbits(32) if seed is None else seed
    g = _Gen(random.Random(seed))
    out: list[Sample] = []
    seen_names: set[str] = set()

    def put(
        kind: str,
        group: str,
        name: str,
        text: str,
        value: str | None,
        syntax: str = "",
        **extra: Any,
    ) -> None:
        folder = f"{kind}/{group}" + (f"/{syntax.replace(' ', '-')}" if syntax else "")
        rel = f"{folder}/{name}"
        assert rel not in seen_names, rel
        seen_names.add(rel)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if value is None:
            out.append(Sample(kind, group, rel, syntax))
            return
        prov = next((p for p in PROVIDERS if p.name == group), None)
        values = (value, *(prov.decoded(value) if prov else ()))
        out.append(Sample(kind, group, rel, syntax, _span(text, value), values, **extra))

    for prov in PROVIDERS:
        for i, (name, template) in enumerate(prov.examples):
            v = prov.make(g)
            text = _sa_json(g, v) if template == "@sa" else template.format(v=v) + "\n"
            put("set1", prov.name, f"{i}/{name}", text, v.strip() if template == "@sa" else v)
    for pi, prov in enumerate(PROVIDERS):
        s, u, c = _names(prov.ident)
        for si, (syntax, name, render) in enumerate(SYNTAXES):
            if (si + pi) % set2_every:
                continue
            v = prov.make(g)
            text = render(s, u, c, v.rstrip("\n"))
            if text is not None:
                put("set2", prov.name, name, text, v.rstrip("\n"), syntax)
    for i, (kind, name, text) in enumerate(_negatives(g)):
        put("negative", kind, f"{i}/{name}", text, None)
    single = [p for p in PROVIDERS if not p.multiline]
    offset = g.rng.randrange(len(single))
    for i in range(notebooks):
        place = NOTEBOOK_PLACES[i % len(NOTEBOOK_PLACES)]
        prov = single[(offset + i) % len(single)]
        v = prov.make(g)
        text, cell, ranges, meta_range = _notebook_sample(place, prov, v, g)
        put(
            "notebook",
            prov.name,
            f"{i:02d}-{place.replace(' ', '-')}.ipynb",
            text,
            v,
            place,
            cell=cell,
            cell_lines=tuple(ranges),
            meta_lines=meta_range,
        )
    return Corpus(root, seed, out)
