"""The MLflow plugin against a real ``mlflow server --app-name basic-auth`` and a real OpenBao.

The example training script (examples/mlflow/train.py) runs in a subprocess, paused after its
first ``log_metric``; the test then rotates the user's password on the MLflow server and in
OpenBao, and lets it continue. With leaseline the next request gets a 401, the plugin re-reads
OpenBao and resends once (audited); with static ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` the
same script dies at that metric.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import leaseline
import leaseline._api
import pytest

from tests.mlflow.conftest import MlflowServer
from tests.servers import OpenBao

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "mlflow" / "train.py"
READ_POLICY = 'path "secret/data/mlflow/*" { capabilities = ["read"] }\n'


@dataclass
class Trainer:
    """An MLflow user whose password lives in OpenBao KV at ``secret/mlflow/<username>``."""

    username: str
    password: str
    ref: str
    server: MlflowServer
    bao: OpenBao

    def store(self) -> None:
        self.bao.client().secrets.kv.v2.create_or_update_secret(
            path=f"mlflow/{self.username}",
            secret={"username": self.username, "password": self.password},
            mount_point="secret",
        )

    def rotate(self, new_password: str) -> None:
        """What a rotation job does: change the password on the server, then in the store."""
        self.server.set_password(self.username, new_password)
        self.password = new_password
        self.store()


@pytest.fixture
def trainer(mlflow_server: MlflowServer, openbao: OpenBao, canary: Any) -> Trainer:
    username = f"trainer-{secrets.token_hex(4)}"
    user = Trainer(
        username=username,
        password=canary.new("mlflow-pw"),
        ref=f"vault://secret/mlflow/{username}",
        server=mlflow_server,
        bao=openbao,
    )
    mlflow_server.create_user(username, user.password)
    user.store()
    return user


def base_env(server: MlflowServer) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "LEASELINE_", "VAULT_", "BAO_"))
    }
    env["MLFLOW_TRACKING_URI"] = server.uri
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # 401 is not retried by MLflow anyway
    env["PYTHONUNBUFFERED"] = "1"
    return env


def leaseline_env(trainer: Trainer, tmp_path: Path) -> dict[str, str]:
    env = base_env(trainer.server)
    env["MLFLOW_TRACKING_AUTH"] = "leaseline"
    env["LEASELINE_MLFLOW_USERNAME"] = f"{trainer.ref}#username"
    env["LEASELINE_MLFLOW_PASSWORD"] = f"{trainer.ref}#password"
    env["VAULT_ADDR"] = trainer.bao.addr
    env["VAULT_TOKEN"] = trainer.bao.token_with_policy(READ_POLICY)
    env["LEASELINE_AUDIT__SINK"] = f"file://{tmp_path / 'audit.jsonl'}"
    return env


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def run_id(self) -> str:
        return next(ln.split()[1] for ln in self.stdout.splitlines() if ln.startswith("run "))


def run_training(
    env: dict[str, str], cwd: Path, *, epochs: int = 3, between: Any = None, experiment: str
) -> Outcome:
    """Run the example; after epoch 0 call ``between()`` (the rotation), then let it go on."""
    args = [sys.executable, str(TRAIN), "--experiment", experiment, "--epochs", str(epochs)]
    if between is not None:
        args.append("--pause")
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    try:
        if between is not None:
            for line in proc.stdout:
                out.append(line)
                if line.startswith("paused"):
                    break
            between()
            proc.stdin.write("\n")
            proc.stdin.flush()
        rest, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    outcome = Outcome(proc.returncode, "".join(out) + rest, err)
    # Everything the client printed lands in tmp_path too, so the canary plugin scans it.
    (cwd / "train.stdout").write_text(outcome.stdout)
    (cwd / "train.stderr").write_text(outcome.stderr)
    print(outcome.stdout)
    print(outcome.stderr, file=sys.stderr)
    return outcome


def audit_events(path: Path, event: str) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [rec for rec in map(json.loads, lines) if rec["event"] == event]


def test_run_survives_password_rotation_between_two_metrics(
    trainer: Trainer, tmp_path: Path, canary: Any
) -> None:
    new_password = canary.new("mlflow-pw")
    outcome = run_training(
        leaseline_env(trainer, tmp_path),
        tmp_path,
        between=lambda: trainer.rotate(new_password),
        experiment=f"exp-{trainer.username}",
    )

    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert "done" in outcome.stdout
    server = trainer.server
    assert server.metric_steps(outcome.run_id, "mse") == [0, 1, 2]
    run = server.run(outcome.run_id)
    assert run["info"]["status"] == "FINISHED"
    assert {p["key"] for p in run["data"]["params"]} == {"epochs", "learning_rate", "seed"}
    models = server.logged_models(run["info"]["experiment_id"])
    assert [m["info"]["name"] for m in models] == ["model"]

    # The 401 path, in leaseline's audit trail: exactly one retry, at the metric after the
    # rotation, which succeeded; every later request used the fresh credential from the cache.
    retries = audit_events(tmp_path / "audit.jsonl", "auth_retry")
    assert len(retries) == 1, retries
    (retry,) = retries
    assert retry["outcome"] == "ok"
    assert retry["status"] == 200
    assert retry["target"] == "POST /api/2.0/mlflow/runs/log-metric"
    assert retry["ref"] == f"{trainer.ref}#password"
    assert retry["store"] == "vault"
    reads = [e for e in audit_events(tmp_path / "audit.jsonl", "read") if e["ref"] == trainer.ref]
    assert len(reads) == 2  # one before the rotation, one after the 401


def test_static_credentials_fail_at_the_metric_after_rotation(
    trainer: Trainer, tmp_path: Path, canary: Any
) -> None:
    """The gap leaseline closes: MLflow's static credentials die with the rotated password."""
    env = base_env(trainer.server)
    env["MLFLOW_TRACKING_USERNAME"] = trainer.username
    env["MLFLOW_TRACKING_PASSWORD"] = trainer.password
    new_password = canary.new("mlflow-pw")
    outcome = run_training(
        env,
        tmp_path,
        between=lambda: trainer.rotate(new_password),
        experiment=f"exp-{trainer.username}",
    )

    assert outcome.returncode != 0
    assert "epoch 0" in outcome.stdout
    assert "epoch 1" not in outcome.stdout
    assert "mlflow.log_metric(" in outcome.stderr
    assert "/mlflow/runs/log-metric failed with error code 401" in outcome.stderr
    assert trainer.server.metric_steps(outcome.run_id, "mse") == [0]


