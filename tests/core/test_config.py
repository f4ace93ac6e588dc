from __future__ import annotations

from pathlib import Path

import pytest
from leaseline import ConfigError, Resolver
from leaseline._config import environment_overlay, load_config, parse_duration


def test_durations() -> None:
    assert parse_duration("90d") == 90 * 86400
    assert parse_duration("1h30m") == 5400
    assert parse_duration("30s") == 30
    assert parse_duration(12) == 12
    for bad in ("soon", "-5s", "5x", True, ""):
        with pytest.raises(ConfigError, match="expected a duration"):
            parse_duration(bad)


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "leaseline.toml"
    path.write_text(
        '[stores.vault]\naddr = "https://vault.internal:8200"\n'
        '[stores.prod-aws]\ntype = "aws-sm"\nregion = "eu-west-1"\n'
        '[aliases]\nopenai = "vault://secret/llm/openai#api_key"\n'
        '[resolver]\nrefresh_after = "2m"\n'
    )
    env = {
        "LEASELINE_STORES__VAULT__ADDR": "https://other:8200",
        "LEASELINE_STORES__PROD_AWS__REGION": "us-west-2",
        "LEASELINE_AUDIT__SINK": "stdout",
        "LEASELINE_RESOLVER__CACHE": "false",
    }
    config = load_config(path, environ=env)
    assert config.stores["vault"]["addr"] == "https://other:8200"
    assert config.stores["prod-aws"] == {"type": "aws-sm", "region": "us-west-2"}
    assert config.aliases["openai"].startswith("vault://")
    assert config.resolver.refresh_after == 120 and config.resolver.cache is False
    assert config.section("audit")["sink"] == "stdout"
    assert "environment" in (config.source or "")


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEASELINE_CONFIG", raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.leaseline.aliases]\na = "env://A"\n')
    assert load_config(environ={}).aliases == {"a": "env://A"}
    (tmp_path / "leaseline.toml").write_text('[aliases]\nb = "env://B"\n')
    assert load_config(environ={}).aliases == {"b": "env://B"}
    other = tmp_path / "other.toml"
    other.write_text('[aliases]\nc = "env://C"\n')
    assert load_config(environ={"LEASELINE_CONFIG": str(other)}).aliases == {"c": "env://C"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[stores.vault\n", "not valid TOML"),
        ("[colours]\nred = 1\n", "unknown section(s) colours"),
        ("stores = 3\n", "[stores] must be a table"),
        ("[stores.Vault]\n", "must be lowercase"),
        ('[resolver]\ndeadline = "soon"\n', "resolver.deadline"),
        ("[resolver]\nspeed = 1\n", "unknown key(s) speed"),
        ("[aliases]\nx = 3\n", "[aliases] must map names"),
    ],
)
def test_bad_files_name_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "leaseline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_environment_store_names_use_dashes() -> None:
    overlay = environment_overlay(
        {
            "LEASELINE_STORES__PROD_AWS__TYPE": "aws-sm",
            "LEASELINE_STORES__VAULT__AUTH__METHOD": "approle",
            "UNRELATED": "x",
        }
    )
    assert overlay == {
        "stores": {"prod-aws": {"type": "aws-sm"}, "vault": {"auth": {"method": "approle"}}}
    }


def test_resolver_from_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[stores.mem2]\ntype = "memory"\n[aliases]\nk = "mem2://x#v"\n')
    from leaseline.backends.memory import MemoryBackend

    MemoryBackend.put("mem2", "x", {"v": "named-store-value"})
    with Resolver.from_config(path, handle_signals=False) as r:
        assert r.resolve("k") == "named-store-value"
        assert r.resolve("mem2://x#v") == "named-store-value"
