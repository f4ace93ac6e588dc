"""The rotation engine on the memory store: phases, audit, failures, grace, user rotators."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from leaseline import Resolver, Secret
from leaseline._config import Config
from leaseline.audit import Auditor
from leaseline.backends.memory import MemoryBackend
from leaseline.rotation import DAY, check, rotate, run
from leaseline.rotation._rotators import Job, ProviderRotator, known_rotators, register_rotator

from .conftest import ListSink


def make(
    tmp_path: Path, auditor: Auditor, policies: list[dict[str, Any]], **rotation: Any
) -> Resolver:
    section = {"policies": policies, "deploy_marker": str(tmp_path / "deploy.json"), **rotation}
    config = Config.from_mapping({"rotation": section})
    return Resolver(config, auditor=auditor, handle_signals=False)


def test_run_rotates_exactly_the_due_references(
    tmp_path: Path, audit: tuple[ListSink, Auditor], canary: Any
) -> None:
    sink, auditor = audit
    now = time.time()
    old_a, old_b = canary.new(), canary.new()
    MemoryBackend.put("memory", "llm/a", {"api_key": old_a}, now=now - 100 * DAY)
    MemoryBackend.put("memory", "llm/b", {"api_key": old_b}, now=now - 10 * DAY)
    policies = [{"match": "memory://llm/*", "kind": "llm-api-key", "rotator": "random-token"}]
    with make(tmp_path, auditor, policies) as r:
        checks, results = run(r)
        assert {c.ref: c.status for c in checks} == {
            "memory://llm/a": "overdue",
            "memory://llm/b": "ok",
        }
        assert [(x.ref, x.outcome, x.previous_version, x.version) for x in results] == [
            ("memory://llm/a", "rotated", "1", "2")
        ]
        new_a = r.resolve("memory://llm/a#api_key")
        assert new_a != old_a and len(new_a) >= 40
        assert r.resolve("memory://llm/b#api_key") == old_b
        assert [c.status for c in check(r)] == ["ok", "ok"]
    assert sink.phases() == [("stage", "ok"), ("verify", "ok"), ("promote", "ok"), ("retire", "ok")]
    stage = sink.events()[0]
    assert stage["fields"] == ["api_key"] and stage["value_hmacs"]["api_key"].startswith(
        "hmac-sha256:"
    )
    assert stage["rotator"] == "random-token" and stage["previous_version"] == "1"
    assert all(old_a not in line and new_a not in line for line in sink.lines)


def test_failing_verify_leaves_old_version_current(
    tmp_path: Path, audit: tuple[ListSink, Auditor], canary: Any
) -> None:
    sink, auditor = audit
    old = canary.new()
    MemoryBackend.put("memory", "svc/token", {"token": old}, now=0)
    seen: list[Secret] = []

    def refuse(secret: Secret) -> bool:
        seen.append(secret)
        return False

    def explode(secret: Secret) -> bool:
        raise RuntimeError(f"provider rejected {secret.reveal('token')}")

    policies = [{"match": "memory://svc/*", "kind": "database-password", "max_age": "1d"}]
    with make(tmp_path, auditor, policies) as r:
        for hook in (refuse, explode):
            _, results = run(r, verify=hook)
            (result,) = results
            assert result.outcome == "failed" and result.phase == "verify"
            assert "the old version is still current" in result.message
            assert r.resolve("memory://svc/token#token") == old
            assert MemoryBackend.reads("memory") >= 1
        # the raising hook's message contained the new value: it is masked in the report
        assert seen[0].reveal("token") != old
        assert "RuntimeError: provider rejected" in result.message
        assert seen[0].reveal("token") not in result.message
    assert sink.phases() == [("stage", "ok"), ("verify", "failed")] * 2


def test_provider_kinds_need_a_rotator(tmp_path: Path, audit: tuple[ListSink, Auditor]) -> None:
    MemoryBackend.put("memory", "llm/openai", {"api_key": "k"}, now=0)
    with make(tmp_path, audit[1], [{"match": "memory://llm/*", "kind": "llm-api-key"}]) as r:
        _, (result,) = run(r)
    assert result.outcome == "failed" and result.phase == "setup"
    assert (
        "only its provider can mint" in result.message and "nothing was changed" in result.message
    )
    assert MemoryBackend.reads("memory") == 0


def test_dry_run_and_deploy_marker(tmp_path: Path, audit: tuple[ListSink, Auditor]) -> None:
    now = time.time()
    MemoryBackend.put("memory", "db/app", {"username": "app", "password": "p0"}, now=now - 60)
    policies = [{"match": "memory://db/*", "kind": "database-password"}]
    with make(tmp_path, audit[1], policies) as r:
        _, results = run(r)
        assert results == []  # no deploy recorded: nothing due
        _, (dry,) = run(r, deploy="release-7", dry_run=True)
        assert dry.outcome == "would-rotate" and not (tmp_path / "deploy.json").exists()
        _, (done,) = run(r, deploy="release-7")
        assert done.outcome == "rotated" and done.rotator == "random-password"
        assert r.resolve("memory://db/app#username") == "app"  # only the password field
        assert r.resolve("memory://db/app#password") != "p0"
        _, again = run(r, deploy="release-7")  # same deploy: already rotated for it
        assert again == []
    assert [p for p, _ in audit[0].phases()] == ["stage", "verify", "promote", "retire"]


class VendorKeys(ProviderRotator):
    """Stand-in for an LLM vendor's key-minting API."""

    name: ClassVar[str] = "vendor-keys"
    live: ClassVar[set[str]] = set()
    events: ClassVar[list[str]] = []

    def mint(self, job: Job, current: Secret) -> dict[str, str]:
        key = f"vk-{len(self.live)}-{int(time.time() * 1e6)}"
        self.live.add(key)
        self.events.append("mint")
        return {"api_key": key}

    def revoke(self, job: Job, old: Secret) -> None:
        self.live.discard(old.reveal("api_key"))
        self.events.append("revoke")

    def discard(self, job: Job, new: Secret) -> None:
        self.live.discard(new.reveal("api_key"))
        self.events.append("discard")


