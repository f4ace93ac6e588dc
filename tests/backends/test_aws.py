"""AWS stores (aws-sm, aws-ssm, aws-sts) and ``leaseline.aws.session`` against moto's real server.

Every store request goes over HTTP to the ``moto_server`` fixture (DESIGN.md section 9). Access
control is switched on only inside ``iam_enforced()`` (moto's ``/moto-api/reset-auth``), where an
IAM user without policies stands in for a caller that may not read a secret.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import leaseline.aws
import pytest
from botocore.exceptions import ClientError
from leaseline import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    InvalidReference,
    Resolver,
    SecretNotFound,
)
from leaseline._config import Config, load_config
from leaseline.backends import Backend
from leaseline.backends.aws import AssumeRoleBackend, SecretsManagerBackend

from tests.servers import MotoServer
from tests.servers._util import free_port

ROLE_ARN = "arn:aws:iam::123456789012:role/train"
DENIED_PROFILE = "leaseline-denied"


# -- fixtures ------------------------------------------------------------------------------------


class FakeClock:
    """Wall-clock seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def make_resolver(aws_env: MotoServer) -> Iterator[Callable[..., Resolver]]:
    """Resolvers built from a config mapping, with AWS_* pointing at moto; closed afterwards."""
    made: list[Resolver] = []

    def make(
        stores: dict[str, Any] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        **resolver: Any,
    ) -> Resolver:
        config = Config.from_mapping({"stores": stores or {}, "resolver": resolver})
        r = Resolver(config, clock=clock, handle_signals=False)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def denied_profile(aws_env: MotoServer) -> str:
    """An AWS profile (in the test's credentials file) of an IAM user with no permissions."""
    iam = aws_env.client("iam")
    user = "nobody-" + secrets.token_hex(4)
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).write_text(
        f"[{DENIED_PROFILE}]\naws_access_key_id = {key['AccessKeyId']}\n"
        f"aws_secret_access_key = {key['SecretAccessKey']}\n"
    )
    return DENIED_PROFILE


def _moto_auth(server: MotoServer, count: str) -> None:
    request = urllib.request.Request(
        f"{server.endpoint}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


@contextmanager
def iam_enforced(server: MotoServer) -> Iterator[None]:
    """moto checks signatures and IAM policies for every request inside the block."""
    _moto_auth(server, "0")
    try:
        yield
    finally:
        _moto_auth(server, "inf")


def unique(prefix: str) -> str:
    return f"{prefix}/{secrets.token_hex(6)}"


# -- Secrets Manager -----------------------------------------------------------------------------


def test_json_secret_keys_are_fields(aws_env: MotoServer, make_resolver, canary) -> None:
    api_key, org = canary.new(), canary.new()
    name = unique("prod/openai")
    body = {"api_key": api_key, "org": org, "limits": {"rpm": 60}, "retries": 3}
    aws_env.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(body))
    r = make_resolver()

    assert r.resolve(f"aws-sm://{name}#api_key") == api_key
    assert r.resolve(f"aws-sm://{name}#org") == org
    assert json.loads(r.resolve(f"aws-sm://{name}#limits")) == {"rpm": 60}  # JSON-encoded
    assert r.resolve(f"aws-sm://{name}#retries") == "3"
    secret = r.get(f"aws-sm://{name}")
    assert secret.fields == ["api_key", "limits", "org", "retries"]
    assert r.requests[f"aws-sm://{name}"] == 1  # one GetSecretValue for every field
    described = aws_env.client("secretsmanager").describe_secret(SecretId=name)
    assert secret.version in described["VersionIdsToStages"]


def test_plain_string_and_binary_secrets(aws_env: MotoServer, make_resolver, canary) -> None:
    client = aws_env.client("secretsmanager")
    text, blob = canary.new(), canary.new().encode() + b"\x00\xff"
    plain, binary = unique("plain"), unique("binary")
    client.create_secret(Name=plain, SecretString=text)
    client.create_secret(Name=binary, SecretBinary=blob)
    r = make_resolver()

    assert r.resolve(f"aws-sm://{plain}") == text
    assert r.get(f"aws-sm://{plain}").fields == ["value"]
    assert base64.b64decode(r.resolve(f"aws-sm://{binary}#value")) == blob


