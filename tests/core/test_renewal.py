"""10,000 leases issued in one burst must not come back as a renewal storm (no server; fake clock)."""

from __future__ import annotations

import random
from collections import Counter

from leaseline import Resolver
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend, random_fields
from leaseline.masking import Masker

LEASES = 10_000
TTL = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def simulate(
    leases: int = LEASES, ttl: float = TTL, waves: int = 3, seed: int = 7
) -> dict[str, float]:
    """Issue ``leases`` at once, step a fake clock second by second through ``waves`` renewal
    rounds, and return the per-second renewal rate's peak and mean over the active seconds."""
    MemoryBackend.reset("sim")
    for i in range(leases):
        MemoryBackend.put("sim", f"db/{i}", mint=random_fields("password"), ttl=ttl, renewable=True)
    clock = Clock()
    rng = random.Random(seed)
    r = Resolver(
        Config.from_mapping({"stores": {"sim": {"type": "memory"}}}),
        clock=clock,
        rng=rng.random,
        handle_signals=False,
        masker=Masker(),  # not the process masker: its listeners (Airflow's) are not on trial here
    )
    # Driven by hand below: no timer thread racing the fake clock.
    r._scheduler.start = lambda: None  # type: ignore[method-assign]
    start = clock.now
    for i in range(leases):
        r.get(f"sim://db/{i}")
    per_second: Counter[int] = Counter()
    backend = r.backend("sim")
    original = backend.renew

    def counting_renew(lease):  # type: ignore[no-untyped-def]
        per_second[int(clock.now - start)] += 1
        return original(lease)

    backend.renew = counting_renew  # type: ignore[method-assign]
    for _ in range(int(ttl * 2 / 3 * waves) + 60):
        clock.now += 1.0
        r._scheduler.run_due(clock.now)
    r._scheduler.close()
    MemoryBackend.reset("sim")
    active = [per_second.get(s, 0) for s in range(min(per_second), max(per_second) + 1)]
    return {
        "renewals": float(sum(active)),
        "peak_per_s": float(max(active)),
        "mean_per_s": sum(active) / len(active),
        "peak_over_mean": max(active) / (sum(active) / len(active)),
    }


def test_renewals_are_spread() -> None:
    result = simulate()
    print(f"renewal load: {result}")
    assert result["renewals"] >= LEASES * 2  # at least two full waves ran
    assert result["peak_over_mean"] <= 2.0
