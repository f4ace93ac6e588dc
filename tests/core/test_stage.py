"""``leaseline.stage``: the running pipeline stage, as the resolver keys a per-stage store's reads."""

from __future__ import annotations

import asyncio
import contextvars

import leaseline
import pytest
from leaseline import Resolver
from leaseline._config import Config
from leaseline._stage import StagedRef, add_stage_provider, base_key, current_stage, policy_name


def test_stage_blocks_nest_and_end() -> None:
    assert current_stage() is None
    with leaseline.stage("dag/a"):
        assert current_stage() == "dag/a"
        with leaseline.stage("dag/b"):
            assert current_stage() == "dag/b"
        assert current_stage() == "dag/a"
    assert current_stage() is None


def test_the_stage_follows_asyncio_tasks_and_copied_contexts() -> None:
    async def inner() -> str | None:
        await asyncio.sleep(0)
        return current_stage()

    async def outer() -> str | None:
        with leaseline.stage("flow/task"):
            return await asyncio.create_task(inner())

    assert asyncio.run(outer()) == "flow/task"
    with leaseline.stage("p/t"):
        ctx = contextvars.copy_context()
    assert ctx.run(current_stage) == "p/t"


@pytest.mark.parametrize("bad", ["", "  ", "a\nb", "x\x1b[31m"])
def test_a_bad_stage_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="stage"), leaseline.stage(bad):
        pass


def test_a_provider_answers_when_no_block_is_open() -> None:
    answers: list[str | None] = ["from/provider"]
    provider = lambda: answers[0]  # noqa: E731
    add_stage_provider(provider)
    try:
        assert current_stage() == "from/provider"
        with leaseline.stage("explicit/wins"):
            assert current_stage() == "explicit/wins"
        answers[0] = None
        assert current_stage() is None
    finally:
        from leaseline import _stage

        _stage._providers.remove(provider)


def test_only_per_stage_stores_key_reads_by_stage() -> None:
    config = Config.from_mapping(
        {
            "stores": {
                "vault": {"addr": "http://127.0.0.1:1", "child_token": {"policies": "per-stage"}},
                "other": {"type": "vault", "addr": "http://127.0.0.1:1"},
            }
        }
    )
    with Resolver(config, handle_signals=False) as r:
        assert r.parse("vault://secret/x#k") == leaseline.parse("vault://secret/x#k")
        with leaseline.stage("d/t"):
            staged = r.parse("vault://secret/x#k")
            plain = r.parse("other://secret/x#k")
        assert isinstance(staged, StagedRef) and staged.stage == "d/t"
        assert staged.key == "vault://secret/x (stage d/t)" and staged.field == "k"
        assert base_key(staged.key) == "vault://secret/x"
        assert not isinstance(plain, StagedRef) and plain.key == "other://secret/x"
        assert staged.without_field().key == staged.key


def test_policy_name_is_the_one_plan_writes() -> None:
    from leaseline.plan import policy_name as plans

    assert plans is policy_name
    assert (
        policy_name("leaseline-training/prepare-data")
        == "leaseline-leaseline-training-prepare-data"
    )