def test_previous_version_stage_and_version_id(aws_env: MotoServer, make_resolver, canary) -> None:
    client = aws_env.client("secretsmanager")
    old, new = canary.new(), canary.new()
    name = unique("prod/openai")
    first = client.create_secret(Name=name, SecretString=json.dumps({"api_key": old}))
    client.put_secret_value(SecretId=name, SecretString=json.dumps({"api_key": new}))
    r = make_resolver()

    assert r.resolve(f"aws-sm://{name}#api_key") == new
    assert r.resolve(f"aws-sm://{name}?version-stage=AWSPREVIOUS#api_key") == old
    pinned = r.get(f"aws-sm://{name}?version-id={first['VersionId']}")
    assert pinned.reveal("api_key") == old
    assert pinned.version == first["VersionId"]


def test_secrets_manager_metadata(aws_env: MotoServer, make_resolver) -> None:
    client = aws_env.client("secretsmanager")
    name = unique("meta")
    client.create_secret(Name=name, SecretString="v1-" + secrets.token_hex(8))
    second = client.put_secret_value(SecretId=name, SecretString="v2-" + secrets.token_hex(8))
    described = client.describe_secret(SecretId=name)

    meta = make_resolver().metadata(f"aws-sm://{name}")
    assert meta.ref == f"aws-sm://{name}"
    assert meta.version == second["VersionId"]
    assert meta.created_at == described["CreatedDate"].timestamp()
    assert meta.updated_at is not None and meta.updated_at >= meta.created_at
    assert abs(meta.updated_at - time.time()) < 120
    assert meta.extra["arn"] == described["ARN"]


def test_missing_secret_names_reference_and_region(aws_env: MotoServer, make_resolver) -> None:
    name = unique("nope")
    with pytest.raises(SecretNotFound) as info:
        make_resolver().resolve(f"aws-sm://{name}#api_key")
    message = str(info.value)
    assert f"aws-sm://{name}" in message and aws_env.region in message
    assert isinstance(info.value.__cause__, ClientError)


def test_unknown_reference_option(make_resolver) -> None:
    with pytest.raises(InvalidReference, match="version-stage"):
        make_resolver().resolve("aws-sm://prod/openai?stage=AWSPREVIOUS")


# -- Parameter Store -----------------------------------------------------------------------------


def test_ssm_secure_string(aws_env: MotoServer, make_resolver, canary) -> None:
    client = aws_env.client("ssm")
    first, second = canary.new(), canary.new()
    name = "/ml/" + unique("openai")
    client.put_parameter(Name=name, Value=first, Type="SecureString")
    r = make_resolver()

    ref = f"aws-ssm://{name}"  # locator keeps the leading slash: aws-ssm:///ml/...
    assert ref.startswith("aws-ssm:///")
    secret = r.get(ref)
    assert secret.fields == ["value"] and secret.reveal() == first and secret.version == "1"

    client.put_parameter(Name=name, Value=second, Type="SecureString", Overwrite=True)
    r.invalidate(ref)
    assert r.resolve(ref) == second and r.get(ref).version == "2"
    assert r.resolve(f"{ref}?version=1") == first

    meta = r.metadata(ref)
    assert meta.version == "2" and meta.extra["type"] == "SecureString"
    assert meta.updated_at is not None and abs(meta.updated_at - time.time()) < 120


def test_ssm_missing_parameter(aws_env: MotoServer, make_resolver) -> None:
    ref = f"aws-ssm:///{unique('nope')}"
    with pytest.raises(SecretNotFound) as info:
        make_resolver().resolve(ref)
    assert ref in str(info.value) and aws_env.region in str(info.value)


# -- STS AssumeRole ------------------------------------------------------------------------------


def _capture_expiration(resolver: Resolver) -> list[float]:
    """Expirations exactly as AssumeRole returned them, read from botocore's own event hook."""
    seen: list[float] = []

    def hook(parsed: dict[str, Any], **_: Any) -> None:
        seen.append(parsed["Credentials"]["Expiration"].timestamp())

    backend = resolver.backend("aws-sts")
    assert isinstance(backend, AssumeRoleBackend)
    backend.client().meta.events.register("after-call.sts.AssumeRole", hook)
    return seen


