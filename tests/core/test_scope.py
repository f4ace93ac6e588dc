"""``leaseline._scope``: the adapters' one lifetime mechanism, on the memory store."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from leaseline import Resolver
from leaseline._config import Config
from leaseline._scope import Resolvers, Scope, Scopes, references_in_env
from leaseline.backends.memory import MemoryBackend, random_fields

STORE = "memory"
DB = f"{STORE}://db/creds"


@pytest.fixture
def resolver() -> Iterator[Resolver]:
    MemoryBackend.put(STORE, "db/creds", ttl=600, renewable=True, mint=random_fields("u", "p"))
    MemoryBackend.put(STORE, "kv/key", {"api_key": "k" * 16})
    r = Resolver(Config.from_mapping({}), handle_signals=False)
    yield r
    r.close()


def test_a_scope_holds_a_lease_once_and_revokes_it_at_its_end(resolver: Resolver) -> None:
    with Scope("task") as scope:
        first = scope.hold(resolver, f"{DB}#u")
        second = scope.hold(resolver, f"{DB}#p")  # same lease: held once
        assert first.reveal() != second.reveal()
        assert scope.held() == [DB]
        assert len(MemoryBackend.live_leases(STORE)) == 1
    assert MemoryBackend.live_leases(STORE) == []
    assert scope.closed
    with pytest.raises(RuntimeError, match="has ended"):
        scope.hold(resolver, DB)


def test_get_holds_dynamic_secrets_only_static_ones_stay_cached(resolver: Resolver) -> None:
    with Scope() as scope:
        assert scope.resolve(resolver, f"{STORE}://kv/key#api_key") == "k" * 16
        assert scope.get(resolver, DB).lease is not None
        assert scope.held() == [DB]
    assert MemoryBackend.live_leases(STORE) == []
    assert resolver.resolve(f"{STORE}://kv/key#api_key") == "k" * 16
    assert MemoryBackend.reads(STORE) == 2  # the KV value was not read again


def test_a_lease_another_holder_still_holds_outlives_the_scope(resolver: Resolver) -> None:
    outer, inner = Scope("outer"), Scope("inner")
    outer.hold(resolver, DB)
    inner.hold(resolver, DB)
    inner.close()
    assert len(MemoryBackend.live_leases(STORE)) == 1
    outer.close()
    assert MemoryBackend.live_leases(STORE) == []


def test_set_env_for_the_scopes_life_then_restored(
    resolver: Resolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_USER", f"{DB}#u")
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    with Scope() as scope:
        scope.set_env(resolver, {"DB_USER": f"{DB}#u", "DB_PASSWORD": f"{DB}#p"})
        user, password = os.environ["DB_USER"], os.environ["DB_PASSWORD"]
        assert resolver.get(DB).reveal("u") == user and resolver.get(DB).reveal("p") == password
        assert scope.resolved.contains_secret(f"x{password}x")
    assert os.environ["DB_USER"] == f"{DB}#u" and "DB_PASSWORD" not in os.environ
    assert MemoryBackend.live_leases(STORE) == []


def test_an_owned_resolver_is_closed_at_the_end_once(resolver: Resolver) -> None:
    closed: list[int] = []
    built = Resolvers[str](lambda key: resolver)
    built.get("k")
    original = built.close
    built.close = lambda: (closed.append(1), original())  # type: ignore[method-assign]
    with Scope() as scope:
        scope.own(built)
        scope.own(built)
        scope.hold(resolver, DB)
    assert closed == [1] and len(built) == 0


def test_scopes_open_one_scope_per_key_and_end_it() -> None:
    runs = Scopes("run")
    assert runs.open("a") is runs.open("a") is runs.get("a")
    assert runs.open("b") is not runs.open("a")
    assert runs.end("a") is True and runs.get("a") is None
    assert runs.end("a") is False


def test_resolvers_build_one_per_key_under_contention() -> None:
    calls: list[str] = []
    gate = threading.Barrier(16)

    def build(key: str) -> Resolver:
        calls.append(key)
        return Resolver(Config.from_mapping({}), handle_signals=False)

    cache = Resolvers(build)
    got: list[Resolver] = []

    def worker() -> None:
        gate.wait()
        got.append(cache.get("one"))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["one"] and len({id(r) for r in got}) == 1
    cache.close()
    assert len(cache) == 0
    assert cache.get("one") is not got[0]  # built anew after close
    cache.close()


def _in_child(work: Any) -> dict[str, Any]:
    """Run ``work()`` in a forked child (5 s at most); return what it reported."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.alarm(5)
        try:
            report = work()
        except BaseException as exc:
            report = {"error": repr(exc)}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child did not finish"
    return dict(json.loads(data))


def test_a_forked_child_never_releases_what_the_parent_holds(resolver: Resolver) -> None:
    scope = Scope("parent")
    scope.hold(resolver, DB)
    parent_lease = MemoryBackend.live_leases(STORE)
    MemoryBackend.put(STORE, "db/other", ttl=600, renewable=True, mint=random_fields("u"))

    def child() -> dict[str, Any]:
        empty = scope.held()
        scope.hold(resolver, f"{STORE}://db/other")  # the child's own
        own = sorted(set(MemoryBackend.live_leases(STORE)) - set(parent_lease))
        scope.close()
        return {
            "held_after_fork": empty,
            "own": own,
            "left": MemoryBackend.live_leases(STORE),
        }

    report = _in_child(child)
    assert report.get("error") is None, report
    assert report["held_after_fork"] == []
    assert len(report["own"]) == 1
    assert report["left"] == parent_lease  # the parent's lease untouched, the child's revoked
    assert scope.held() == [DB] and MemoryBackend.live_leases(STORE) == parent_lease
    scope.close()
    assert MemoryBackend.live_leases(STORE) == []


def test_a_forked_child_can_build_while_the_parent_held_the_cache_lock() -> None:
    cache = Resolvers(lambda key: Resolver(Config.from_mapping({}), handle_signals=False))
    with cache._lock:  # another thread of the parent was building when the fork happened
        report = _in_child(lambda: {"built": cache.get("new") is not None})
    assert report == {"built": True}
    cache.close()


def test_references_in_env_skips_urls_unknown_stores_and_leaselines_own() -> None:
    environ = {
        "K": "vault://secret/x",
        "VAULT_ADDR": "http://v:8200",
        "LEASELINE_AUDIT__HMAC_KEY": "env://KEY",
        "OTHER": "nowhere://x",
    }
    config = Config.from_mapping({"stores": {"vault": {"addr": "http://127.0.0.1:1"}}})
    with Resolver(config, handle_signals=False) as resolver:
        assert references_in_env(environ, resolver) == {"K": "vault://secret/x"}
