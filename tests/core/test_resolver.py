"""The resolver on the memory store: cache, single flight, leases, renewal, errors."""

from __future__ import annotations

import asyncio
import logging
import pickle
import secrets
import threading
from typing import Any

import leaseline
import pytest
from leaseline import (
    BackendNotInstalled,
    ConfigError,
    LeaselineError,
    Resolver,
    Secret,
    SecretNotFound,
    UnknownStore,
)
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend, random_fields
from leaseline.masking import masker

from .conftest import FakeClock


def make(clock: FakeClock, **resolver: Any) -> Resolver:
    return Resolver(Config.from_mapping({"resolver": resolver}), clock=clock, handle_signals=False)


def test_resolve_fields_and_one_read(clock: FakeClock, canary: Any) -> None:
    user, password = canary.new(), canary.new()
    MemoryBackend.put("memory", "db/creds", {"username": user, "password": password})
    with make(clock) as r:
        assert r.resolve("memory://db/creds#username") == user
        assert r.resolve("memory://db/creds#password") == password
        assert MemoryBackend.reads("memory") == 1
        with pytest.raises(LeaselineError, match="has 2 fields"):
            r.resolve("memory://db/creds")


def test_static_entries_refresh_ahead_in_background(clock: FakeClock) -> None:
    MemoryBackend.put("memory", "k", {"v": "first-value"})
    with make(clock, refresh_after="60s") as r:
        assert r.resolve("memory://k#v") == "first-value"
        MemoryBackend.put("memory", "k", {"v": "second-value"})
        clock.advance(30)
        assert r.resolve("memory://k#v") == "first-value"  # fresh: no read
        assert MemoryBackend.reads("memory") == 1
        clock.advance(31)
        rotated = threading.Event()
        r.on_rotate(lambda ref, old, new: rotated.set())
        assert r.resolve("memory://k#v") == "first-value"  # stale-while-refresh
        assert rotated.wait(5)
        assert r.resolve("memory://k#v") == "second-value"


def test_lease_bounded_cache(clock: FakeClock) -> None:
    MemoryBackend.put("memory", "sts", mint=random_fields("token"), ttl=100)
    with make(clock, safety_margin="30s") as r:
        first = r.resolve("memory://sts#token")
        # non-renewable: refreshed ahead at ~2/3 of the TTL, never served past expiry - margin
        clock.advance(95)  # past 100 - min(30, 10% of 100)
        second = r.resolve("memory://sts#token")
        assert second != first
        assert MemoryBackend.reads("memory") == 2


def test_single_flight_64_threads(clock: FakeClock) -> None:
    gate = threading.Event()
    calls = 0

    def slow() -> dict[str, str]:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return {"v": secrets.token_hex(8)}

    MemoryBackend.put("memory", "slow", mint=slow, ttl=600, renewable=True)
    with make(clock) as r:
        barrier = threading.Barrier(64)
        results: list[str] = []

        def worker() -> None:
            barrier.wait()
            results.append(r.resolve("memory://slow#v"))

        threads = [threading.Thread(target=worker) for _ in range(64)]
        for t in threads:
            t.start()
        threading.Timer(0.3, gate.set).start()
        for t in threads:
            t.join()
        assert calls == 1 and r.requests["memory://slow"] == 1
        assert len(set(results)) == 1 and len(results) == 64


def test_misses_are_negative_cached(clock: FakeClock) -> None:
    with make(clock, negative_ttl="5s") as r:
        for _ in range(3):
            with pytest.raises(SecretNotFound, match="memory://absent"):
                r.resolve("memory://absent")
        assert MemoryBackend.reads("memory") == 1
        clock.advance(6)
        with pytest.raises(SecretNotFound):
            r.resolve("memory://absent")
        assert MemoryBackend.reads("memory") == 2


def test_renewal_and_rotation_at_max_ttl(clock: FakeClock) -> None:
    MemoryBackend.put(
        "memory",
        "db",
        mint=random_fields("username", "password"),
        ttl=60,
        renewable=True,
        max_ttl=150,
    )
    rotations: list[tuple[str, Secret, Secret]] = []
    with make(clock) as r:
        r.on_rotate(lambda ref, old, new: rotations.append((ref, old, new)))
        first = r.get("memory://db")
        assert first.lease is not None and first.lease.renewable
        for _ in range(12):  # 12 x 15 s = 180 s > max_ttl
            clock.advance(15)
            r._scheduler.run_due(clock())
            current = r.get("memory://db")
            assert current.lease is not None and current.lease.expires_at > clock()
        assert rotations, "max_ttl reached: a fresh credential must have been issued"
        assert rotations[0][0] == "memory://db"
        assert rotations[0][1].reveal("password") != rotations[0][2].reveal("password")
        assert r.get("memory://db") is not first
    assert MemoryBackend.live_leases("memory") == []