def test_assume_role_lease_ends_at_expiration(aws_env: MotoServer, make_resolver) -> None:
    r = make_resolver()
    expirations = _capture_expiration(r)
    ref = f"aws-sts://{ROLE_ARN}?duration=900&session-name=train-42"
    before = time.time()
    secret = r.get(ref)

    assert secret.fields == ["access_key_id", "secret_access_key", "session_token"]
    lease = secret.lease
    assert lease is not None and lease.id is None and not lease.renewable
    assert expirations == [lease.expires_at]
    assert before + 890 <= lease.expires_at <= time.time() + 910
    assert r.metadata(ref).expires_at == lease.expires_at

    # the credentials are real for the server: they sign as the assumed role
    caller = boto3.client(
        "sts",
        endpoint_url=aws_env.endpoint,
        region_name=aws_env.region,
        aws_access_key_id=secret.reveal("access_key_id"),
        aws_secret_access_key=secret.reveal("secret_access_key"),
        aws_session_token=secret.reveal("session_token"),
    ).get_caller_identity()
    assert caller["Arn"].endswith("assumed-role/train/train-42")


def test_assume_role_reissued_ahead_of_expiry(aws_env: MotoServer, make_resolver) -> None:
    clock = FakeClock()
    r = make_resolver(clock=clock)
    ref = f"aws-sts://{ROLE_ARN}?duration=900"
    key = r.parse(ref).key
    first = r.get(ref)
    assert first.lease is not None
    old_key = first.reveal("access_key_id")

    # at ~2/3 of the TTL the cached credential is still served, and a fresh one is issued behind it
    clock.advance(0.7 * first.lease.ttl)
    assert r.get(ref) is first
    deadline = time.monotonic() + 10
    while r.requests[key] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert r.requests[key] == 2
    while r.get(ref) is first and time.monotonic() < deadline:
        time.sleep(0.02)
    second = r.get(ref)
    assert second.reveal("access_key_id") != old_key
    assert clock() < first.lease.expires_at  # re-issued before the old one ended


def test_assume_role_never_served_inside_the_margin(aws_env: MotoServer, make_resolver) -> None:
    clock = FakeClock()
    r = make_resolver(clock=clock)
    ref = f"aws-sts://{ROLE_ARN}?duration=900"
    first = r.get(ref)
    assert first.lease is not None
    clock.now = first.lease.expires_at - 5  # inside the 30 s safety margin: a blocking re-issue
    second = r.get(ref)
    assert second is not first
    assert second.reveal("access_key_id") != first.reveal("access_key_id")


def test_assume_role_options_and_config(aws_env: MotoServer, make_resolver) -> None:
    r = make_resolver(
        {"train-role": {"type": "aws-sts", "role_session_name": "nightly", "duration": "20m"}}
    )
    secret = r.get(f"train-role://{ROLE_ARN}?external-id=ext-1")
    assert secret.lease is not None and 1190 <= secret.lease.ttl <= 1200
    meta = r.metadata(f"train-role://{ROLE_ARN}?external-id=ext-1")
    assert str(meta.extra["assumed_role"]).endswith("/train/nightly")
    with pytest.raises(InvalidReference, match="duration"):
        r.resolve(f"train-role://{ROLE_ARN}?duration=soon")


# -- leaseline.aws.session -----------------------------------------------------------------------


def test_session_signs_as_the_assumed_role(aws_env: MotoServer, make_resolver) -> None:
    r = make_resolver()
    session = leaseline.aws.session(f"aws-sts://{ROLE_ARN}?session-name=etl", r)
    assert session.get_credentials().method == "leaseline"
    caller = session.client("sts").get_caller_identity()
    assert caller["Arn"].endswith("assumed-role/train/etl")
    s3 = session.client("s3")
    bucket = "leaseline-" + secrets.token_hex(6)
    s3.create_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_session_refreshes_before_expiry(aws_env: MotoServer, make_resolver) -> None:
    clock = FakeClock()
    r = make_resolver(clock=clock)
    ref = f"aws-sts://{ROLE_ARN}?duration=900"
    session = leaseline.aws.session(ref, r, clock=clock)
    creds = session.get_credentials()
    first = creds.get_frozen_credentials()
    lease = r.get(ref).lease
    assert lease is not None

    clock.advance(400)  # 500 s left: nothing to do yet
    assert creds.get_frozen_credentials().access_key == first.access_key

    clock.now = lease.expires_at - 200  # under a third left: the session takes fresh keys
    fresh = creds.get_frozen_credentials()
    assert fresh.access_key != first.access_key
    assert r.get(ref).reveal("access_key_id") == fresh.access_key
    caller = session.client("sts").get_caller_identity()
    assert caller["Arn"].endswith("assumed-role/train/" + caller["Arn"].rsplit("/", 1)[-1])


