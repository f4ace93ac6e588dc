"""The ``env`` store: ``env://NAME`` reads a variable of this process's environment."""

from __future__ import annotations

import secrets
import time

import pytest
from leaseline import ConfigError, Resolver, SecretNotFound, parse
from leaseline._config import Config
from leaseline.backends import Backend, BackendContext
from leaseline.backends.env import EnvBackend
from leaseline.testing import StoreUnderTest  # noqa: F401  (the suite: test_conformance.py)

from tests.canary import CanaryFixture


def env_store(**options: str) -> EnvBackend:
    return EnvBackend("env", options, BackendContext(clock=time.time, resolve=lambda ref: ref))


def name() -> str:
    return f"LEASELINE_TEST_ENV_{secrets.token_hex(4).upper()}"


def test_reads_a_variable_as_its_one_field(
    monkeypatch: pytest.MonkeyPatch, canary: CanaryFixture
) -> None:
    var, value = name(), canary.new("env")
    monkeypatch.setenv(var, value)
    backend = env_store()
    assert isinstance(backend, Backend)
    result = backend.read(parse(f"env://{var}"))
    assert dict(result.fields) == {"value": value} and result.lease is None
    # env:///NAME names the same variable
    assert backend.read(parse(f"env:///{var}")).fields["value"] == value


def test_an_empty_variable_is_a_value_and_an_unset_one_is_not_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    var = name()
    monkeypatch.setenv(var, "")
    assert env_store().read(parse(f"env://{var}")).fields == {"value": ""}
    monkeypatch.delenv(var)
    with pytest.raises(SecretNotFound) as info:
        env_store().read(parse(f"env://{var}"))
    assert str(info.value) == f"environment variable {var} is not set (reference env://{var})"
    assert isinstance(info.value, KeyError)


def test_prefix_is_prepended_and_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, canary: CanaryFixture
) -> None:
    value = canary.new("envp")
    monkeypatch.setenv("APP_PROD_OPENAI", value)
    monkeypatch.setenv("OPENAI", "not-this-one")
    backend = env_store(prefix="APP_PROD_")
    assert backend.read(parse("env://OPENAI")).fields["value"] == value
    with pytest.raises(SecretNotFound, match="environment variable APP_PROD_NOPE is not set"):
        backend.read(parse("env://NOPE"))


def test_unknown_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"\[stores.env\]: unknown option\(s\) roots"):
        env_store(roots="/x")


def test_leases_and_metadata_are_trivial() -> None:
    from leaseline._secret import Lease

    backend = env_store()
    lease = Lease.starting(None, 60, now=0.0)
    assert backend.renew(lease) is lease
    backend.revoke(lease)  # nothing to revoke: no error
    meta = backend.metadata(parse("env://ANY"))
    assert meta.ref == "env://ANY" and meta.updated_at is None


def test_through_the_resolver_a_changed_variable_is_read_after_refresh_after(
    monkeypatch: pytest.MonkeyPatch, canary: CanaryFixture
) -> None:
    var, first, second = name(), canary.new("env1"), canary.new("env2")
    monkeypatch.setenv(var, first)
    now = [1000.0]
    resolver = Resolver(Config.from_mapping({}), clock=lambda: now[0], handle_signals=False)
    try:
        assert resolver.resolve(f"env://{var}") == first
        monkeypatch.setenv(var, second)
        assert resolver.resolve(f"env://{var}") == first  # cached: no read
        now[0] += EnvBackend.default_refresh_after + 1
        # past the refresh deadline: served while it is read again in the background
        seen = resolver.resolve(f"env://{var}")
        deadline = time.monotonic() + 30
        while seen != second and time.monotonic() < deadline:
            time.sleep(0.01)
            seen = resolver.resolve(f"env://{var}")
        assert seen == second
    finally:
        resolver.close()