def test_user_rotator_grace_and_on_rotate(tmp_path: Path, audit: tuple[ListSink, Auditor]) -> None:
    register_rotator("vendor-keys", VendorKeys)
    assert "vendor-keys" in known_rotators() and "vault-db-static-role" in known_rotators()
    VendorKeys.live.add("vk-initial")
    MemoryBackend.put("memory", "llm/vendor", {"api_key": "vk-initial", "org": "o1"}, now=0)
    policies = [
        {
            "match": "memory://llm/vendor",
            "kind": "llm-api-key",
            "rotator": "vendor-keys",
            "grace": "10m",
        }
    ]
    slept: list[float] = []
    rotated: list[tuple[str, str]] = []

    def sleep(seconds: float) -> None:  # the grace window: both keys are live here
        slept.append(seconds)
        assert len(VendorKeys.live) == 2

    with make(tmp_path, audit[1], policies) as r:
        r.on_rotate(
            lambda ref, old, new: rotated.append((old.reveal("api_key"), new.reveal("api_key")))
        )
        assert r.resolve("memory://llm/vendor#api_key") == "vk-initial"
        _, (result,) = run(r, sleep=sleep)
        assert result.outcome == "rotated", result.message
        new = r.resolve("memory://llm/vendor#api_key")  # this process already has the new one
        assert r.resolve("memory://llm/vendor#org") == "o1"
    assert slept == [600.0]
    assert rotated == [("vk-initial", new)]
    assert VendorKeys.live == {new}
    assert VendorKeys.events == ["mint", "revoke"]
    VendorKeys.events.clear()

    with make(tmp_path, audit[1], policies) as r:
        _, (failed,) = run(r, refs=["memory://llm/vendor"], verify=lambda s: False, sleep=sleep)
    assert failed.outcome == "failed" and VendorKeys.events == ["mint", "discard"]
    assert VendorKeys.live == {new}


def test_unknown_rotator_and_store_without_versions(
    tmp_path: Path, audit: tuple[ListSink, Auditor]
) -> None:
    MemoryBackend.put("memory", "x", {"v": "1"}, now=0)
    with make(
        tmp_path, audit[1], [{"match": "memory://x", "kind": "cloud-credential", "rotator": "nope"}]
    ) as r:
        _, (result,) = run(r)
    assert result.outcome == "failed" and "unknown rotator 'nope'" in result.message
    with make(tmp_path, audit[1], []) as r:
        res = rotate(r, "env://HOME", rotator="random-token")
    assert res.outcome == "failed" and res.phase == "stage" and "not 'env'" in res.message


def test_check_reports_listing_and_metadata_errors(
    tmp_path: Path, audit: tuple[ListSink, Auditor]
) -> None:
    policies = [
        {"match": "env://LEASELINE_*", "kind": "cloud-credential"},
        {"match": "memory://gone", "kind": "cloud-credential"},
    ]
    with make(tmp_path, audit[1], policies) as r:
        results = check(r)
    assert {c.ref: c.status for c in results} == {
        "memory://gone": "error",
        "env://LEASELINE_*": "error",
    }
    assert any("cannot list" in c.detail for c in results)


@pytest.mark.parametrize("field", ["api_key", None])
def test_field_selection(
    tmp_path: Path, audit: tuple[ListSink, Auditor], field: str | None
) -> None:
    MemoryBackend.put("memory", "multi", {"api_key": "a", "endpoint": "https://e"}, now=0)
    ref = "memory://multi" + (f"#{field}" if field else "")
    with make(tmp_path, audit[1], []) as r:
        result = rotate(r, ref, rotator="random-token")
        assert result.outcome == "rotated"
        assert r.resolve("memory://multi#endpoint") == "https://e"
        assert r.resolve("memory://multi#api_key") != "a"


def test_forcing_an_unmanaged_reference_says_so(
    tmp_path: Path, audit: tuple[ListSink, Auditor]
) -> None:
    MemoryBackend.put("memory", "loose", {"v": "1"}, now=0)
    with make(tmp_path, audit[1], []) as r:
        _, (result,) = run(r, refs=["memory://loose"])
    assert result.outcome == "failed" and "not covered by any" in result.message


def test_user_rotators_import_public_names_only() -> None:
    """The documented way to write a rotator (docs/rotation.md, examples/rotation) works from
    the public module ``leaseline.rotators``."""
    import importlib.util
    from pathlib import Path

    import leaseline.rotators as public

    example = Path(__file__).parents[2] / "examples" / "rotation" / "vendor_rotator.py"
    spec = importlib.util.spec_from_file_location("vendor_rotator", example)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert issubclass(module.AcmeKeys, public.ProviderRotator)
    assert public.ProviderRotator is ProviderRotator
    assert "leaseline.rotation._rotators" not in example.read_text()
