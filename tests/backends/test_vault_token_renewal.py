"""The Vault store's login and per-task tokens renew on the resolver's scheduler, like leases.

One renewal mechanism per process: the store runs no timer thread of its own, so the resolver's
clock drives its tokens too, close stops their renewal, and a forked child (a new scheduler)
never renews the tokens its parent took.
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Any

from leaseline import Resolver
from leaseline._config import Config
from leaseline.backends import PerTaskTokens

from tests.servers import OpenBao

from .test_vault import approle


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _resolver(openbao: OpenBao, clock: Clock) -> Resolver:
    store = {"addr": openbao.addr, "auth": approle(openbao), "child_token": {"ttl": "600s"}}
    r = Resolver(
        Config.from_mapping({"stores": {"vault": store}}), clock=clock, handle_signals=False
    )
    r._scheduler.start = lambda: None  # type: ignore[method-assign]  # driven by hand below
    return r


def _seed(openbao: OpenBao, canary: Any) -> str:
    path = f"llm/renewal-{secrets.token_hex(4)}"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"k": canary.new()}, mount_point="secret"
    )
    return f"vault://secret/{path}#k"


def _renewed(openbao: OpenBao, accessor: str) -> bool:
    data = openbao.client().auth.token.lookup_accessor(accessor)["data"]
    return bool(data.get("last_renewal_time") or data.get("last_renewal"))


def test_tokens_renew_on_the_resolvers_scheduler(openbao: OpenBao, canary: Any) -> None:
    clock = Clock(1_900_000_000.0)
    with _resolver(openbao, clock) as r:
        r.resolve(_seed(openbao, canary))  # logs in (approle) and takes the per-task token
        assert not [t.name for t in threading.enumerate() if t.name.startswith("leaseline-vault")]
        backend = r.backend("vault")
        assert isinstance(backend, PerTaskTokens)
        accessor = backend.child_token_accessor
        assert accessor and not _renewed(openbao, accessor)
        clock.now += 600 * 2 / 3 + 1  # past the renewal window's end (2/3 of the TTL)
        assert r._scheduler.run_due(clock.now) >= 1
        assert _renewed(openbao, accessor)
        lookup = openbao.client().auth.token.lookup_accessor(accessor)["data"]
        assert lookup["ttl"] > 500  # renewed by a full TTL, not left to run out
        clock.now += 600
        assert r._scheduler.run_due(clock.now) >= 1  # and again, on the TTL the renewal returned


def test_a_forked_child_never_renews_its_parents_tokens(openbao: OpenBao, canary: Any) -> None:
    clock = Clock(1_900_000_000.0)
    with _resolver(openbao, clock) as r:
        r.resolve(_seed(openbao, canary))
        backend = r.backend("vault")
        assert isinstance(backend, PerTaskTokens)
        accessor = backend.child_token_accessor
        assert accessor
        pid = os.fork()
        if pid == 0:  # the child: what its scheduler holds is its own, and it holds nothing
            code = 1
            try:
                clock.now += 10_000
                code = 0 if r._scheduler.run_due(clock.now) == 0 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not _renewed(openbao, accessor)
        clock.now += 600
        assert r._scheduler.run_due(clock.now) >= 1  # the parent still renews its own
        assert _renewed(openbao, accessor)
