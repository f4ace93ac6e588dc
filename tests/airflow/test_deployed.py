"""Airflow as deployed: api-server, scheduler, DAG processor, LocalExecutor and CeleryExecutor.

One deployment per session (``airflow_deployed``), configured as docs/airflow.md says, runs
``tests/airflow/deployed_dags/leaseline_deployed.py`` once: a task on the LocalExecutor
(forked by the scheduler's executor) and one on Celery (forked by a prefork pool process).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.airflow.conftest import DEPLOYED_DAG, DeployedRun
from tests.canary import encodings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _stop_when_this_module_is_done(airflow_deployed: DeployedRun) -> Iterator[None]:
    """The deployment is a session fixture, used by this module only: free its processes for
    the rest of the session as soon as the module is done."""
    yield
    airflow_deployed.deployment.stop()


TASKS = ("on_local", "on_celery")


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _values(result: DeployedRun) -> dict[str, str]:
    values = {"the Variable": result.api_key}
    for task_id, creds in result.creds.items():
        values[f"{task_id}'s login"] = creds["login"]
        values[f"{task_id}'s password"] = creds["password"]
    return values


def _leaks(text: str, values: dict[str, str]) -> list[str]:
    return [
        f"{what} ({form})"
        for what, value in values.items()
        for needle, form in encodings(value)
        if needle.decode() in text
    ]


def test_the_dag_succeeds_on_both_executors(airflow_deployed: DeployedRun) -> None:
    result = airflow_deployed
    states = {t: ti["state"] for t, ti in result.task_instances.items()}
    assert result.run["state"] == "success", (states, result.deployment.tails())
    assert states == dict.fromkeys(TASKS, "success")
    executors = {t: ti.get("executor") for t, ti in result.task_instances.items()}
    assert executors == {"on_local": "LocalExecutor", "on_celery": "CeleryExecutor"}, executors
    # the Celery task went through the broker to the worker's prefork pool
    assert "execute_workload" in result.deployment.consoles()["celery-worker"]
    assert sorted(result.creds) == sorted(TASKS), "each task was given its own dynamic login"
    assert result.creds["on_local"]["login"] != result.creds["on_celery"]["login"]


def test_no_form_of_any_value_in_task_logs_rest_logs_or_consoles(
    airflow_deployed: DeployedRun,
) -> None:
    result = airflow_deployed
    dep = result.deployment
    values = _values(result)
    assert len(values) == 5
    files = dep.log_files()
    task_logs = {p: t for p, t in files.items() if "dag_id=" + DEPLOYED_DAG in str(p)}
    assert len(task_logs) >= 2, sorted(map(str, files))
    found: dict[str, list[str]] = {}
    for path, text in files.items():
        found[str(path)] = _leaks(text, values)
    for task_id in TASKS:
        served = dep.task_log(DEPLOYED_DAG, result.run["dag_run_id"], task_id)
        # print() reached the log, masked at its source; logging too
        assert "PRINT key=*** b64=***" in served, served[-3000:]
        assert "PRINT login=*** password=*** uri=" in served
        assert "LOG key=*** b64=*** login=***" in served
        found[f"REST log of {task_id}"] = _leaks(served, values)
    for name, text in dep.consoles().items():
        found[f"{name} console"] = _leaks(text, values)
    assert {where: hits for where, hits in found.items() if hits} == {}


def test_logins_are_gone_5s_after_each_task_while_components_run(
    airflow_deployed: DeployedRun,
) -> None:
    result = airflow_deployed
    dep = result.deployment
    for task_id in TASKS:
        login = result.creds[task_id]["login"]
        end = _ts(result.task_instances[task_id]["end_date"])
        assert result.creds[task_id]["current_user"] == login  # the task logged in with it
        late = result.role_last_seen.get(login, end) - end
        assert late <= 5, f"{task_id}'s login still in PostgreSQL {late:.1f}s after the task"
    assert not {r for r in _current_roles(result) if "-etl-" in r}, "a dynamic etl role is left"
    for name in ("api-server", "scheduler", "dag-processor", "celery-worker"):
        assert dep.alive(name), f"{name} stopped: the leases were not revoked by its exit"


def _current_roles(result: DeployedRun) -> set[str]:
    import psycopg

    conn_url = result.deployment.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace(
        "postgresql+psycopg://", "postgresql://"
    )
    with psycopg.connect(conn_url, autocommit=True) as db:
        return {str(r[0]) for r in db.execute("SELECT rolname FROM pg_roles").fetchall()}


def _task_of(event: dict[str, Any]) -> str | None:
    return ((event.get("actor") or {}).get("airflow") or {}).get("task_id")


def test_every_store_request_is_the_tasks_own(airflow_deployed: DeployedRun) -> None:
    events = [e for e in airflow_deployed.audit_events() if e.get("ref")]
    assert events, "no audit events"
    refs = {"vault://database/creds/etl", "vault://secret/airflow/variables/llm_api_key"}
    about_values = [e for e in events if e["ref"] in refs]
    # no request for a task's value came from the api-server, scheduler or DAG processor
    assert {_task_of(e) for e in about_values} == set(TASKS), about_values
    issued = [e for e in about_values if e["event"] == "lease_issue"]
    assert sorted(_task_of(e) for e in issued) == sorted(TASKS)
    for event in issued:
        actor = event["actor"]["airflow"]
        assert actor["dag_id"] == DEPLOYED_DAG and actor["try_number"] == 1
        assert actor["run_id"] == airflow_deployed.run["dag_run_id"]
    revoked = {e["lease_id"] for e in about_values if e["event"] == "lease_revoke"}
    assert {e["lease_id"] for e in issued} <= revoked
    # a Variable no store has: asked once, by the task, not again by the api-server
    missing = [e for e in events if e["ref"].endswith("/llm_not_in_vault")]
    assert sorted(_task_of(e) for e in missing if e["event"] != "cache_hits") == sorted(TASKS)
