"""A real Airflow installation (temp AIRFLOW_HOME, sqlite) wired to the real OpenBao.

``airflow_site`` (module scope) seeds OpenBao, makes the dynamic role ``etl`` on the session's
PostgreSQL, writes the backend config into the environment, runs ``airflow db migrate`` once and
returns an :class:`AirflowSite` whose ``run(...)`` calls the Airflow CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.canary import CanaryFixture, registry
from tests.conftest import require
from tests.servers import DatabaseEngine, OpenBao

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


__all__ = ["AirflowSite", "CanaryFixture"]
