"""Per-stage child tokens under a real Airflow (``airflow dags test``) and the real OpenBao.

``leaseline plan --apply`` writes each task's policy and the token role; the worker then logs in
with a token that may only make tokens (``worker_policy``: it reads nothing itself), and each
task's reads are made with a token holding only its own stage's policy, as OpenBao's audit log
shows. A task changed to read another task's secret is refused by the server with a message
naming the path, the stage and its policy; the other task still succeeds.
"""

from __future__ import annotations

import secrets
import textwrap
from pathlib import Path
from typing import Any

import pytest
from leaseline.plan._server import worker_policy

from tests.airflow.conftest import EXAMPLE_DAGS, AirflowSite
from tests.airflow.test_integration import _assert_no_leases, _states
from tests.canary import CanaryFixture
from tests.cli.conftest import base_env, leaseline

pytestmark = pytest.mark.integration

PER_STAGE = {"LEASELINE_STORES__VAULT__CHILD_TOKEN__POLICIES": "per-stage"}


def plan_apply(site: AirflowSite, path: Path, tmp_path: Path) -> str:
    kwargs = site.env["AIRFLOW__SECRETS__BACKEND_KWARGS"]
    env = {**base_env(tmp_path), **site.bao.env()}
    result = leaseline(
        "plan", str(path), "--airflow-backend-kwargs", kwargs, "--addr", site.bao.addr,
        "--apply", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wrote token role leaseline" in result.stderr
    assert 'path "auth/token/create/leaseline"' in result.stderr  # the worker's login policy
    return result.stderr


def requests_for(site: AirflowSite, path: str, since: int) -> list[dict[str, Any]]:
    return [
        line
        for line in site.bao.audit_lines()[since:]
        if line.get("type") == "request" and line["request"].get("path") == path
    ]


def test_plan_apply_then_the_example_dag_reads_with_its_stage_token(
    airflow_site: AirflowSite, tmp_path: Path
) -> None:
    applied = plan_apply(airflow_site, EXAMPLE_DAGS, tmp_path)
    assert "wrote policy leaseline-llm_training-train" in applied
    worker = airflow_site.bao.token_with_policy(worker_policy("leaseline"))
    seen = len(airflow_site.bao.audit_lines())

    proc = airflow_site.run(
        "dags", "test", "llm_training", extra_env={"VAULT_TOKEN": worker, **PER_STAGE}
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert _states(airflow_site, "llm_training") == {"train": "success"}
    assert "training on 3 rows" in output
    # every read the task made went with its own stage's token, and only that policy
    for path in ("secret/data/airflow/variables/llm_api_key", "database/creds/etl"):
        reads = requests_for(airflow_site, path, seen)
        assert reads, path
        for line in reads:
            assert line["auth"]["policies"] == ["default", "leaseline-llm_training-train"]
            assert line["auth"]["metadata"]["stage"] == "llm_training/train"
    creates = requests_for(airflow_site, "auth/token/create/leaseline", seen)
    assert len(creates) == 1  # one token for the one stage
    _assert_no_leases(airflow_site)  # revoked at the task's end, with its token


def two_task_dag(folder: Path, dag_id: str, score_reads: str) -> Path:
    path = folder / f"{dag_id}.py"
    path.write_text(
        textwrap.dedent(
            f"""
            import logging

            from airflow.sdk import Variable, dag, task

            log = logging.getLogger(__name__)

            @dag(dag_id="{dag_id}", schedule=None)
            def pipeline():
                @task
                def load():
                    log.info("load got %d characters", len(Variable.get("llm_{dag_id}_load")))

                @task
                def score():
                    log.info("score got %d characters", len(Variable.get("{score_reads}")))

                load() >> score()

            pipeline()
            """
        )
    )
    return path


def test_a_task_changed_to_read_another_stages_secret_is_denied_and_the_other_succeeds(
    airflow_site: AirflowSite, canary: CanaryFixture, tmp_path: Path
) -> None:
    dag_id = f"stages_{secrets.token_hex(4)}"
    kv = airflow_site.bao.client().secrets.kv.v2
    for task in ("load", "score"):
        kv.create_or_update_secret(
            path=f"airflow/variables/llm_{dag_id}_{task}",
            secret={"value": canary.new(task)},
            mount_point="secret",
        )
    planned = tmp_path / "planned"
    planned.mkdir()
    plan_apply(airflow_site, two_task_dag(planned, dag_id, f"llm_{dag_id}_score"), tmp_path)
    # the copy that runs: score now reads load's secret
    dags = Path(airflow_site.env["AIRFLOW__CORE__DAGS_FOLDER"])
    changed = two_task_dag(dags, dag_id, f"llm_{dag_id}_load")
    worker = airflow_site.bao.token_with_policy(worker_policy("leaseline"))
    try:
        proc = airflow_site.run(
            "dags", "test", dag_id, extra_env={"VAULT_TOKEN": worker, **PER_STAGE}
        )
    finally:
        changed.unlink()
    output = proc.stdout + proc.stderr
    assert _states(airflow_site, dag_id) == {"load": "success", "score": "failed"}, output[-3000:]
    assert "load got" in output
    denial = next(line for line in output.splitlines() if "permission denied on" in line)
    assert f"secret/data/airflow/variables/llm_{dag_id}_load" in denial
    assert f"stage '{dag_id}/score'" in denial
    assert f"leaseline-{dag_id}-score" in denial
    assert "leaseline plan --apply" in denial
    assert worker not in output
