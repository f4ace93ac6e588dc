"""The MLflow plugin without a server: discovery, configuration, headers (memory store)."""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
from importlib.metadata import entry_points
from typing import Any

import pytest
from leaseline import ConfigError, InvalidReference, Resolver
from leaseline._config import Config
from leaseline.backends.memory import MemoryBackend
from leaseline.mlflow import LeaselineAuth, LeaselineAuthProvider, MlflowCredentials


def resolver(mlflow_section: dict[str, str] | None = None) -> Resolver:
    data: dict[str, Any] = {"mlflow": mlflow_section} if mlflow_section else {}
    return Resolver(Config.from_mapping(data), handle_signals=False)


def stored(fields: dict[str, str]) -> str:
    path = f"mlflow/{secrets.token_hex(4)}"
    MemoryBackend.put("memory", path, fields)
    return f"memory://{path}"


def test_mlflow_finds_the_plugin_by_name(monkeypatch: pytest.MonkeyPatch, canary: Any) -> None:
    (ep,) = [e for e in entry_points(group="mlflow.request_auth_provider") if e.name == "leaseline"]
    assert ep.load() is LeaselineAuthProvider
    assert LeaselineAuthProvider().get_name() == "leaseline"

    from mlflow.tracking.request_auth.registry import fetch_auth

    monkeypatch.setenv("LEASELINE_MLFLOW_TOKEN", stored({"token": canary.new()}) + "#token")
    monkeypatch.setattr("leaseline.mlflow.default_resolver", resolver)
    assert isinstance(fetch_auth("leaseline"), LeaselineAuth)


def test_import_leaseline_imports_neither_mlflow_nor_requests() -> None:
    code = "import sys, leaseline; print(sorted({'mlflow', 'requests'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bearer_token_header_comes_from_the_store(canary: Any) -> None:
    token = canary.new()
    ref = stored({"token": token})
    r = resolver()
    auth = LeaselineAuth(r, MlflowCredentials.load(r, {"LEASELINE_MLFLOW_TOKEN": ref}))
    assert auth.header() == f"Bearer {token}"
    assert ref in repr(auth) and token not in repr(auth)


def test_basic_header_with_both_fields_from_one_read(canary: Any) -> None:
    password = canary.new()
    ref = stored({"username": "trainer", "password": password})
    r = resolver()
    env = {
        "LEASELINE_MLFLOW_USERNAME": f"{ref}#username",
        "LEASELINE_MLFLOW_PASSWORD": f"{ref}#password",
    }
    auth = LeaselineAuth(r, MlflowCredentials.load(r, env))
    assert auth.header() == "Basic " + base64.b64encode(f"trainer:{password}".encode()).decode()
    auth.header()
    assert r.requests[ref] == 1  # one read serves both fields, then the cache


def test_plain_username_and_config_section(canary: Any) -> None:
    ref = stored({"password": canary.new()})
    r = resolver({"username": "trainer", "password": ref})
    creds = MlflowCredentials.load(r, {})
    assert creds.username == "trainer"
    assert [str(x) for x in creds.references()] == [ref]
    # the environment wins over the file
    token_ref = stored({"token": canary.new()})
    assert MlflowCredentials.load(resolver(), {"LEASELINE_MLFLOW_TOKEN": token_ref}).token


@pytest.mark.parametrize(
    ("env", "section", "message"),
    [
        ({}, None, "no credential is configured"),
        ({"LEASELINE_MLFLOW_USERNAME": "u"}, None, "LEASELINE_MLFLOW_PASSWORD is not set"),
        ({"LEASELINE_MLFLOW_PASSWORD": "env://P"}, None, "LEASELINE_MLFLOW_USERNAME is not set"),
        (
            {"LEASELINE_MLFLOW_TOKEN": "env://T", "LEASELINE_MLFLOW_PASSWORD": "env://P"},
            None,
            "not both",
        ),
        ({}, {"tokn": "env://T"}, "unknown key(s) tokn"),
    ],
)
def test_configuration_errors_say_the_fix(
    env: dict[str, str], section: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MlflowCredentials.load(resolver(section), env)


def test_a_password_value_is_refused_where_a_reference_is_expected(canary: Any) -> None:
    value = canary.new()
    env = {"LEASELINE_MLFLOW_USERNAME": "u", "LEASELINE_MLFLOW_PASSWORD": value}
    with pytest.raises(InvalidReference) as info:
        MlflowCredentials.load(resolver(), env)
    assert value not in str(info.value)
