"""A real MLflow tracking server with basic auth, started once per test session.

``mlflow server --app-name basic-auth`` behind gunicorn (two workers, as deployed) on a free
loopback port, sqlite backend store and auth
database in a temp dir, admin password generated at run time (never a canary: it is not a value
leaseline hands out). Users are created and their passwords changed through MLflow's auth REST API.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.servers._util import free_port, stop_process, tail, wait_until

AUTH_API = "/api/2.0/mlflow/users"


@dataclass
class MlflowServer:
    """A running ``mlflow server --app-name basic-auth``; ``admin()`` calls use the admin user."""

    uri: str
    workdir: Path
    log_path: Path
    admin_password: str
    proc: subprocess.Popen[bytes] = field(repr=False)
    admin_username: str = "admin"

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        resp = requests.request(
            method,
            self.uri + path,
            auth=(self.admin_username, self.admin_password),
            timeout=30,
            **kwargs,
        )
        if resp.status_code != 200:
            raise RuntimeError(f"MLflow {method} {path}: HTTP {resp.status_code}: {resp.text}")
        return resp.json()

    def create_user(self, username: str, password: str) -> None:
        self._request(
            "POST", f"{AUTH_API}/create", json={"username": username, "password": password}
        )

    def set_password(self, username: str, password: str) -> None:
        self._request(
            "PATCH",
            f"{AUTH_API}/update-password",
            json={"username": username, "password": password},
        )

    def create_experiment(self, name: str) -> str:
        """An experiment the admin owns (a user may only read it, by default_permission)."""
        body = self._request("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
        return str(body["experiment_id"])

    def grant(self, username: str, experiment_id: str, permission: str = "EDIT") -> None:
        """What examples/mlflow/README.md tells the admin to do for a shared experiment."""
        self._request(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": username,
                "resource_type": "experiment",
                "resource_id": experiment_id,
                "permission": permission,
            },
        )

    def metric_steps(self, run_id: str, key: str) -> list[int]:
        body = self._request(
            "GET",
            "/api/2.0/mlflow/metrics/get-history",
            params={"run_id": run_id, "metric_key": key},
        )
        return sorted(int(m["step"]) for m in body.get("metrics", []))

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(
            self._request("GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id})["run"]
        )

    def logged_models(self, experiment_id: str) -> list[dict[str, Any]]:
        body = self._request(
            "POST",
            "/api/2.0/mlflow/logged-models/search",
            json={"experiment_ids": [experiment_id]},
        )
        return list(body.get("models", []))

    def _healthy(self) -> bool:
        import requests

        return requests.get(self.uri + "/health", timeout=2).status_code == 200

    def _dead(self) -> str | None:
        rc = self.proc.poll()
        return None if rc is None else f"mlflow server exited with code {rc}"

    def stop(self) -> None:
        # ``mlflow server`` runs gunicorn and its workers as children: stop the process group.
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        stop_process(self.proc, grace=5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start_mlflow_server(workdir: Path, timeout: float = 90) -> MlflowServer:
    admin_password = secrets.token_urlsafe(18)
    auth_ini = workdir / "basic_auth.ini"
    auth_ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{workdir / 'auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LEASELINE_"))}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_ini)
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
    # no huey job-runner consumers (a dozen processes): the tests use no server-side jobs
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log_path = workdir / "server.log"
    mlflow_cli = [sys.executable, "-m", "mlflow"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *mlflow_cli,
                "server",
                "--app-name",
                "basic-auth",
                "--backend-store-uri",
                f"sqlite:///{workdir / 'mlflow.db'}",
                "--artifacts-destination",
                str(workdir / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                # as deployed: gunicorn with two prefork workers (one may serve a request
                # while the other serves the user's password change)
                "--workers",
                "2",
                "--gunicorn-opts",
                "--timeout 60 --graceful-timeout 5",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    server = MlflowServer(
        uri=f"http://127.0.0.1:{port}",
        workdir=workdir,
        log_path=log_path,
        admin_password=admin_password,
        proc=proc,
    )
    try:
        wait_until(
            server._healthy,
            timeout=timeout,
            what="mlflow server",
            alive=server._dead,
            interval=0.25,
        )
    except (RuntimeError, TimeoutError) as exc:
        server.stop()
        raise RuntimeError(f"{exc}\n--- mlflow server log ---\n{tail(log_path)}") from None
    return server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    # find, don't import: importing mlflow.server here would load the server into this process
    mlflow_spec = importlib.util.find_spec("mlflow")
    if mlflow_spec is None or mlflow_spec.origin is None:
        require("MLflow (pip install 'mlflow[auth]')", "no module mlflow")
    if not (Path(mlflow_spec.origin).parent / "server" / "auth" / "__init__.py").exists():
        require("MLflow's basic-auth app (pip install 'mlflow[auth]')", "no mlflow.server.auth")
    for module in ("flask_wtf", "requests"):
        if importlib.util.find_spec(module) is None:
            require("MLflow with auth (pip install 'mlflow[auth]')", f"no module {module}")
    try:
        server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    except (OSError, RuntimeError, TimeoutError) as exc:
        require("mlflow server --app-name basic-auth", exc)
    try:
        yield server
    finally:
        server.stop()
