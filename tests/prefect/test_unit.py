"""The blocks against the in-process ``memory`` store: no Prefect server, no flow run."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from leaseline.backends.memory import MemoryBackend
from leaseline.masking import masker
from leaseline.prefect import DatabaseCredentials, LeaselineStore, SecretReference, _store
from leaseline.prefect._runs import audit_context, run_scope


@pytest.fixture
def mem() -> Iterator[LeaselineStore]:
    name = f"mem-{secrets.token_hex(3)}"
    yield LeaselineStore(store_name=name, store_type="memory")
    _store._reset()
    MemoryBackend.reset(name)


def test_import_leaseline_does_not_import_prefect() -> None:
    code = "import sys, leaseline; assert 'prefect' not in sys.modules, 'prefect imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_get_aget_and_fields_outside_a_flow(mem: LeaselineStore, canary: Any) -> None:
    value, org = canary.new(), canary.new()
    MemoryBackend.put(mem.store_name, "llm/openai", {"api_key": value, "org": org})
    block = SecretReference(ref=f"{mem.store_name}://llm/openai#api_key", store=mem)
    assert block.get() == value
    assert block.get("org") == org
    assert asyncio.run(block.aget()) == value
    assert value not in repr(block.get_secret())
    assert MemoryBackend.reads(mem.store_name) == 1  # one read: the core's cache served the rest
    assert masker().contains_secret(f"x{value}x")


def test_database_lease_url_is_quoted_and_revoked_at_exit(mem: LeaselineStore) -> None:
    password = "p@ss:/w?rd#" + secrets.token_hex(8)
    MemoryBackend.put(
        mem.store_name,
        "db/creds",
        {"username": "v-reader", "password": password},
        ttl=300,
        renewable=True,
    )
    db = DatabaseCredentials(
        ref=f"{mem.store_name}://db/creds",
        store=mem,
        host="::1",
        port=6543,
        database="ml",
        query={"sslmode": "verify-full"},
    )
    with db.lease() as held:
        assert MemoryBackend.live_leases(mem.store_name)
        assert held.url.startswith("postgresql://v-reader:p%40ss%3A%2Fw%3Frd%23")
        assert held.url.endswith("@[::1]:6543/ml?sslmode=verify-full")
        assert held.connect_kwargs()["password"] == password
        assert password not in repr(held) and "[::1]:6543/ml" in repr(held)
    assert MemoryBackend.live_leases(mem.store_name) == []


def test_literal_secret_options_are_merged_and_masked() -> None:
    literal = secrets.token_hex(16)
    store = LeaselineStore(
        store_name="v",
        options={"auth": {"method": "approle", "role_id": "r"}},
        secret_options={"auth.secret_id": literal},
    )
    assert store.table()["auth"] == {"method": "approle", "role_id": "r", "secret_id": literal}
    assert literal not in repr(store)
    assert masker().contains_secret(literal)


def test_outside_a_flow_run_nothing_is_held(mem: LeaselineStore) -> None:
    resolver = mem.get_resolver()
    assert resolver is _store.resolver_for(mem)  # one resolver per store settings
    assert run_scope() is None  # no flow run: nothing to hold a lease for
    assert audit_context() == {}


def test_a_failed_runs_exception_is_masked_in_place_along_its_chain(canary: Any) -> None:
    import base64

    from leaseline.prefect._failures import mask_exception

    value = canary.new()
    masker().add(value)
    b64 = base64.b64encode(value.encode()).decode()
    raised: ValueError | None = None
    try:
        try:
            raise KeyError(value)
        except KeyError as inner:
            raise ValueError(f"rejected {value} ({b64})") from inner
    except ValueError as exc:
        exc.add_note(f"note: {value}")
        raised = exc
    assert raised is not None
    masked = mask_exception(raised)
    assert masked is raised and type(masked) is ValueError  # the type survives
    assert str(masked) == "rejected *** (***)"
    assert masked.__notes__ == ["note: ***"]
    assert str(masked.__cause__) == "'***'"


def test_an_exception_that_cannot_be_masked_in_place_is_replaced(canary: Any) -> None:
    import pickle

    from leaseline.prefect._failures import MaskedError, mask_exception

    value = canary.new()
    masker().add(value)

    class Upstream(Exception):
        def __init__(self, key: str) -> None:
            super().__init__()
            self._parts = [key[:6], key[6:]]  # no attribute holds the whole value

        def __str__(self) -> str:
            return f"upstream said no to {''.join(self._parts)}"

    masked = mask_exception(Upstream(value))
    assert isinstance(masked, MaskedError)
    assert str(masked) == "Upstream: upstream said no to ***"
    assert value.encode() not in pickle.dumps(masked)


def test_prefect_records_a_failed_tasks_exception_masked(canary: Any) -> None:
    from leaseline.prefect import _failures

    value = canary.new()
    masker().add(value)
    _failures.install()
    from prefect import task_engine

    state = task_engine.exception_to_failed_state_sync(
        ValueError(f"rejected {value}"), message="Task run encountered an exception"
    )
    assert state.message == "Task run encountered an exception ValueError: rejected ***"
