"""Stage names from flow code are the names the orchestrator gives the run: Prefect's
``FLOW/TASK`` (checked against Prefect's own objects) and Airflow's ``DAG_ID/TASK_ID``."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from leaseline.plan import plan

FLOWS = textwrap.dedent(
    """
    from prefect import flow, task

    @task
    def embed_docs():
        return "vault://secret/llm/openai#api_key"

    @task(name="fetch-rows")
    def rows():
        return "vault://database/creds/reader"

    @task
    def helper_task():
        return "vault://secret/ml/helper#k"

    @task
    def outer():
        helper_task()  # a task run inside a task run: its stage is still FLOW/helper_task

    @flow
    def nightly_train():
        key = "vault://secret/ml/flow-level#k"  # read by the flow itself
        rows.submit()
        embed_docs.map([1, 2])
        outer()

    @flow(name="Weekly Eval")
    def weekly():
        embed_docs.with_options(name="embed-weekly")()
        nightly_train()  # a subflow: a flow run of its own, its tasks stay its own
    """
)


def by_name(plans: list[Any]) -> dict[str, Any]:
    return {p.stage.name: p for p in plans}


def load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"plan_flows_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_prefect_stage_names_are_prefects_own_flow_and_task_names(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    plans = by_name(plan([tmp_path]))
    assert set(plans) == {
        "nightly-train",
        "nightly-train/fetch-rows",
        "nightly-train/embed_docs",
        "nightly-train/helper_task",  # through outer, which itself names no reference
        "Weekly Eval/embed-weekly",
    }
    assert plans["nightly-train"].stage.kind == "flow"
    assert plans["nightly-train"].stage.references == {"vault://secret/ml/flow-level#k"}
    assert plans["nightly-train/helper_task"].stage.kind == "flow/task"
    assert plans["nightly-train/helper_task"].stage.references == {"vault://secret/ml/helper#k"}
    # the names are Prefect's: the flow and task objects Prefect builds from the same code
    module = load(tmp_path / "flows.py")
    assert module.nightly_train.name == "nightly-train"
    assert module.weekly.name == "Weekly Eval"
    assert module.embed_docs.name == "embed_docs"
    assert module.rows.name == "fetch-rows"
    assert module.embed_docs.with_options(name="embed-weekly").name == "embed-weekly"


def test_a_task_in_another_file_is_a_stage_of_the_flow_that_imports_it(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(
        'from prefect import task\n\n@task\ndef score():\n    return "vault://secret/ml/score#k"\n'
    )
    (tmp_path / "flows.py").write_text(
        "from prefect import flow\nfrom pipeline.tasks import score as run_score\n\n"
        "@flow\ndef evaluate():\n    run_score()\n"
    )
    plans = by_name(plan([tmp_path]))
    assert set(plans) == {"evaluate/score"}
    assert plans["evaluate/score"].stage.source == str(tmp_path / "tasks.py")

    alone = by_name(plan([tmp_path / "tasks.py"]))
    assert set(alone) == {"score"}
    assert alone["score"].stage.kind == "task"
    assert alone["score"].stage.notes == [
        "task score is called by no flow or DAG among the files planned: at run time its stage "
        "is FLOW/score; plan it with the flow that calls it"
    ]


def test_an_airflow_task_defined_outside_the_dag_is_a_stage_of_the_dag(tmp_path: Path) -> None:
    (tmp_path / "dag.py").write_text(
        textwrap.dedent(
            """
            from airflow.sdk import dag, task

            @task(task_id="extract-rows")
            def extract():
                return "vault://database/creds/etl"

            @dag(dag_id="etl")
            def pipeline():
                extract()

            pipeline()
            """
        )
    )
    plans = by_name(plan([tmp_path]))
    assert set(plans) == {"etl/extract-rows"}
    assert plans["etl/extract-rows"].stage.kind == "dag/task"


@pytest.mark.parametrize(
    ("code", "note"),
    [
        ("SecretReference.load(name)", "line 6: SecretReference.load with a computed name"),
        ("await SR.aload(f'k-{n}')", "line 6: SR.aload with a computed name"),
    ],
)
def test_a_block_loaded_by_a_computed_name_is_a_note(tmp_path: Path, code: str, note: str) -> None:
    (tmp_path / "flow.py").write_text(
        "from leaseline.prefect import SecretReference, SecretReference as SR\n"
        "from prefect import flow\n\n@flow\n"
        f"async def run(name, n):\n    {code}\n"
    )
    [only] = plan([tmp_path])
    assert only.stage.name == "run"
    assert only.stage.notes == [f"{note}: its block is not planned"]


def test_a_block_named_by_a_parameter_is_resolved_per_call(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(
        textwrap.dedent(
            """
            from leaseline.prefect import DatabaseCredentials, SecretReference
            from prefect import flow, task

            @task
            def load(db_block, key_block="openai"):
                DatabaseCredentials.load(db_block)
                SecretReference.load(name=key_block)

            @flow
            def nightly(db_block: str = "training-db", other: str = "x"):
                load(db_block)  # the flow parameter's default, passed on
                load.submit("eval-db", key_block="eval-key")
                SecretReference.load(other)

            @flow
            def adhoc(name):
                load(name)
            """
        )
    )
    plans = by_name(plan([tmp_path]))
    assert plans["nightly/load"].stage.blocks == {
        ("leaseline-database-credentials", "training-db"),
        ("leaseline-database-credentials", "eval-db"),
        ("leaseline-secret-reference", "openai"),
        ("leaseline-secret-reference", "eval-key"),
    }
    assert plans["nightly"].stage.blocks == {("leaseline-secret-reference", "x")}
    assert plans["nightly"].stage.notes[:1] == [
        "line 14: SecretReference.load(other): planned for the flow parameter's default 'x'; a "
        "run given another other loads another block"
    ]
    assert plans["adhoc/load"].stage.blocks == {("leaseline-secret-reference", "openai")}
    assert plans["adhoc/load"].stage.notes[:1] == [
        "line 7: DatabaseCredentials.load(db_block) in task load: adhoc passes no known name for "
        "db_block: its block is not planned"
    ]
