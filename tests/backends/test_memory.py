"""The ``memory`` store: per-process tables, static and dynamic secrets, leases, denials."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from leaseline import AccessDenied, ConfigError, LeaseExpired, SecretNotFound, parse
from leaseline.backends import Backend, BackendContext
from leaseline.backends.memory import MemoryBackend, random_fields

from tests.canary import CanaryFixture


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def name() -> Iterator[str]:
    store = f"mem-{secrets.token_hex(4)}"
    yield store
    MemoryBackend.reset(store)


def backend(name: str, clock: Clock, **options: str) -> MemoryBackend:
    return MemoryBackend(name, options, BackendContext(clock=clock, resolve=lambda ref: ref))


def ref(name: str, locator: str) -> object:
    return parse(f"{name}://{locator}")


def test_static_fields_versions_and_metadata(
    name: str, clock: Clock, canary: CanaryFixture
) -> None:
    value = canary.new("mem")
    MemoryBackend.put(name, "llm/openai", {"api_key": value}, now=5.0)
    b = backend(name, clock)
    assert isinstance(b, Backend)
    result = b.read(parse(f"{name}://llm/openai"))
    assert dict(result.fields) == {"api_key": value}
    assert result.lease is None and result.version == "1"
    MemoryBackend.put(name, "llm/openai", {"api_key": canary.new("mem2")}, now=9.0)
    assert b.read(parse(f"{name}://llm/openai")).version == "2"
    meta = b.metadata(parse(f"{name}://llm/openai"))
    assert (meta.ref, meta.updated_at, meta.version) == (f"{name}://llm/openai", 9.0, "2")
    assert MemoryBackend.reads(name) == 2


def test_missing_denied_and_deleted(name: str, clock: Clock) -> None:
    b = backend(name, clock)
    with pytest.raises(SecretNotFound, match=f"no secret at {name}://nope in memory store"):
        b.read(parse(f"{name}://nope"))
    with pytest.raises(SecretNotFound):
        b.metadata(parse(f"{name}://nope"))
    MemoryBackend.put(name, "locked", {"value": "v-" + secrets.token_hex(4)}, denied=True)
    with pytest.raises(AccessDenied, match=f"denies read on {name}://locked") as info:
        b.read(parse(f"{name}://locked"))
    assert isinstance(info.value, PermissionError) and "v-" not in str(info.value)
    MemoryBackend.put(name, "gone", {"value": "x"})
    MemoryBackend.delete(name, "gone")
    with pytest.raises(SecretNotFound):
        b.read(parse(f"{name}://gone"))


def test_stores_of_one_name_share_a_table_and_others_do_not(name: str, clock: Clock) -> None:
    MemoryBackend.put(name, "shared", {"value": "one"})
    assert backend(name, clock).read(parse(f"{name}://shared")).fields["value"] == "one"
    other = f"{name}-other"
    try:
        with pytest.raises(SecretNotFound):
            backend(other, clock).read(parse(f"{other}://shared"))
    finally:
        MemoryBackend.reset(other)


def test_renewable_leases_renew_up_to_max_ttl_and_revoke(name: str, clock: Clock) -> None:
    MemoryBackend.put(
        name, "db", {"username": "u", "password": "p"}, ttl=60, renewable=True, max_ttl=100
    )
    b = backend(name, clock)
    lease = b.read(parse(f"{name}://db")).lease
    assert lease is not None and lease.renewable and lease.id
    assert (lease.expires_at, lease.max_expires_at) == (1060.0, 1100.0)
    assert MemoryBackend.live_leases(name) == [lease.id]
    clock.now = 1050.0
    renewed = b.renew(lease)
    assert renewed.expires_at == 1100.0  # capped at max_ttl
    b.revoke(renewed)
    assert MemoryBackend.live_leases(name) == []
    with pytest.raises(LeaseExpired, match=f"is gone from memory store '{name}'"):
        b.renew(renewed)
    b.revoke(renewed)  # revoking a gone lease is not an error


def test_a_static_item_with_a_ttl_has_a_deadline_but_no_lease_id(name: str, clock: Clock) -> None:
    MemoryBackend.put(name, "kv", {"value": "v"}, ttl=30)
    lease = backend(name, clock).read(parse(f"{name}://kv")).lease
    assert lease is not None and lease.id is None and lease.expires_at == 1030.0
    assert MemoryBackend.live_leases(name) == []


def test_mint_issues_fresh_values_and_a_lease_per_read(name: str, clock: Clock) -> None:
    MemoryBackend.put(name, "creds", mint=random_fields("username", "password"), ttl=60)
    b = backend(name, clock)
    first, second = b.read(parse(f"{name}://creds")), b.read(parse(f"{name}://creds"))
    assert set(first.fields) == {"username", "password"}
    assert first.fields["password"] != second.fields["password"]
    assert first.lease and second.lease and first.lease.id != second.lease.id
    assert len(MemoryBackend.live_leases(name)) == 2


def test_unknown_options_are_config_errors(name: str, clock: Clock) -> None:
    with pytest.raises(ConfigError, match=rf"\[stores.{name}\]: unknown option\(s\) addr"):
        backend(name, clock, addr="http://x")
