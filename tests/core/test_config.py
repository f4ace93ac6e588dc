from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


# -- 19.6: config trust ------------------------------------------------------------------------


class _Catcher:
    """A loopback HTTP server that records every request's headers (a repository's 'vault')."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen: list[dict[str, str]] = []
        self.seen = seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append(dict(self.headers))
                body = b'{"errors":["permission denied"]}'
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_LIST = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("where", ["leaseline.toml", "pyproject.toml"])
def test_a_config_in_a_cloned_repo_cannot_redirect_the_vault_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, canary: Any, where: str
) -> None:
    token = canary.new("hvs.")
    catcher = _Catcher()
    try:
        repo = tmp_path / "cloned-repo"
        repo.mkdir()
        table = "[tool.leaseline.stores.vault]" if where == "pyproject.toml" else "[stores.vault]"
        (repo / where).write_text(f'{table}\naddr = "{catcher.addr}"\n')
        monkeypatch.chdir(repo)
        for name in [n for n in os.environ if n.startswith(("LEASELINE_", "VAULT_", "BAO_"))]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:9")  # the user's own (not running)
        monkeypatch.setenv("VAULT_TOKEN", token)
        monkeypatch.setenv("LEASELINE_RESOLVER__DEADLINE", "2s")
        with pytest.raises(ConfigError) as info:
            with Resolver(handle_signals=False) as r:
                r.resolve("vault://secret/llm/openai#api_key")
        assert not any(token in str(h) for h in catcher.seen), "the token reached the repo's server"
        message = str(info.value)
        assert "stores.vault.addr" in message and "working directory" in message
        assert f"LEASELINE_CONFIG={(repo / where).resolve()}" in message
        assert "LEASELINE_STORES__VAULT__ADDR=" in message
        assert catcher.seen == []
        # opting in explicitly: the user names the file
        monkeypatch.setenv("LEASELINE_CONFIG", str(repo / where))
        assert load_config().stores["vault"]["addr"] == catcher.addr
    finally:
        catcher.close()


def test_an_implicit_config_may_name_aliases_and_neutral_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leaseline.toml").write_text(
        '[aliases]\nopenai = "vault://secret/llm/openai#api_key"\n'
        '[stores.vault]\nrefresh_after = "1m"\ntimeout = "3s"\n'
        '[stores.prod-aws]\ntype = "aws-sm"\nendpoint_url = "http://127.0.0.1:1"\n'
        '[resolver]\ndeadline = "5s"\n'
    )
    # every key naming a destination or a credential is refused, all of them listed
    with pytest.raises(ConfigError, match=r"stores\.prod-aws\.endpoint_url") as info:
        load_config(environ={})
    assert "LEASELINE_STORES__PROD_AWS__ENDPOINT_URL=" in str(info.value)
    # the environment deciding it is the user's choice: the file's value is overridden anyway
    env = {"LEASELINE_STORES__PROD_AWS__ENDPOINT_URL": "http://127.0.0.1:2"}
    config = load_config(environ=env)
    assert config.stores["prod-aws"]["endpoint_url"] == "http://127.0.0.1:2"
    assert config.aliases["openai"].startswith("vault://")
    assert config.stores["vault"] == {"refresh_after": "1m", "timeout": "3s"}
    # a file given explicitly (path or --config) is trusted
    assert load_config(tmp_path / "leaseline.toml", environ={}).stores["prod-aws"]["type"]


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_a_config_others_can_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, explicit: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "leaseline.toml"
    path.write_text('[aliases]\na = "env://A"\n')
    path.chmod(mode)
    env = {"LEASELINE_CONFIG": str(path)} if explicit else {}
    with pytest.raises(ConfigError) as info:
        load_config(environ=env)
    message = str(info.value)
    shown = "leaseline.toml" if not explicit else str(path)
    assert message.startswith(f"{shown}: refusing a config file that group or others can write")
    assert f"(mode {mode:04o})" in message and f"Fix: chmod go-w {shown}" in message
    path.chmod(0o644)
    assert load_config(environ=env).aliases == {"a": "env://A"}


def test_a_config_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[aliases]\na = "env://A"\n')
    if os.geteuid() == 0:
        os.chown(path, 4242, -1)  # as root (CI): really another user's file
    else:
        me = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: me + 1)  # we are someone else now
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: refusing a config file owned by uid ")
    assert "not by you" in message and f"Fix: chown {os.geteuid()} {path}" in message


def test_a_pyproject_without_leaseline_table_is_not_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (tmp_path / "pyproject.toml").chmod(0o666)  # a sloppy repo: not leaseline's business
    assert load_config(environ={}).source is None
