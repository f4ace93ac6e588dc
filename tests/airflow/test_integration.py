"""The example DAG and the backend under a real Airflow CLI, against the real OpenBao and PostgreSQL.

One Airflow home per module (``airflow db migrate`` once); each CLI run is a subprocess with the
backend configured through environment variables only, as a worker container would be.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.airflow.conftest import AirflowSite

pytestmark = pytest.mark.integration

VAULT_DB_USER = re.compile(r"v-[\w-]*-etl-\w+")


def _states(site: AirflowSite, dag_id: str) -> dict[str, str]:
    with sqlite3.connect(site.home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)
        ).fetchall()
    return {str(task): str(state) for task, state in rows}


def _events(site: AirflowSite, task_id: str) -> list[dict[str, object]]:
    return [
        e
        for e in site.audit_events()
        if (e.get("actor") or {}).get("airflow", {}).get("task_id") == task_id  # type: ignore[union-attr]
    ]


def _assert_no_leases(site: AirflowSite, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (site.live_etl_leases() or site.etl_roles()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert site.live_etl_leases() == [], "OpenBao still holds database/creds/etl leases"
    assert site.etl_roles() == set(), "PostgreSQL still has the dynamic etl roles"


def test_dags_test_example_reads_variable_and_queries_postgres(airflow_site: AirflowSite) -> None:
    proc = airflow_site.run("dags", "test", "llm_training")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert _states(airflow_site, "llm_training") == {"train": "success"}
    assert "training on 3 rows" in output  # the real PostgreSQL, through the dynamic login
    assert "LLM key: ***" in output
    assert "connected as *** with password ***" in output
    assert airflow_site.api_key not in output
    assert not VAULT_DB_USER.search(output)

    events = _events(airflow_site, "train")
    kinds = [e["event"] for e in events]
    assert "lease_issue" in kinds and "lease_revoke" in kinds
    issue = next(e for e in events if e["event"] == "lease_issue")
    assert issue["ref"] == "vault://database/creds/etl"
    assert issue["fields"] == ["password", "username"]  # login and password: one lease, one read
    actor = issue["actor"]["airflow"]  # type: ignore[index]
    assert actor["dag_id"] == "llm_training"
    assert actor["run_id"].startswith("manual__")
    assert actor["try_number"] == 1
    revoke = next(e for e in events if e["event"] == "lease_revoke")
    assert revoke["lease_id"] == issue["lease_id"] and revoke["outcome"] == "ok"
    _assert_no_leases(airflow_site)


def test_tasks_test_output_goes_through_airflows_masker(airflow_site: AirflowSite) -> None:
    proc = airflow_site.run("tasks", "test", "leaseline_mask", "print_secrets")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0
    # print(), not logging: only Airflow's masker (fed by leaseline, login included) hides these.
    assert "PRINTED key=*** login=*** pw=***" in output
    assert airflow_site.api_key not in output
    assert not VAULT_DB_USER.search(output)
    _assert_no_leases(airflow_site)


def test_denied_variable_fails_the_task_and_timeout_revokes(airflow_site: AirflowSite) -> None:
    airflow_site.marker.unlink(missing_ok=True)
    proc = airflow_site.run("dags", "test", "leaseline_checks")
    output = proc.stdout + proc.stderr
    states = _states(airflow_site, "leaseline_checks")
    assert states == {"read_forbidden": "failed", "lease_then_timeout": "failed"}, states
    # denied, not "missing": Airflow did not fall through to AIRFLOW_VAR_FORBIDDEN_KEY
    assert "AirflowSecretsBackendAccessDenied" in output
    assert not airflow_site.marker.exists()
    denied = [e for e in _events(airflow_site, "read_forbidden") if e["outcome"] == "denied"]
    assert denied and denied[0]["ref"] == "vault://secret/airflow/variables/forbidden_key"
    # execution_timeout fired while the task held a dynamic lease: revoked at the task's end
    assert "AirflowTaskTimeout" in output
    kinds = [e["event"] for e in _events(airflow_site, "lease_then_timeout")]
    assert "lease_issue" in kinds and "lease_revoke" in kinds
    _assert_no_leases(airflow_site)


def test_sigterm_revokes_the_task_leases(airflow_site: AirflowSite) -> None:
    airflow_site.marker.unlink(missing_ok=True)
    proc = airflow_site.popen("tasks", "test", "leaseline_sigterm", "lease_then_wait")
    try:
        deadline = time.monotonic() + 120
        while not airflow_site.marker.exists():
            assert proc.poll() is None, "airflow tasks test ended before the task took its lease"
            assert time.monotonic() < deadline, "the task never took its lease"
            time.sleep(0.2)
        assert airflow_site.live_etl_leases(), "the task holds a lease while it runs"
        assert airflow_site.etl_roles()
        proc.send_signal(signal.SIGTERM)
        _assert_no_leases(airflow_site)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    kinds = [e["event"] for e in _events(airflow_site, "lease_then_wait")]
    assert "lease_revoke" in kinds


def test_providers_cli_lists_leaseline(airflow_site: AirflowSite) -> None:
    listed = airflow_site.run("providers", "list", "-o", "plain")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "leaseline" in listed.stdout
    secrets = airflow_site.run("providers", "secrets", "-o", "plain")
    assert secrets.returncode == 0, secrets.stderr[-2000:]
    assert "leaseline.airflow.LeaselineBackend" in secrets.stdout