def test_lease_context_revokes_on_exit_and_on_exception(clock: FakeClock) -> None:
    MemoryBackend.put("memory", "db", mint=random_fields("password"), ttl=60, renewable=True)
    with make(clock) as r:
        with r.lease("memory://db") as held:
            assert held.reveal("password")
            assert len(MemoryBackend.live_leases("memory")) == 1
        assert MemoryBackend.live_leases("memory") == []
        with pytest.raises(RuntimeError), r.lease("memory://db"):
            assert len(MemoryBackend.live_leases("memory")) == 1
            raise RuntimeError("task failed")
        assert MemoryBackend.live_leases("memory") == []


def test_close_revokes_everything(clock: FakeClock) -> None:
    for name in ("a", "b", "c"):
        MemoryBackend.put("memory", name, mint=random_fields("password"), ttl=60, renewable=True)
    r = make(clock)
    for name in ("a", "b", "c"):
        r.get(f"memory://{name}")
    assert len(MemoryBackend.live_leases("memory")) == 3
    r.close()
    r.close()  # idempotent
    assert MemoryBackend.live_leases("memory") == []
    with pytest.raises(LeaselineError, match="closed"):
        r.get("memory://a")


def test_retry_on_rotation(clock: FakeClock) -> None:
    MemoryBackend.put("memory", "api", {"key": "old-key-value"})
    with make(clock) as r:
        accepted = {"new-key-value"}
        r.resolve("memory://api#key")  # cache the old value
        MemoryBackend.put("memory", "api", {"key": "new-key-value"})
        sleeps: list[float] = []

        @leaseline.retry_on_rotation(
            "memory://api#key", on=(PermissionError,), resolver=r, sleep=sleeps.append
        )
        def call() -> str:
            key = r.resolve("memory://api#key")
            if key not in accepted:
                raise PermissionError("401 from the vendor")
            return key

        assert call() == "new-key-value"
        assert len(sleeps) == 1

        MemoryBackend.put("memory", "api", {"key": "newer-key-value"})
        accepted = {"newer-key-value"}
        for attempt in leaseline.retry_on_rotation(
            "memory://api#key", on=(PermissionError,), resolver=r, sleep=lambda s: None
        ):
            with attempt:
                if r.resolve("memory://api#key") not in accepted:
                    raise PermissionError("401")
        assert r.resolve("memory://api#key") == "newer-key-value"


def test_retry_on_rotation_gives_up_after_window(clock: FakeClock) -> None:
    MemoryBackend.put("memory", "api", {"key": "never-accepted"})
    t = [0.0]

    def sleep(s: float) -> None:
        t[0] += 1.0

    with make(clock) as r:

        @leaseline.retry_on_rotation(
            "memory://api#key",
            on=(PermissionError,),
            resolver=r,
            window=5,
            sleep=sleep,
            monotonic=lambda: t[0],
        )
        def call() -> None:
            r.resolve("memory://api#key")
            raise PermissionError("401")

        with pytest.raises(PermissionError):
            call()
        assert 5 <= t[0] <= 7


def test_retry_on_rotation_for_a_hook_several_references_and_attempts(clock: FakeClock) -> None:
    # what leaseline.mlflow does on a 401: no exception to catch, a credential of two references
    MemoryBackend.put("memory", "user", {"name": "user-one"})
    MemoryBackend.put("memory", "pass", {"word": "old-password"})
    with make(clock) as r:
        refs = ["memory://user#name", "memory://pass#word"]
        assert [r.resolve(ref) for ref in refs] == ["user-one", "old-password"]
        MemoryBackend.put("memory", "user", {"name": "user-two"})
        MemoryBackend.put("memory", "pass", {"word": "new-password"})
        sleeps: list[float] = []
        rotation = leaseline.retry_on_rotation(refs, resolver=r, attempts=2, sleep=sleeps.append)
        assert rotation.rejected() is True  # the first refusal: one more try
        assert [r.resolve(ref) for ref in refs] == ["user-two", "new-password"]
        assert rotation.rejected() is False  # two attempts made: give up
        assert len(sleeps) == 1


