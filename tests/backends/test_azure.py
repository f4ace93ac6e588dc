"""The azure-kv store: the real Azure SDK against a local HTTPS fake of the Key Vault REST API.

No Key Vault emulator is installable here, so ``azure-keyvault-secrets`` (unmodified, with its
bearer-challenge auth policy and the requests transport) talks over TLS, verified against a test
CA from ``trustme``, to ``tests.servers.azure_kv.FakeKeyVault`` on loopback. The fake records
every request with its arrival time, so the tests count store reads and measure retry spacing
from the server's side.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from leaseline import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    InvalidReference,
    Resolver,
    SecretNotFound,
    parse,
)
from leaseline._config import Config
from leaseline.backends import BackendContext
from leaseline.backends.azure import KeyVaultBackend, fields_of, retry_after_seconds

from tests.canary import CanaryFixture, CanaryRegistry
from tests.servers.azure_kv import FakeKeyVault

VAULT = "testvault"
TOKEN_VAR = "AZURE_TEST_TOKEN"


@pytest.fixture(scope="module")
def fake_kv(
    tmp_path_factory: pytest.TempPathFactory, canary_registry: CanaryRegistry
) -> Iterator[FakeKeyVault]:
    server = FakeKeyVault.start(
        tmp_path_factory.mktemp("fake-kv"), token=canary_registry.new("kvtoken")
    )
    yield server
    server.stop()


@pytest.fixture
def kv(fake_kv: FakeKeyVault, monkeypatch: pytest.MonkeyPatch) -> FakeKeyVault:
    """The fake, with the static token the stores use in the environment."""
    monkeypatch.setenv(TOKEN_VAR, fake_kv.token)
    for name in (
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_AUTHORITY_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    return fake_kv


def store_options(kv: FakeKeyVault, **extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "type": "azure-kv",
        "url_template": kv.url_template(),
        "credential": "static-token",
        "token": f"env://{TOKEN_VAR}",
        "verify": str(kv.ca_bundle),
        # The fake's challenge names https://vault.azure.net, not 127.0.0.1.
        "verify_challenge_resource": False,
    }
    options.update(extra)
    return {k: v for k, v in options.items() if v is not None}


def kv_resolver(
    kv: FakeKeyVault, *, resolver: dict[str, Any] | None = None, **extra: Any
) -> Resolver:
    config = Config.from_mapping(
        {"stores": {"kv": store_options(kv, **extra)}, "resolver": resolver or {}}
    )
    return Resolver(config, rng=lambda: 0.0)


def backend(kv: FakeKeyVault, **extra: Any) -> KeyVaultBackend:
    """A backend used directly (no resolver retries), resolving its token from the environment."""
    import os

    options = store_options(kv, **extra)
    options.pop("type")
    context = BackendContext(clock=time.time, resolve=lambda ref: os.environ[ref.split("://")[1]])
    return KeyVaultBackend("kv", options, context)


def new_name() -> str:
    return "s-" + secrets.token_hex(6)


def putter(kv: FakeKeyVault) -> Callable[..., str]:
    def put(fields: dict[str, str], ref: str | None = None) -> str:
        name = ref.rsplit("/", 1)[1] if ref else new_name()
        value = fields["value"] if set(fields) == {"value"} else json.dumps(fields)
        kv.set_secret(VAULT, name, value)
        return f"kv://{VAULT}/{name}"

    return put


# -- reads ----------------------------------------------------------------------------------------


def test_sixty_four_threads_one_cold_secret_make_one_get(
    kv: FakeKeyVault, canary: CanaryFixture
) -> None:
    name, value = new_name(), canary.new("kv64")
    kv.set_secret(VAULT, name, value)
    ref = f"kv://{VAULT}/{name}"
    barrier = threading.Barrier(64)
    results: list[str] = []
    errors: list[BaseException] = []
    with kv_resolver(kv) as resolver:

        def worker() -> None:
            barrier.wait()
            try:
                results.append(resolver.resolve(ref))
            except BaseException as exc:  # asserted below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(results) == 64 and all(r == value for r in results)
        # Counted by the server: one authorized GET for 64 readers (plus, at most, the bearer
        # challenge, which carries no token and reads nothing).
        assert [r.status for r in kv.reads(VAULT, name)] == [200]
        assert resolver.requests[f"kv://{VAULT}/{name}"] == 1


def test_json_secret_fields_and_plain_value(kv: FakeKeyVault, canary: CanaryFixture) -> None:
    user, password, plain = canary.new("u"), canary.new("p"), canary.new("plain")
    doc, raw = new_name(), new_name()
    kv.set_secret(
        VAULT,
        doc,
        json.dumps({"username": user, "password": password, "port": 5432}),
        content_type="application/json",
    )
    kv.set_secret(VAULT, raw, plain)
    with kv_resolver(kv) as resolver:
        assert resolver.resolve(f"kv://{VAULT}/{doc}#password") == password
        assert resolver.resolve(f"kv://{VAULT}/{doc}#username") == user
        assert resolver.resolve(f"kv://{VAULT}/{doc}#port") == "5432"
        assert resolver.get(f"kv://{VAULT}/{doc}").fields == ["password", "port", "username"]
        assert resolver.resolve(f"kv://{VAULT}/{raw}") == plain
        assert len(kv.reads(VAULT, doc)) == 1


def test_version_pinning(kv: FakeKeyVault, canary: CanaryFixture) -> None:
    name, old, new = new_name(), canary.new("old"), canary.new("new")
    first = kv.set_secret(VAULT, name, old)
    second = kv.set_secret(VAULT, name, new)
    with kv_resolver(kv) as resolver:
        assert resolver.resolve(f"kv://{VAULT}/{name}?version={first}") == old
        assert resolver.resolve(f"kv://{VAULT}/{name}") == new
        assert resolver.get(f"kv://{VAULT}/{name}").version == second
        with pytest.raises(SecretNotFound) as info:
            resolver.resolve(f"kv://{VAULT}/{name}?version={'0' * 32}")
        assert "0" * 32 in str(info.value) and VAULT in str(info.value)


def test_vault_url_store_takes_bare_names(kv: FakeKeyVault, canary: CanaryFixture) -> None:
    name, value = new_name(), canary.new("fixed")
    kv.set_secret(VAULT, name, value)
    options: dict[str, Any] = {"vault_url": f"{kv.url}/{VAULT}", "url_template": None}
    with kv_resolver(kv, **options) as resolver:
        assert resolver.resolve(f"kv://{name}") == value
        with pytest.raises(InvalidReference, match=r"kv://NAME"):
            resolver.resolve(f"kv://{VAULT}/{name}")


def test_metadata_for_rotation(kv: FakeKeyVault, canary: CanaryFixture) -> None:
    name = new_name()
    created = time.time() - 86400 * 40
    expires = time.time() + 86400 * 50
    kv.set_secret(VAULT, name, canary.new("m1"), created=created)
    latest = kv.set_secret(VAULT, name, canary.new("m2"), created=created, expires=expires)
    with kv_resolver(kv) as resolver:
        meta = resolver.metadata(f"kv://{VAULT}/{name}")
    assert meta.ref == f"kv://{VAULT}/{name}"
    assert meta.version == latest
    assert meta.created_at == pytest.approx(int(created))
    assert meta.updated_at is not None and abs(meta.updated_at - time.time()) < 120
    assert meta.expires_at == pytest.approx(int(expires))
    assert meta.extra["vault"] == VAULT and meta.extra["enabled"] is True
    assert meta.extra["expires_on"] and meta.extra["updated_on"] and meta.extra["created_on"]


# -- faults ---------------------------------------------------------------------------------------


def test_429_retry_after_is_honoured(kv: FakeKeyVault, canary: CanaryFixture) -> None:
    name, value = new_name(), canary.new("throttled")
    kv.set_secret(VAULT, name, value)
    kv.throttle(1, retry_after=1.5)
    # rng=0: the resolver's own backoff jitter is zero, so any wait comes from Retry-After.
    with kv_resolver(kv) as resolver:
        assert resolver.resolve(f"kv://{VAULT}/{name}") == value
    reads = kv.reads(VAULT, name)
    assert [r.status for r in reads] == [429, 200]
    assert reads[1].at - reads[0].at >= 1.5  # timestamps taken by the fake server


def test_429_surfaces_retry_after_and_deadline_is_kept(kv: FakeKeyVault) -> None:
    name = new_name()
    kv.set_secret(VAULT, name, secrets.token_hex(8))
    kv.throttle(1, retry_after=7)
    kvb = backend(kv)
    try:
        with pytest.raises(BackendUnavailable) as info:
            kvb.read(parse(f"kv://{VAULT}/{name}"))
    finally:
        kvb.close()
    assert info.value.transient and info.value.retry_after == 7
    assert VAULT in str(info.value) and name in str(info.value) and "7s" in str(info.value)
    # A Retry-After beyond the resolver's deadline fails at once instead of sleeping past it.
    kv.throttle(1, retry_after=30)
    started = time.monotonic()
    with kv_resolver(kv, resolver={"deadline": "2s"}) as resolver:
        with pytest.raises(BackendUnavailable, match="gave up"):
            resolver.resolve(f"kv://{VAULT}/{name}")
    assert time.monotonic() - started < 5
    kv.throttle(0, retry_after=0)


def test_5xx_is_retried(kv: FakeKeyVault, canary: CanaryFixture) -> None:
    name, value = new_name(), canary.new("flaky")
    kv.set_secret(VAULT, name, value)
    kv.fail(2)
    with kv_resolver(kv) as resolver:
        assert resolver.resolve(f"kv://{VAULT}/{name}") == value
    assert [r.status for r in kv.reads(VAULT, name)] == [503, 503, 200]


def test_403_is_access_denied_naming_vault_and_secret(kv: FakeKeyVault) -> None:
    name = new_name()
    kv.set_secret(VAULT, name, secrets.token_hex(8))
    kv.deny(VAULT, name)
    with kv_resolver(kv) as resolver, pytest.raises(AccessDenied) as info:
        resolver.resolve(f"kv://{VAULT}/{name}")
    message = str(info.value)
    assert f"Key Vault '{VAULT}'" in message and f"secret '{name}'" in message
    assert "Key Vault Secrets User" in message  # says the fix
    assert info.value.exit_code == 4 and isinstance(info.value, PermissionError)
    # one re-authentication, then the denial stands
    assert [r.status for r in kv.reads(VAULT, name)] == [403, 403]


def test_disabled_secret_is_denied(kv: FakeKeyVault) -> None:
    name = new_name()
    kv.set_secret(VAULT, name, secrets.token_hex(8), enabled=False)
    with kv_resolver(kv) as resolver, pytest.raises(AccessDenied, match="disabled"):
        resolver.resolve(f"kv://{VAULT}/{name}")


def test_missing_secret(kv: FakeKeyVault) -> None:
    name = "absent-" + secrets.token_hex(4)
    with kv_resolver(kv) as resolver, pytest.raises(SecretNotFound) as info:
        resolver.resolve(f"kv://{VAULT}/{name}")
    assert f"secret '{name}' in Key Vault '{VAULT}'" in str(info.value)


def test_wrong_token_is_access_denied(kv: FakeKeyVault, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = secrets.token_urlsafe(24)
    monkeypatch.setenv(TOKEN_VAR, wrong)
    name = new_name()
    kv.set_secret(VAULT, name, secrets.token_hex(8))
    with kv_resolver(kv) as resolver, pytest.raises(AccessDenied) as info:
        resolver.resolve(f"kv://{VAULT}/{name}")
    assert VAULT in str(info.value) and wrong not in str(info.value)
    assert not kv.reads(VAULT, name)


def test_missing_token_reference_is_access_denied(
    kv: FakeKeyVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_VAR)
    with kv_resolver(kv) as resolver, pytest.raises(AccessDenied) as info:
        resolver.resolve(f"kv://{VAULT}/{new_name()}")
    assert f"env://{TOKEN_VAR}" in str(info.value)


def test_untrusted_certificate_names_the_fix(kv: FakeKeyVault) -> None:
    # Without the test CA the SDK verifies against the system store and must refuse the fake.
    with kv_resolver(kv, verify=True) as resolver, pytest.raises(BackendUnavailable) as info:
        resolver.resolve(f"kv://{VAULT}/{new_name()}")
    assert "not trusted" in str(info.value) and "verify" in str(info.value)
    assert not info.value.transient


def test_unreachable_vault_is_unavailable(kv: FakeKeyVault) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with kv_resolver(
        kv, url_template=f"https://127.0.0.1:{port}/{{vault}}", resolver={"deadline": "1s"}
    ) as resolver:
        with pytest.raises(BackendUnavailable, match="cannot reach Key Vault"):
            resolver.resolve(f"kv://{VAULT}/{new_name()}")


def test_challenge_resource_is_verified_by_default(kv: FakeKeyVault) -> None:
    with kv_resolver(kv, verify_challenge_resource=True) as resolver:
        with pytest.raises(ConfigError, match="verify_challenge_resource = false"):
            resolver.resolve(f"kv://{VAULT}/{new_name()}")


# -- configuration and references (no server) -----------------------------------------------------


def _context() -> BackendContext:
    return BackendContext(clock=time.time, resolve=lambda ref: "unused")


def test_vault_name_maps_to_public_cloud_url() -> None:
    kvb = KeyVaultBackend("azure-kv", {}, _context())
    assert kvb._target(parse("azure-kv://my-vault/openai-key?version=abc123")) == (
        "my-vault",
        "https://my-vault.vault.azure.net",
        "openai-key",
        "abc123",
    )
    sovereign = KeyVaultBackend(
        "cn", {"url_template": "https://{vault}.vault.azure.cn"}, _context()
    )
    assert sovereign._target(parse("cn://ml-keys/hf-token"))[1] == "https://ml-keys.vault.azure.cn"


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("azure-kv://only-name", "VAULT/NAME"),
        ("azure-kv://v1/a/b", "VAULT/NAME"),
        ("azure-kv://x/name", "not a vault name"),
        ("azure-kv://my-vault/bad_name", "not a Key Vault secret name"),
        ("azure-kv://my-vault/name?stage=prev", "unknown option"),
        ("azure-kv://my-vault/name?version=a.b", "version"),
    ],
)
def test_bad_references(ref: str, why: str) -> None:
    kvb = KeyVaultBackend("azure-kv", {}, _context())
    with pytest.raises(InvalidReference, match=why):
        kvb._target(parse(ref))


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"verify": False}, "cannot be turned off"),
        ({"url_template": "http://{vault}.example"}, "https"),
        ({"url_template": "https://fixed.example"}, "must contain"),
        (
            {"vault_url": "https://a.vault.azure.net", "url_template": "https://{vault}.x"},
            "not both",
        ),
        ({"credential": "password"}, "unknown credential"),
        ({"credential": "static-token"}, "needs token"),
        ({"credential": "static-token", "token": "RUNTIME-TOKEN"}, "must be a reference"),
        ({"token": "env://X"}, "only used with"),
        ({"colour": "blue"}, "unknown option"),
        ({"verify_challenge_resource": "no"}, "true or false"),
    ],
)
def test_bad_store_options(options: dict[str, Any], why: str) -> None:
    if options.get("token") == "RUNTIME-TOKEN":  # a bearer token pasted in place of a reference
        options = {
            **options,
            "token": "eyJ" + secrets.token_urlsafe(30) + "." + secrets.token_urlsafe(40),
        }
    with pytest.raises(ConfigError, match=why) as info:
        KeyVaultBackend("kv", options, _context())
    token = str(options.get("token", ""))
    if token.startswith("eyJ"):
        assert token not in str(info.value)


def test_fields_of() -> None:
    assert fields_of('{"a": "1", "b": {"c": 2}}') == {"a": "1", "b": '{"c": 2}'}
    assert fields_of("{not json") == {"value": "{not json"}
    assert fields_of("{}") == {"value": "{}"}
    assert fields_of("plain") == {"value": "plain"}


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert (
        retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470) == 10
    )
    assert retry_after_seconds({}) is None


def test_registry_points_here() -> None:
    from leaseline._registry import backend_class

    assert backend_class("azure-kv") is KeyVaultBackend


@pytest.mark.parametrize(
    ("kind", "cls_name"),
    [
        ("default", "DefaultAzureCredential"),
        ("environment", "EnvironmentCredential"),
        ("workload-identity", "WorkloadIdentityCredential"),
        ("managed-identity", "ManagedIdentityCredential"),
        ("azure-cli", "AzureCliCredential"),
    ],
)
def test_credential_strategies_build_azure_identity_credentials(
    kind: str, cls_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # Building a credential is offline; nothing here asks Entra ID for a token.
    token_file = tmp_path / "federated-token"
    token_file.write_text("not-a-real-assertion")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002")
    kvb = KeyVaultBackend(
        "kv", {"credential": kind, "client_id": "00000000-0000-0000-0000-000000000003"}, _context()
    )
    credential = kvb._make_credential()
    try:
        assert type(credential).__name__ == cls_name
    finally:
        credential.close()