def test_unknown_reference_fails_the_first_request_clearly(
    mlflow_server: MlflowServer, openbao: OpenBao, tmp_path: Path
) -> None:
    missing = f"vault://secret/mlflow/absent-{secrets.token_hex(4)}"
    env = base_env(mlflow_server)
    env.update(
        MLFLOW_TRACKING_AUTH="leaseline",
        LEASELINE_MLFLOW_USERNAME="nobody",
        LEASELINE_MLFLOW_PASSWORD=f"{missing}#password",
        VAULT_ADDR=openbao.addr,
        VAULT_TOKEN=openbao.token_with_policy(READ_POLICY),
        LEASELINE_AUDIT__SINK=f"file://{tmp_path / 'audit.jsonl'}",
    )
    outcome = run_training(env, tmp_path, experiment="never-created")

    assert outcome.returncode != 0
    assert "epoch" not in outcome.stdout
    assert missing in outcome.stderr
    assert "401" not in outcome.stderr
    # Nothing was sent to the tracking server, so there was nothing to retry.
    assert audit_events(tmp_path / "audit.jsonl", "auth_retry") == []
    assert [e["outcome"] for e in audit_events(tmp_path / "audit.jsonl", "read")] == ["not_found"]


def test_a_shared_experiment_needs_the_grant_the_example_makes(
    trainer: Trainer, tmp_path: Path
) -> None:
    server = trainer.server
    experiment = f"shared-{trainer.username}"
    experiment_id = server.create_experiment(experiment)  # the admin's, as in the README
    env = leaseline_env(trainer, tmp_path)
    refused = run_training(env, tmp_path, epochs=1, experiment=experiment)
    assert refused.returncode != 0 and "403" in refused.stderr
    server.grant(trainer.username, experiment_id, "EDIT")
    granted = run_training(env, tmp_path, epochs=1, experiment=experiment)
    assert granted.returncode == 0, granted.stderr[-3000:]
    assert server.metric_steps(granted.run_id, "mse") == [0]


@pytest.fixture
def in_process(
    trainer: Trainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Trainer]:
    """MLflow and leaseline in this process, configured from the environment as a user would."""
    for name, value in leaseline_env(trainer, tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    leaseline._api._reset_default()
    yield trainer
    leaseline._api._reset_default()


def test_store_not_yet_rotated_surfaces_the_401_without_a_loop(
    in_process: Trainer, tmp_path: Path, canary: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server rotated, store not: one re-read, no resend of the same refused credential."""
    import mlflow
    import requests.adapters
    from mlflow.exceptions import MlflowException

    sent: list[str] = []
    real_send = requests.adapters.HTTPAdapter.send

    def counting_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.url.startswith(in_process.server.uri):
            sent.append(f"{request.method} {request.path_url.split('?')[0]}")
        return real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", counting_send)
    client = mlflow.MlflowClient()
    experiment = client.create_experiment(f"exp-{in_process.username}")
    in_process.server.set_password(in_process.username, canary.new("mlflow-pw"))
    sent.clear()

    with pytest.raises(MlflowException) as info:
        client.create_run(experiment)

    assert sent == ["POST /api/2.0/mlflow/runs/create"]
    assert in_process.password not in str(info.value)
    (retry,) = audit_events(tmp_path / "audit.jsonl", "auth_retry")
    assert retry["outcome"] == "unchanged"
    assert leaseline.default_resolver().requests[in_process.ref] == 2
