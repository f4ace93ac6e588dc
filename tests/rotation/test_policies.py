"""Policies, globs and age evaluation: pure functions, no store, no clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from leaseline import ConfigError
from leaseline.rotation import (
    DAY,
    DeployMarker,
    Kind,
    Policy,
    RotationSettings,
    evaluate,
    format_duration,
    matches,
    record_deploy,
)

NOW = 1_800_000_000.0


def policy(max_age: float | None = 90 * DAY, per_deploy: bool = False) -> Policy:
    return Policy("memory://x/*", Kind("k", max_age, per_deploy), max_age, per_deploy)


# -- settings -------------------------------------------------------------------------------------


def test_builtin_kinds_and_overrides() -> None:
    s = RotationSettings.from_section(
        {
            "warn_before": "3d",
            "kinds": {"registry-token": "14d", "session": {"max_age": "12h"}, "tls": "per-deploy"},
            "policies": [
                {"match": "vault://secret/llm/*", "kind": "llm-api-key"},
                {"match": "aws-sm://prod/*", "kind": "cloud-credential", "max_age": "30s"},
                {"match": "vault://database/static-creds/app", "kind": "database-password"},
                {"match": "memory://reg/*", "kind": "registry-token"},
                {"match": "memory://tls", "kind": "tls", "max_age": "90d"},
            ],
        }
    )
    ages = [(p.kind.name, p.max_age, p.per_deploy) for p in s.policies]
    assert ages == [
        ("llm-api-key", 90 * DAY, False),
        ("cloud-credential", 30.0, False),
        ("database-password", None, True),
        ("registry-token", 14 * DAY, False),
        ("tls", 90 * DAY, True),
    ]
    assert s.warn_before == 3 * DAY
    assert s.kinds["session"].max_age == 12 * 3600
    p = s.policy_for("vault://secret/llm/openai#api_key")
    assert p is not None and p.kind.name == "llm-api-key"
    assert s.policy_for("vault://secret/other") is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"policies": [{"match": "vault://x/*", "kind": "nope"}]}, "policies[0].kind"),
        (
            {"policies": [{"match": "vault://x/*", "kind": "llm-api-key", "max_age": "soon"}]},
            "max_age",
        ),
        ({"policies": [{"match": "secret/llm/*", "kind": "llm-api-key"}]}, "policies[0].match"),
        ({"policies": [{"match": "vault://x", "kind": "llm-api-key", "ttl": "1d"}]}, "ttl"),
        (
            {"policies": [{"match": "vault://x", "kind": "llm-api-key", "verify": "nocolon"}]},
            "verify",
        ),
        ({"kinds": {"k": {"rotator": "x"}}}, "rotation.kinds.k"),
        ({"policy": []}, "unknown key"),
    ],
)
def test_bad_config_names_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RotationSettings.from_section(section)


# -- globs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "ref", "expected"),
    [
        ("vault://secret/llm/*", "vault://secret/llm/openai", True),
        ("vault://secret/llm/*", "vault://secret/llm/openai#api_key", True),
        ("vault://secret/llm/*", "vault://secret/llm/team/openai", False),
        ("vault://secret/llm/**", "vault://secret/llm/team/openai", True),
        ("vault://secret/llm/*#api_key", "vault://secret/llm/openai#org", False),
        ("vault://secret/llm/op*ai", "vault://secret/llm/openai", True),
        ("aws-sm://prod/*", "vault://prod/x", False),
        ("vault://secret/a.b", "vault://secret/aXb", False),
        ("vault://secret/llm/openai", "vault://secret/llm/openai?version=3", True),
    ],
)
def test_matches(pattern: str, ref: str, expected: bool) -> None:
    assert matches(pattern, ref) is expected


@given(st.from_regex(r"[a-z0-9_.-]{1,12}", fullmatch=True))
def test_star_is_one_segment(name: str) -> None:
    assert matches("vault://secret/llm/*", f"vault://secret/llm/{name}")
    assert not matches("vault://secret/llm/*", f"vault://secret/llm/{name}/x")


# -- evaluation -----------------------------------------------------------------------------------


def test_overdue_due_soon_ok() -> None:
    p = policy(90 * DAY)
    fresh = evaluate("r", p, NOW - 10 * DAY, NOW, warn_before=7 * DAY)
    soon = evaluate("r", p, NOW - 85 * DAY, NOW, warn_before=7 * DAY)
    late = evaluate("r", p, NOW - 91 * DAY, NOW, warn_before=7 * DAY)
    assert (fresh.status, soon.status, late.status) == ("ok", "due-soon", "overdue")
    assert late.due_at == NOW - DAY and late.limit == "90d"
    assert not fresh.due and soon.due and late.due


def test_warning_window_is_capped_for_short_limits() -> None:
    p = policy(30.0)
    assert evaluate("r", p, NOW - 10, NOW, warn_before=7 * DAY).status == "ok"
    assert evaluate("r", p, NOW - 20, NOW, warn_before=7 * DAY).status == "due-soon"


def test_unknown_age() -> None:
    assert evaluate("r", policy(), None, NOW, warn_before=0).status == "unknown"


def test_per_deploy() -> None:
    p = policy(None, per_deploy=True)
    assert evaluate("r", p, NOW - 1, NOW, warn_before=0).status == "ok"  # no deploy yet
    marker = DeployMarker("release-42", NOW - 60)
    before = evaluate("r", p, NOW - 3600, NOW, warn_before=0, deploy=marker)
    after = evaluate("r", p, NOW - 30, NOW, warn_before=0, deploy=marker)
    assert before.status == "overdue" and "release-42" in before.detail
    assert after.status == "ok"
    both = Policy("x", Kind("k"), max_age=DAY, per_deploy=True)
    assert evaluate("r", both, NOW - 2 * DAY, NOW, warn_before=0, deploy=marker).status == "overdue"
    assert (
        evaluate("r", both, NOW - 30, NOW, warn_before=0, deploy=marker).limit == "1d + per deploy"
    )


@given(
    st.floats(1, 1e9),
    st.floats(0, 1e9),
    st.floats(0, 1e9),
)
def test_overdue_exactly_when_older_than_max_age(max_age: float, age: float, warn: float) -> None:
    result = evaluate("r", policy(max_age), NOW - age, NOW, warn_before=warn)
    assert (result.status == "overdue") == ((NOW - age) + max_age <= NOW)


def test_record_deploy_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deploy.json"
    first = record_deploy(path, "d1", NOW)
    assert record_deploy(path, "d1", NOW + 100) == first
    assert record_deploy(path, "d2", NOW + 100).at == NOW + 100
    assert DeployMarker.read(path) == DeployMarker("d2", NOW + 100)
    path.write_text("{")
    with pytest.raises(ConfigError, match="deploy marker"):
        DeployMarker.read(path)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (90 * DAY, 12 * 3600, 30, 36 * 3600)] == [
        "90d",
        "12h",
        "30s",
        "36h",
    ]