def test_session_from_a_static_secret(aws_env: MotoServer, make_resolver) -> None:
    """Any reference with AWS key fields works, e.g. keys kept in Secrets Manager."""
    name = unique("ci/aws-keys")
    body = {
        "access_key_id": aws_env.access_key_id,
        "secret_access_key": aws_env.secret_access_key,
    }
    aws_env.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(body))
    session = leaseline.aws.session(f"aws-sm://{name}", make_resolver())
    assert session.client("sts").get_caller_identity()["Account"]


def test_session_needs_key_fields(aws_env: MotoServer, make_resolver) -> None:
    name = unique("not-keys")
    aws_env.client("secretsmanager").create_secret(
        Name=name, SecretString=json.dumps({"token": secrets.token_hex(8)})
    )
    with pytest.raises(SecretNotFound, match="access_key_id"):
        leaseline.aws.session(f"aws-sm://{name}", make_resolver())


# -- faults and messages -------------------------------------------------------------------------


def test_unreachable_endpoint_is_unavailable_within_deadline(make_resolver) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = make_resolver({"down": {"type": "aws-sm", "endpoint_url": endpoint}}, deadline="1.5s")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        r.resolve("down://prod/openai#api_key")
    assert time.monotonic() - started < 1.5 + 3.0
    assert endpoint in str(info.value)
    assert info.value.transient and isinstance(info.value, ConnectionError)


def test_denied_names_the_action(
    aws_env: MotoServer, make_resolver, denied_profile: str, canary
) -> None:
    name = unique("prod/openai")
    value = canary.new()
    aws_env.client("secretsmanager").create_secret(Name=name, SecretString=value)
    r = make_resolver({"locked": {"type": "aws-sm", "profile": denied_profile}})
    with iam_enforced(aws_env), pytest.raises(AccessDenied) as info:
        r.resolve(f"locked://{name}")
    assert f"secretsmanager:GetSecretValue on {name}" in str(info.value)
    assert value not in str(info.value)


def test_unknown_access_key_is_denied(aws_env: MotoServer, make_resolver) -> None:
    r = make_resolver()
    with iam_enforced(aws_env), pytest.raises(AccessDenied) as info:
        r.resolve(f"aws-sts://{ROLE_ARN}")
    assert "sts:AssumeRole on " + ROLE_ARN in str(info.value)


