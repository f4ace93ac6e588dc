"""A real Airflow installation (temp AIRFLOW_HOME, sqlite) wired to the real OpenBao.

``airflow_site`` (module scope) seeds OpenBao, makes the dynamic role ``etl`` on the session's
PostgreSQL, writes the backend config into the environment, runs ``airflow db migrate`` once and
returns an :class:`AirflowSite` whose ``run(...)`` calls the Airflow CLI in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.canary import CanaryFixture, registry
from tests.conftest import require
from tests.servers import ComponentMissing, DatabaseEngine, OpenBao

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "examples" / "airflow" / "dags"
TEST_DAGS = Path(__file__).resolve().parent / "dags"

#: What the Airflow workers' token may do: read the Airflow KV tree, issue `etl` credentials,
#: manage its leases and child token; the `forbidden_*` variables are explicitly denied.
POLICY = """
path "secret/data/airflow/*"                      { capabilities = ["read"] }
path "secret/data/airflow/variables/forbidden_*"  { capabilities = ["deny"] }
path "database/creds/etl"                         { capabilities = ["read"] }
path "sys/leases/renew"                           { capabilities = ["update"] }
path "sys/leases/revoke"                          { capabilities = ["update"] }
path "auth/token/create"                          { capabilities = ["create", "update"] }
"""


@dataclass
class AirflowSite:
    home: Path
    env: dict[str, str]
    bao: OpenBao
    engine: DatabaseEngine
    api_key: str
    audit_log: Path
    marker: Path
    outputs: list[str] = field(default_factory=list)

    def run(
        self, *args: str, timeout: float = 180, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]

    def live_etl_leases(self) -> list[str]:
        """Lease ids OpenBao still holds under ``database/creds/etl/``."""
        client = self.bao.client()
        try:
            resp = client.adapter.request("LIST", "v1/sys/leases/lookup/database/creds/etl/")
        except Exception:  # 404: no lease left
            return []
        body = resp if isinstance(resp, dict) else resp.json()
        return list((body.get("data") or {}).get("keys") or [])

    def etl_roles(self) -> set[str]:
        """PostgreSQL roles OpenBao created for the ``etl`` role (``v-<token>-etl-...``)."""
        return {r for r in self.engine.pg.roles() if "-etl-" in r}


@pytest.fixture(autouse=True)
def _forwarding_to_airflows_masker_ends_with_the_test() -> Iterator[None]:
    """A backend made in this (pytest) process forwards every later value, in all its forms, to
    Airflow's masker, which recompiles one regex of all its patterns per new mask: left on, the
    rest of the session (20 threads reissuing leases in tests/core) slowed to minutes
    per test. Each test that makes a backend installs the forwarding again."""
    yield
    from leaseline import masking

    task = sys.modules.get("leaseline.airflow._task")
    if task is not None:
        listeners = masking.masker()._listeners
        while task._to_airflow_masker in listeners:
            listeners.remove(task._to_airflow_masker)
        task._installed = False


@pytest.fixture(scope="module")
def airflow_site(
    request: pytest.FixtureRequest,
    openbao: OpenBao,
    vault_db: DatabaseEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowSite]:
    if shutil.which("airflow") is None:
        try:
            import airflow  # noqa: F401
        except ImportError as exc:
            require("Airflow (pip install 'leaseline[airflow]')", exc)
    reg = registry(request.config)
    api_key = reg.new("llm-key", owner="tests/airflow")
    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLE_DAGS / "llm_training.py", dags)
    shutil.copy(TEST_DAGS / "leaseline_checks.py", dags)
    reg.watch(home)

    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret(
        path="airflow/variables/llm_api_key", secret={"value": api_key}, mount_point="secret"
    )
    client.secrets.kv.v2.create_or_update_secret(
        path="airflow/variables/forbidden_key",
        secret={"value": reg.new("forbidden", owner="tests/airflow")},
        mount_point="secret",
    )
    vault_db.create_db_role("etl", default_ttl="10m", max_ttl="1h")
    token = openbao.token_with_policy(POLICY, ttl="2h", name="airflow-worker")

    audit_log = home / "leaseline-audit.jsonl"
    backend_kwargs = {
        "variables_ref": "vault://secret/airflow/variables/{key}",
        "variables_lookup_pattern": r"^(llm_|forbidden_)",
        "connections": {
            "training_db": {
                "conn_type": "postgres",
                "host": vault_db.pg.host,
                "port": vault_db.pg.port,
                "schema": "postgres",
                "login": "vault://database/creds/etl#username",
                "password": "vault://database/creds/etl#password",
            }
        },
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "VAULT_", "BAO_", "LEASELINE_", "PYTEST_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__SECRETS__BACKEND": "leaseline.airflow.LeaselineBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(backend_kwargs),
            # A fallback the denied variable must NOT fall through to:
            "AIRFLOW_VAR_FORBIDDEN_KEY": "fallback-value-must-not-be-used",
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": token,
            "LEASELINE_AUDIT__SINK": f"file://{audit_log}",
            "LEASELINE_TEST_MARKER": str(home / "marker.txt"),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    site = AirflowSite(
        home=home,
        env=env,
        bao=openbao,
        engine=vault_db,
        api_key=api_key,
        audit_log=audit_log,
        marker=home / "marker.txt",
    )
    migrate = site.run("db", "migrate", timeout=300)
    if migrate.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{reg.redact(migrate.stderr[-4000:])}")
    yield site


# -- Airflow as deployed (session scope: started once, one DAG run) ---------------------------

DEPLOYED_DAGS = Path(__file__).resolve().parent / "deployed_dags"
DEPLOYED_DAG = "leaseline_deployed"


@dataclass
class DeployedRun:
    """The deployment, and what one run of ``leaseline_deployed`` left behind."""

    deployment: Any = field(repr=False)  # tests.airflow.deployment.AirflowDeployment
    run: dict[str, Any] = field(repr=False)
    task_instances: dict[str, dict[str, Any]] = field(repr=False)
    creds: dict[str, dict[str, Any]] = field(repr=False)  # task_id -> its login/password
    role_last_seen: dict[str, float] = field(repr=False)  # PostgreSQL role -> last time seen
    api_key: str = field(repr=False)
    audit_log: Path = field(repr=False)

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]


def _watch_roles(engine: DatabaseEngine, seen: dict[str, float], stop: Any) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            now = time.time()
            for role in engine.pg.roles():
                if "-etl-" in role:
                    seen[role] = now
        stop.wait(0.25)


@pytest.fixture(scope="session")
def airflow_deployed(
    request: pytest.FixtureRequest,
    openbao: OpenBao,
    vault_db: DatabaseEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DeployedRun]:
    """api-server + scheduler + DAG processor + Celery worker, configured the simplest
    documented way (``[secrets]`` backend and kwargs, ``[workers] secrets_backend`` set without
    kwargs), running ``leaseline_deployed`` once; the deployment stays up for the tests."""
    from tests.airflow.deployment import AirflowDeployment
    from tests.servers.redis import Redis

    try:
        import airflow.providers.celery  # noqa: F401
    except ImportError as exc:
        require("the Celery provider (pip install apache-airflow-providers-celery)", exc)
    try:
        redis = Redis.start(tmp_path_factory.mktemp("redis"))
    except ComponentMissing as exc:
        require("redis-server", exc)
    reg = registry(request.config)
    api_key = reg.new("llm-key", owner="tests/airflow deployed")
    home = tmp_path_factory.mktemp("airflow-deployed")
    creds_dir = tmp_path_factory.mktemp("airflow-deployed-creds")  # not watched: see the DAG
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(DEPLOYED_DAGS / "leaseline_deployed.py", dags)
    reg.watch(home)
    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret(
        path="airflow/variables/llm_api_key", secret={"value": api_key}, mount_point="secret"
    )
    vault_db.create_db_role("etl", default_ttl="10m", max_ttl="1h")
    token = openbao.token_with_policy(POLICY, ttl="2h", name="airflow-deployed")
    pg = vault_db.pg
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow_deployed'"):
        pg.execute("CREATE DATABASE airflow_deployed")
    audit_log = home / "leaseline-audit.jsonl"
    backend_kwargs = {
        "variables_ref": "vault://secret/airflow/variables/{key}",
        "variables_lookup_pattern": "^llm_",
        "connections": {
            "training_db": {
                "conn_type": "postgres",
                "host": pg.host,
                "port": pg.port,
                "schema": "postgres",
                "login": "vault://database/creds/etl#username",
                "password": "vault://database/creds/etl#password",
            }
        },
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "VAULT_", "BAO_", "LEASELINE_", "PYTEST_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor,CeleryExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg://{pg.superuser}:{pg.password}@{pg.host}:{pg.port}"
                "/airflow_deployed"
            ),
            "AIRFLOW__CELERY__BROKER_URL": redis.url(0),
            "AIRFLOW__CELERY__RESULT_BACKEND": redis.url(1),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # the documented configuration: the backend and its kwargs in [secrets]; [workers]
            # names the backend too, without kwargs
            "AIRFLOW__SECRETS__BACKEND": "leaseline.airflow.LeaselineBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(backend_kwargs),
            "AIRFLOW__WORKERS__SECRETS_BACKEND": "leaseline.airflow.LeaselineBackend",
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": token,
            "LEASELINE_AUDIT__SINK": f"file://{audit_log}",
            "LEASELINE_TEST_CREDS_DIR": str(creds_dir),
            "PGSSLMODE": "disable",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    seen: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_roles, args=(vault_db, seen, stop), daemon=True)
    deployment = None
    try:
        try:
            deployment = AirflowDeployment.start(home, env)
            deployment.wait_for_dag(DEPLOYED_DAG)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"Airflow deployment did not start: {reg.redact(str(exc))}")
        watcher.start()
        run = deployment.run_dag(DEPLOYED_DAG)
        tis = deployment.task_instances(DEPLOYED_DAG, run["dag_run_id"])
        time.sleep(6)  # the role watcher sees the 5 s after the last task
        creds = {}
        for path in creds_dir.glob("*.json"):
            creds[path.stem] = json.loads(path.read_text())
            path.unlink()  # the dynamic login and password: nothing else may keep them
        yield DeployedRun(
            deployment=deployment,
            run=run,
            task_instances=tis,
            creds=creds,
            role_last_seen=seen,
            api_key=api_key,
            audit_log=audit_log,
        )
    finally:
        stop.set()
        if deployment is not None:
            deployment.stop()
        redis.stop()


__all__ = ["AirflowSite", "CanaryFixture", "DeployedRun"]
