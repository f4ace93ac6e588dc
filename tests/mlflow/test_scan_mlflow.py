"""``leaseline scan --mlflow`` against the real tracking server (tests/mlflow/conftest.py) and
a real OpenBao: what runs logged (params, tags, artefacts) is read through ``MlflowClient``."""

from __future__ import annotations

import json
import secrets
import string
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from leaseline.cli.scan import scan

from tests.canary import encodings
from tests.mlflow.conftest import MlflowServer
from tests.servers import OpenBao

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "sk-proj-" + "".join(secrets.choice(alphabet) for _ in range(48))


@pytest.fixture
def client(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.tracking import MlflowClient

    for name in ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_server.admin_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_server.admin_password)
    return MlflowClient(tracking_uri=mlflow_server.uri)


@pytest.fixture
def managed(vault_env: OpenBao, canary: Any, tmp_path: Path) -> tuple[str, str, Path]:
    """A managed reference in OpenBao (its value a canary), and a config naming it."""
    value = canary.new("trainer-db-pw")
    path = f"mlflow-scan/{secrets.token_hex(4)}"
    vault_env.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"password": value}, mount_point="secret"
    )
    ref = f"vault://secret/{path}#password"
    config = tmp_path / "leaseline.toml"
    config.write_text(
        f'[aliases]\ntrainer_db = "{ref}"\n\n[audit]\nhmac_key = "{secrets.token_hex(16)}"\n'
    )
    return value, ref, config


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(scan, list(args))
    return result.exit_code, result.stdout, result.stderr


def _experiment(server: MlflowServer) -> str:
    name = f"scan-{secrets.token_hex(4)}"
    server.create_experiment(name)
    return name


def test_param_tag_and_artifact_are_found(
    mlflow_server: MlflowServer, client: Any, managed: tuple[str, str, Path]
) -> None:
    value, ref, config = managed
    name = _experiment(mlflow_server)
    exp_id = client.get_experiment_by_name(name).experiment_id
    run = client.create_run(exp_id)
    run_id = run.info.run_id
    key = _key()
    client.log_param(run_id, "lr", "0.001")
    client.log_param(run_id, "db_password", value)
    client.set_tag(run_id, "openai_key", key)
    client.log_text(run_id, f"trainer:\n  epochs: 3\n  password: {value}\n", "configs/train.yaml")
    client.log_text(run_id, "epochs: 3\n", "configs/clean.yaml")
    client.set_terminated(run_id)

    code, out, err = invoke(
        "--mlflow",
        mlflow_server.uri,
        "--experiment",
        name,
        "--config",
        str(config),
        "--format",
        "json",
    )
    assert code == 1, err
    for needle, form in encodings(value) + encodings(key):
        assert needle.decode() not in out + err, f"a value is in the output ({form})"
    findings = json.loads(out)["findings"]
    where = {(f["path"], f["location"], f["managed_ref"]) for f in findings}
    assert where == {
        (f"mlflow:{name}/{run_id}", "param db_password", ref),
        (f"mlflow:{name}/{run_id}", "artifact configs/train.yaml", ref),
        (f"mlflow:{name}/{run_id}", "tag openai_key", None),
    }
    artifact = next(f for f in findings if f["location"].startswith("artifact"))
    assert artifact["line"] == 3

    code, out, _ = invoke(
        "--mlflow",
        mlflow_server.uri,
        "--experiment",
        name,
        "--config",
        str(config),
        "--format",
        "sarif",
    )
    assert code == 1
    results = json.loads(out)["runs"][0]["results"]
    assert len(results) == 3
    assert {r["locations"][0]["logicalLocations"][0]["name"] for r in results} == {
        "param db_password",
        "artifact configs/train.yaml",
        "tag openai_key",
    }


def test_clean_experiment_exits_0(
    mlflow_server: MlflowServer, client: Any, managed: tuple[str, str, Path]
) -> None:
    _, _, config = managed
    name = _experiment(mlflow_server)
    run_id = client.create_run(client.get_experiment_by_name(name).experiment_id).info.run_id
    client.log_param(run_id, "lr", "0.001")
    client.log_text(run_id, "model: resnet18\n", "config.yaml")
    code, out, err = invoke(
        "--mlflow", mlflow_server.uri, "--experiment", name, "--config", str(config)
    )
    assert code == 0, out + err
    assert "no credentials found" in out


def test_a_run_applies_the_confidence_threshold(
    mlflow_server: MlflowServer, client: Any, tmp_path: Path
) -> None:
    """A stand-in password logged as a param is ``low``: hidden by default (exit 0), shown by
    ``--all`` (before, MLflow scans reported every finding whatever its confidence)."""
    name = _experiment(mlflow_server)
    run_id = client.create_run(client.get_experiment_by_name(name).experiment_id).info.run_id
    words = "".join(("CorrectHorse", "Battery42"))
    client.log_text(run_id, f'admin_password = "{words}"\n', "settings.py")
    config = tmp_path / "leaseline.toml"
    config.write_text("")
    args = ("--mlflow", mlflow_server.uri, "--experiment", name, "--config", str(config))
    code, out, err = invoke(*args, "--format", "json")
    assert code == 0, out + err
    assert json.loads(out)["summary"]["hidden"] == 1
    code, out, _ = invoke(*args, "--format", "json", "--all")
    assert code == 1
    assert [f["confidence"] for f in json.loads(out)["findings"]] == ["low"]
    assert words not in out


def test_unknown_experiment_is_a_clear_error(mlflow_server: MlflowServer, client: Any) -> None:
    code, _, err = invoke("--mlflow", mlflow_server.uri, "--experiment", "no-such-experiment")
    assert code == 2 and "no experiment named 'no-such-experiment'" in err


def test_server_down_names_no_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers._util import free_port

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    password = secrets.token_hex(8)
    code, _, err = invoke("--mlflow", f"http://u:{password}@127.0.0.1:{free_port()}")
    assert code == 5 and "could not read the tracking server" in err
    assert password not in err


def test_a_clean_server_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, managed: tuple[str, str, Path]
) -> None:
    """A server of its own, every experiment scanned (no ``--experiment``): runs that logged
    only ordinary params and artefacts are no finding."""
    from mlflow.tracking import MlflowClient

    from tests.mlflow.conftest import start_mlflow_server

    _, _, config = managed
    (tmp_path / "clean-server").mkdir()
    server = start_mlflow_server(tmp_path / "clean-server")
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.admin_username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
        client = MlflowClient(tracking_uri=server.uri)
        name = _experiment(server)
        for lr in ("0.001", "0.01"):
            run_id = client.create_run(client.get_experiment_by_name(name).experiment_id)
            client.log_param(run_id.info.run_id, "lr", lr)
            client.log_text(run_id.info.run_id, "model: resnet18\nepochs: 3\n", "config.yaml")
        code, out, err = invoke("--mlflow", server.uri, "--config", str(config))
    finally:
        server.stop()
    assert code == 0, out + err
    assert "no credentials found" in out