def test_unknown_store_lists_what_exists(clock: FakeClock) -> None:
    with make(clock) as r, pytest.raises(UnknownStore) as info:
        r.resolve("nosuch://x")
    message = str(info.value)
    assert (
        "unknown store 'nosuch'" in message and "vault" in message and "[stores.nosuch]" in message
    )
    assert isinstance(info.value, LookupError)


def test_missing_extra_names_pip_command(clock: FakeClock) -> None:
    leaseline.register_backend("fake-sdk", "leaseline_no_such_module:Backend", extra="fake")
    with make(clock) as r, pytest.raises(BackendNotInstalled) as info:
        r.resolve("fake-sdk://x")
    assert "pip install 'leaseline[fake]'" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_bad_store_config_is_a_config_error(clock: FakeClock) -> None:
    r = Resolver(
        Config.from_mapping({"stores": {"memory": {"colour": "blue"}}}),
        clock=clock,
        handle_signals=False,
    )
    with r, pytest.raises(ConfigError, match="unknown option"):
        r.resolve("memory://x")


def test_values_masked_in_any_logger(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, canary: Any
) -> None:
    value = canary.new()
    MemoryBackend.put("memory", "k", {"v": value})
    with make(clock) as r:
        got = r.resolve("memory://k#v")
    import base64
    import json
    from urllib.parse import quote

    with caplog.at_level(logging.DEBUG):
        child = logging.getLogger("some.deep.child.logger")
        child.propagate = True
        child.warning("plain %s", got)
        child.warning("b64 %s hex %s", base64.b64encode(got.encode()).decode(), got.encode().hex())
        child.warning("json %s url %s", json.dumps({"k": got + '"'}), quote(got + "/x", safe=""))
        try:
            raise ValueError(f"failed with {got}")
        except ValueError:
            child.exception("boom")
    assert "plain ***" in caplog.text
    assert caplog.text.count("***") >= 6
    assert value not in caplog.text


def test_secret_never_shows_values(canary: Any) -> None:
    value = canary.new()
    s = Secret("memory://x", {"password": value, "username": "u"}, None)
    for text in (repr(s), str(s), f"{s}", f"{s!r:>40}", "%s" % s):  # noqa: UP031 - percent formatting is what logging uses
        assert value not in text
    assert repr(s) == "Secret(ref='memory://x', fields=['password', 'username'])"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s)
    assert s.reveal("password") == value


def test_async_api_does_not_block(clock: FakeClock) -> None:
    MemoryBackend.put("memory", "k", {"v": "async-value"})

    async def main() -> list[str]:
        with make(clock) as r:
            return list(await asyncio.gather(*(r.aresolve("memory://k#v") for _ in range(20))))

    assert asyncio.run(main()) == ["async-value"] * 20
    assert MemoryBackend.reads("memory") == 1


def test_masker_registered_before_return(clock: FakeClock, canary: Any) -> None:
    value = canary.new()
    MemoryBackend.put("memory", "m", {"v": value})
    seen: list[str] = []
    masker().on_add(seen.append)
    with make(clock) as r:
        got = r.resolve("memory://m#v")
    assert got in seen
    assert masker().mask(f"x{got}y") == "x***y"


def test_masked_when_a_formatter_renders_exc_info_itself(clock: FakeClock, canary: Any) -> None:
    """structlog's ProcessorFormatter (used by Airflow 3) formats ``exc_info`` on its own."""
    import io

    import structlog

    value = canary.new()
    MemoryBackend.put("memory", "s", {"v": value})
    with make(clock) as r:
        got = r.resolve("memory://s#v")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.dev.ConsoleRenderer(colors=False))
    )
    log = logging.getLogger("structlog.rendered.child")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise ValueError(f"failed with {got}")
        except ValueError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert value not in text
    assert "ValueError: failed with ***" in text


def test_backoff_never_overflows() -> None:
    from leaseline._retry import Backoff

    delays = Backoff(0.1, 2.0, lambda: 1.0)
    values = [next(delays) for _ in range(5000)]
    assert values[0] == 0.1 and max(values) == 2.0 and values[-1] == 2.0
