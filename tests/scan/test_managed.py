"""HMAC matching of findings against the current values of managed references."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from leaseline import Resolver
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend
from leaseline.scan import ManagedValues, managed_references, scan


def _key() -> str:
    return "sk-proj-" + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(48)
    )


@pytest.fixture
def store() -> Iterator[str]:
    name = "scanmem"
    MemoryBackend.reset(name)
    yield name
    MemoryBackend.reset(name)


def _config(store: str, **audit: str) -> Config:
    return Config.from_mapping(
        {
            "stores": {store: {"type": "memory"}},
            "aliases": {"openai": f"{store}://llm/openai#api_key"},
            "audit": {"hmac_key": secrets.token_hex(16), **audit},
            "rotation": {
                "policies": [
                    {"match": f"{store}://db/creds", "kind": "database-password"},
                    {"match": f"{store}://llm/*", "kind": "llm-api-key"},
                ]
            },
        }
    )


def test_managed_references_are_aliases_and_concrete_policies(store: str) -> None:
    assert managed_references(_config(store)) == [
        f"{store}://db/creds",
        f"{store}://llm/openai#api_key",
    ]


def test_current_value_is_named_stale_value_is_not(store: str, tmp_path: Path) -> None:
    current, old = _key(), _key()
    MemoryBackend.put(store, "llm/openai", {"api_key": current})
    MemoryBackend.put(store, "db/creds", {"username": "app", "password": secrets.token_urlsafe(12)})
    src = tmp_path / "src"
    src.mkdir()
    (src / "live.py").write_text(f'client = OpenAI(api_key="{current}")\n')
    (src / "old.py").write_text(f'client = OpenAI(api_key="{old}")\n')
    config = _config(store)
    with Resolver(config, handle_signals=False) as resolver:
        result = scan([str(src)], config=config, resolver=resolver)
    by_file = {Path(f.path).name: f for f in result.findings}
    live = by_file["live.py"]
    assert live.managed_ref == f"{store}://llm/openai#api_key"
    assert live.advice.startswith(f"rotate `{store}://llm/openai#api_key` now")
    assert "openai (" in live.advice  # the configured alias is the suggested reference
    assert by_file["old.py"].managed_ref is None
    assert result.managed_checked >= 3  # api_key plus both fields of db/creds


def test_a_managed_value_is_shown_whatever_its_rule_rated_it(store: str, tmp_path: Path) -> None:
    """A keyword finding in a test file is ``low`` and hidden by default, unless it is the
    current value of a managed reference: then it is certain (``high``) and shown (before, the
    threshold was applied before the managed match and hid it)."""
    password = secrets.token_urlsafe(18)
    MemoryBackend.put(store, "db/creds", {"username": "app", "password": password})
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_db.py").write_text(f'db_password = "{password}"\n')
    (tests / "test_other.py").write_text(f'db_password = "{secrets.token_urlsafe(18)}"\n')
    config = _config(store)
    with Resolver(config, handle_signals=False) as resolver:
        result = scan([str(tmp_path)], config=config, resolver=resolver)
    assert [(Path(f.path).name, f.confidence) for f in result.findings] == [("test_db.py", "high")]
    assert result.findings[0].managed_ref == f"{store}://db/creds#password"
    assert result.hidden == 1  # the other test value: low, not managed


def test_multi_field_secret_names_the_field(store: str) -> None:
    password = secrets.token_urlsafe(16)
    MemoryBackend.put(store, "db/creds", {"username": "app", "password": password})
    config = _config(store)
    with Resolver(config, handle_signals=False) as resolver:
        values = ManagedValues.from_resolver(resolver, [f"{store}://db/creds"])
    assert values is not None
    assert values.match(password) == f"{store}://db/creds#password"
    assert values.match(password + "x") is None


def test_unreadable_reference_is_reported_without_values(store: str) -> None:
    config = _config(store)
    with Resolver(config, handle_signals=False) as resolver:
        values = ManagedValues.from_resolver(resolver)
    assert values is not None
    assert (f"{store}://llm/openai#api_key", "SecretNotFound") in values.errors


def test_no_hmac_key_means_no_store_reads(store: str, tmp_path: Path) -> None:
    MemoryBackend.put(store, "llm/openai", {"api_key": _key()})
    (tmp_path / "a.py").write_text(f'k = "{_key()}"\n')
    config = Config.from_mapping({"aliases": {"openai": f"{store}://llm/openai#api_key"}})
    result = scan([str(tmp_path)], config=config)
    assert result.findings and result.findings[0].managed_ref is None
    assert MemoryBackend.reads(store) == 0


def test_hmac_key_from_a_reference(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value = _key()
    MemoryBackend.put(store, "llm/openai", {"api_key": value})
    monkeypatch.setenv("SCAN_TEST_AUDIT_KEY", secrets.token_hex(16))
    config = Config.from_mapping(
        {
            "stores": {store: {"type": "memory"}},
            "aliases": {"openai": f"{store}://llm/openai#api_key"},
            "audit": {"hmac_key": "env://SCAN_TEST_AUDIT_KEY"},
        }
    )
    with Resolver(config, handle_signals=False) as resolver:
        values = ManagedValues.from_resolver(resolver)
    assert values is not None and values.match(value) == f"{store}://llm/openai#api_key"


def test_openbao_current_value(vault_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same match against the real OpenBao KV v2 (``vault://`` default store)."""
    value = _key()
    client = vault_env.client()
    client.secrets.kv.v2.create_or_update_secret(
        path="llm/scan-openai", secret={"api_key": value}, mount_point="secret"
    )
    (tmp_path / "nb.py").write_text(f'OPENAI_API_KEY = "{value}"\n')
    config = Config.from_mapping(
        {
            "aliases": {"openai": "vault://secret/llm/scan-openai#api_key"},
            "audit": {"hmac_key": secrets.token_hex(16)},
        }
    )
    with Resolver(config, handle_signals=False) as resolver:
        result = scan([str(tmp_path)], config=config, resolver=resolver)
    assert [f.managed_ref for f in result.findings] == ["vault://secret/llm/scan-openai#api_key"]