def test_no_credentials_says_how_to_configure(
    aws_env: MotoServer, make_resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(AccessDenied) as info:
        make_resolver().resolve("aws-sm://prod/openai")
    assert "AWS_ACCESS_KEY_ID" in str(info.value) and "AWS_PROFILE" in str(info.value)


def test_no_message_or_log_contains_a_value(
    aws_env: MotoServer, make_resolver, canary, caplog: pytest.LogCaptureFixture
) -> None:
    """Canaries through every path; botocore's DEBUG response-body logging included."""
    value = canary.new()
    name = unique("prod/openai")
    aws_env.client("secretsmanager").create_secret(
        Name=name, SecretString=json.dumps({"api_key": value, "org": "org-1"})
    )
    param = "/" + unique("ml")
    aws_env.client("ssm").put_parameter(Name=param, Value=canary.new(), Type="SecureString")
    r = make_resolver()
    messages: list[str] = []
    with caplog.at_level(logging.DEBUG):
        assert r.resolve(f"aws-sm://{name}#api_key") == value
        r.resolve(f"aws-ssm://{param}")
        r.get(f"aws-sts://{ROLE_ARN}")
        for bad in (f"aws-sm://{name}#nope", f"aws-sm://{name}"):
            with pytest.raises(Exception) as info:
                r.resolve(bad)
            messages.append(str(info.value))
    assert "api_key" in messages[0]
    for text in messages:
        assert value not in text
    assert value not in caplog.text  # the canary plugin checks every encoding too
    assert "Response body" not in caplog.text


# -- config and construction ---------------------------------------------------------------------


def test_store_options_are_validated(aws_env: MotoServer) -> None:
    context_config = Config.from_mapping(
        {"stores": {"bad": {"type": "aws-sm", "regoin": "eu-west-1"}}}
    )
    r = Resolver(context_config, handle_signals=False)
    try:
        with pytest.raises(ConfigError, match=r"regoin.*known options: .*region"):
            r.resolve("bad://x")
        r2 = Resolver(
            Config.from_mapping({"stores": {"slow": {"type": "aws-ssm", "read_timeout": "soon"}}}),
            handle_signals=False,
        )
        with pytest.raises(ConfigError, match="read_timeout"):
            r2.resolve("slow:///x")
        r2.close()
    finally:
        r.close()


def test_store_config_reaches_the_client(aws_env: MotoServer, make_resolver) -> None:
    r = make_resolver(
        {
            "eu": {
                "type": "aws-sm",
                "region": "eu-west-1",
                "endpoint_url": aws_env.endpoint,
                "connect_timeout": "2s",
                "read_timeout": 3,
                "max_attempts": 2,
            }
        }
    )
    backend = r.backend("eu")
    assert isinstance(backend, SecretsManagerBackend) and isinstance(backend, Backend)
    client = backend.client()
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.endpoint_url == aws_env.endpoint
    assert client.meta.config.connect_timeout == 2 and client.meta.config.read_timeout == 3
    assert client.meta.config.retries["total_max_attempts"] == 2
    backend.reauthenticate()
    assert backend.client() is not client  # a fresh client re-reads the credential chain


def test_environment_config_form(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEASELINE_STORES__PROD_AWS__TYPE", "aws-ssm")
    monkeypatch.setenv("LEASELINE_STORES__PROD_AWS__REGION", "eu-central-1")
    r = Resolver(load_config(environ=dict(os.environ)), handle_signals=False)
    try:
        assert r.backend("prod-aws").client().meta.region_name == "eu-central-1"
    finally:
        r.close()


def test_translation_of_throttling_and_server_errors(aws_env: MotoServer, make_resolver) -> None:
    """AWS throttling cannot be provoked on moto: the mapping is checked on botocore's own error."""
    backend = make_resolver().backend("aws-sm")
    assert isinstance(backend, SecretsManagerBackend)
    client = backend.client()
    for code, status in (("ThrottlingException", 400), ("InternalServiceError", 500)):
        error = ClientError(
            {
                "Error": {"Code": code, "Message": "slow down"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "GetSecretValue",
        )
        translated = backend._translate(error, client, "secretsmanager:GetSecretValue", "x", "r")
        assert isinstance(translated, BackendUnavailable) and translated.transient
        assert aws_env.endpoint in str(translated)


def test_import_leaseline_does_not_import_boto3() -> None:
    code = (
        "import sys, leaseline, leaseline.aws; "
        "bad = [m for m in sys.modules if m.split('.')[0] in {'boto3', 'botocore'}]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_client_is_shared_across_threads(aws_env: MotoServer, make_resolver) -> None:
    backend = make_resolver().backend("aws-ssm")
    clients: list[Any] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        clients.append(backend.client())  # type: ignore[attr-defined]

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in clients}) == 1


def test_missing_region_is_a_config_error(
    aws_env: MotoServer, make_resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match="AWS_REGION"):
        make_resolver().resolve("aws-sm://prod/openai")


def test_aws_region_is_honoured_when_botocore_has_none(
    aws_env: MotoServer, make_resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    r = make_resolver()
    assert r.backend("aws-ssm").client().meta.region_name == "ap-southeast-2"
    session = leaseline.aws.session(f"aws-sts://{ROLE_ARN}", r)
    assert session.region_name == "ap-southeast-2"
