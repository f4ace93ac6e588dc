"""``leaseline plan``: references per stage from files, and the least policy for each."""

from __future__ import annotations

import importlib.util
import json
import tempfile
import textwrap
from pathlib import Path

import pytest
from leaseline.plan import AirflowMapping, plan
from leaseline.plan._policy import iam_policy, vault_grants

from tests.canary import CanaryFixture
from tests.cli.conftest import base_env, leaseline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOKEN_SELF = [
    ("auth/token/lookup-self", ("read",)),
    ("auth/token/renew-self", ("update",)),
    ("auth/token/revoke-self", ("update",)),
    ("auth/token/create", ("update",)),
]
LEASES = [("sys/leases/renew", ("update",)), ("sys/leases/revoke", ("update",))]


def readme_backend_kwargs() -> dict[str, object]:
    """The ``[secrets] backend_kwargs`` line of examples/airflow/README.md."""
    text = (EXAMPLES / "airflow" / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("backend_kwargs = "))
    return dict(json.loads(line.split("=", 1)[1]))


def grants(stage_plan: object) -> list[tuple[str, tuple[str, ...]]]:
    return [(g.path, g.capabilities) for g in stage_plan.grants]  # type: ignore[attr-defined]


def by_name(plans: list[object]) -> dict[str, object]:
    return {p.stage.name: p for p in plans}  # type: ignore[attr-defined]


def test_example_dag_task_gets_exact_kv_and_creds_paths() -> None:
    mapping = AirflowMapping.from_kwargs(readme_backend_kwargs())
    plans = by_name(plan([EXAMPLES / "airflow"], airflow=mapping))
    train = plans["llm_training/train"]
    assert train.stage.kind == "dag/task"  # type: ignore[attr-defined]
    assert grants(train) == [
        ("database/creds/etl", ("read",)),
        ("secret/data/airflow/variables/llm_api_key", ("read",)),
        *LEASES,
        *TOKEN_SELF,
    ]
    assert train.policy == "leaseline-llm_training-train"  # type: ignore[attr-defined]
    assert any("KV v2" in n for n in train.notes)  # type: ignore[attr-defined]


def test_each_task_of_a_dag_is_its_own_stage(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(
        textwrap.dedent(
            """
            from airflow.sdk import BaseHook, Variable, dag, task

            @dag(dag_id="two_steps")
            def pipeline():
                @task
                def load():
                    return BaseHook.get_connection("warehouse")

                @task.virtualenv(task_id="score")
                def evaluate():
                    return Variable.get("llm_key")

                @task
                def report():
                    return Variable.get("other")  # not matched by the pattern: not leaseline's

                load() >> evaluate() >> report()

            pipeline()
            """
        )
    )
    mapping = AirflowMapping.from_kwargs(
        {
            "variables_ref": "vault://secret/ml/{key}#value",
            "variables_lookup_pattern": "^llm_",
            "connections_ref": "vault://database/creds/{conn_id}",
        }
    )
    plans = by_name(plan([tmp_path], airflow=mapping))
    assert set(plans) == {"two_steps/load", "two_steps/score", "two_steps/report"}
    assert grants(plans["two_steps/load"])[0] == ("database/creds/warehouse", ("read",))
    assert grants(plans["two_steps/score"]) == [("secret/data/ml/llm_key", ("read",)), *TOKEN_SELF]
    assert plans["two_steps/report"].grants == []  # type: ignore[attr-defined]
    assert "maps to no reference" in plans["two_steps/report"].stage.notes[0]  # type: ignore[attr-defined]


def test_a_dag_without_backend_kwargs_says_its_lookups_are_unmapped() -> None:
    plans = by_name(plan([EXAMPLES / "airflow"]))
    notes = plans["llm_training/train"].stage.notes  # type: ignore[attr-defined]
    assert any("Variable 'llm_api_key'" in n and "--airflow-backend-kwargs" in n for n in notes)
    assert any("Connection 'training_db'" in n for n in notes)


def test_prefect_flow_tasks_are_stages_of_their_own(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(
        textwrap.dedent(
            """
            from leaseline.prefect import SecretReference
            from prefect import flow, task

            @task
            def embed():
                return SecretReference(ref="vault://secret/llm/openai#api_key").get()

            @task(name="fetch-rows")
            def rows():
                return SecretReference(ref="aws-sm://prod/warehouse#password").get()

            @flow
            def nightly():
                rows(); embed()
            """
        )
    )
    plans = by_name(plan([tmp_path]))
    # FLOW/TASK with Prefect's own names: what the flow run's task runs are called
    assert set(plans) == {"nightly/embed", "nightly/fetch-rows"}
    assert plans["nightly/embed"].stage.kind == "flow/task"  # type: ignore[attr-defined]
    assert grants(plans["nightly/embed"])[0] == ("secret/data/llm/openai", ("read",))
    assert plans["nightly/embed"].iam is None  # type: ignore[attr-defined]
    assert plans["nightly/fetch-rows"].grants == []  # type: ignore[attr-defined]
    assert plans["nightly/fetch-rows"].iam["Statement"][0]["Resource"] == [  # type: ignore[attr-defined]
        "arn:aws:secretsmanager:*:*:secret:prod/warehouse-??????"
    ]


def compile_example_pipeline(path: Path) -> None:
    spec = importlib.util.spec_from_file_location("kfp_example", EXAMPLES / "kfp" / "pipeline.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["compile", str(path)]) == 0


def test_compiled_kfp_spec_gives_each_component_its_references(tmp_path: Path) -> None:
    compile_example_pipeline(tmp_path / "pipeline.yaml")
    plans = by_name(plan([tmp_path / "pipeline.yaml"]))
    assert set(plans) == {"leaseline-training/prepare-data", "leaseline-training/train"}
    prepare, train = plans["leaseline-training/prepare-data"], plans["leaseline-training/train"]
    assert prepare.stage.references == {  # type: ignore[attr-defined]
        "vault://database/creds/reader#username",
        "vault://database/creds/reader#password",
    }
    # train's reference is in its component's code (leaseline.kfp.component(secrets=...))
    assert train.stage.references == {"vault://secret/llm/openai#api_key"}  # type: ignore[attr-defined]
    assert grants(prepare) == [("database/creds/reader", ("read",)), *LEASES, *TOKEN_SELF]
    assert grants(train) == [("secret/data/llm/openai", ("read",)), *TOKEN_SELF]


def test_manifest_and_aliases(tmp_path: Path) -> None:
    (tmp_path / "train.toml").write_text(
        '[env]\nOPENAI_API_KEY = "vault://secret/llm/openai#api_key"\n'
        '[files]\nPGPASSFILE = "vault://kv1/db#pgpass"\n'
    )
    (tmp_path / "leaseline.toml").write_text(
        '[aliases]\nhf = "aws-ssm:///ml/hf/token"\n[stores.vault]\naddr = "http://127.0.0.1:1"\n'
    )
    plans = by_name(plan([tmp_path], mounts={"secret/": 2, "kv1/": 1}))
    assert plans["train"].stage.kind == "manifest"  # type: ignore[attr-defined]
    assert grants(plans["train"]) == [
        ("kv1/db", ("read",)),  # KV v1: the path as it is
        ("secret/data/llm/openai", ("read",)),
        *TOKEN_SELF,
    ]
    assert plans["train"].notes == []  # type: ignore[attr-defined]  # the mounts were known
    assert plans["leaseline.aliases"].iam["Statement"] == [  # type: ignore[attr-defined]
        {
            "Sid": "SsmGetparameter",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter"],
            "Resource": ["arn:aws:ssm:*:*:parameter/ml/hf/token"],
        }
    ]


def test_named_vault_store_and_server_mounts() -> None:
    plan_ = vault_grants(
        ["prod://database/creds/etl#password", "prod://kv/app#k", "vault://other/x"],
        vault_stores={"prod"},
        mounts={"database/": None, "kv/": 2},
    )
    assert [(g.path, g.capabilities) for g in plan_.grants] == [
        ("database/creds/etl", ("read",)),
        ("kv/data/app", ("read",)),
        *LEASES,
        *TOKEN_SELF,
    ]


def test_iam_names_exact_arns() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/openai-AbCdEf"
    role = "arn:aws:iam::123456789012:role/train"
    doc = iam_policy(
        [f"aws-sm://{arn}#api_key", f"aws-sts://{role}?duration=900", "aws-ssm:///ml/k"],
        store_types={},
        region="eu-west-1",
        account="123456789012",
    )
    assert doc is not None
    assert {s["Action"][0]: s["Resource"] for s in doc["Statement"]} == {
        "secretsmanager:GetSecretValue": [arn],
        "ssm:GetParameter": ["arn:aws:ssm:eu-west-1:123456789012:parameter/ml/k"],
        "sts:AssumeRole": [role],
    }


def test_cli_formats(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    kwargs = json.dumps(readme_backend_kwargs())
    args = ["plan", str(EXAMPLES / "airflow"), "--airflow-backend-kwargs", kwargs]
    hcl = leaseline(*args, env=env)
    assert hcl.returncode == 0, hcl.stderr
    assert "# policy leaseline-llm_training-train" in hcl.stdout
    assert 'path "secret/data/airflow/variables/llm_api_key" {' in hcl.stdout
    doc = json.loads(leaseline(*args, "--format", "json", env=env).stdout)
    assert doc[0]["stage"] == "llm_training/train"
    assert doc[0]["vault_policy"].startswith('path "database/creds/etl" {')
    table = leaseline(*args, "--format", "table", env=env).stdout
    rows = [line.split() for line in table.splitlines()]
    assert [
        "llm_training/train",
        "vault://database/creds/etl",
        "read",
        "database/creds/etl",
    ] in rows
    assert ["llm_training/train", "-", "update", "auth/token/create"] in rows


@pytest.mark.parametrize("bad", ["[1, 2]", "{nope"])
def test_cli_refuses_bad_backend_kwargs(tmp_path: Path, bad: str) -> None:
    result = leaseline(
        "plan", str(EXAMPLES / "airflow"), "--airflow-backend-kwargs", bad, env=base_env(tmp_path)
    )
    assert result.returncode == 2
    assert "--airflow-backend-kwargs" in result.stderr


def test_a_path_under_no_mount_the_server_named_is_assumed_kv_v2_and_noted() -> None:
    plan_ = vault_grants(["vault://gone/app#k"], mounts={"secret/": 2})
    assert plan_.grants[0].path == "gone/data/app"
    assert plan_.notes == [
        "gone/ taken as KV v2 (the server named no mount for it: missing, or hidden from the token)"
    ]


def test_apply_refuses_two_stages_that_would_share_a_policy_name(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "flow.py").write_text(
            f'from prefect import task\n\n@task\ndef step():\n    return "vault://secret/{folder}#k"\n'
        )
    plans = by_name(plan([tmp_path / "a"]))
    assert plans["step"].notes == [  # type: ignore[attr-defined]
        "secret/ taken as KV v2 (no server asked): pass --addr to look the mounts up"
    ]
    result = leaseline(
        "plan", str(tmp_path), "--apply", "--addr", "http://127.0.0.1:9", env=base_env(tmp_path)
    )
    assert result.returncode == 2
    assert "share the policy name(s) leaseline-step" in result.stderr
    assert "nothing was written" in result.stderr


def test_classic_operators_in_a_with_dag_block_are_stages(tmp_path: Path) -> None:
    (tmp_path / "classic.py").write_text(
        textwrap.dedent(
            """
            from airflow import DAG
            from airflow.models import Variable
            from airflow.providers.standard.operators.bash import BashOperator
            from airflow.providers.standard.operators.python import PythonOperator

            def fetch():
                return Variable.get("llm_key")

            def unrelated():
                return "vault://secret/shared/thing#x"

            with DAG("classic", schedule=None) as dag:
                PythonOperator(task_id="fetch", python_callable=fetch)
                BashOperator(
                    task_id="export",
                    bash_command="leaseline run -- ./export.sh",
                    env={"PGPASSWORD": "vault://database/creds/exporter#password"},
                )
            """
        )
    )
    mapping = AirflowMapping.from_kwargs({"variables_ref": "vault://secret/ml/{key}#value"})
    plans = by_name(plan([tmp_path], airflow=mapping))
    assert plans["classic/fetch"].stage.references == {"vault://secret/ml/llm_key#value"}  # type: ignore[attr-defined]
    assert plans["classic/export"].stage.references == {  # type: ignore[attr-defined]
        "vault://database/creds/exporter#password"
    }
    assert "classic" not in plans  # the DAG itself uses nothing outside its tasks
    assert plans["classic.py"].stage.references == {"vault://secret/shared/thing#x"}  # type: ignore[attr-defined]


def test_urls_and_unknown_schemes_are_not_references_and_never_printed(
    canary: CanaryFixture, tmp_path: Path
) -> None:
    password = canary.new("redis")
    # The code under scan holds the password on purpose (a URL committed with it): it lives
    # outside tmp_path, which the canary plugin searches, and is deleted at the end.
    with tempfile.TemporaryDirectory() as code:
        (Path(code) / "job.py").write_text(
            "from prefect import task\n\n@task\ndef step():\n"
            f'    cache = "redisx://:{password}@cache:6379"\n'
            '    other = "custom://host/x"\n'
            '    return "kv://ml-keys/openai#api_key", cache, other\n'
        )
        assert plan([code]) == []
        plans = by_name(plan([code], stores={"kv": {"type": "azure-kv"}}))
        assert plans["step"].stage.references == {"kv://ml-keys/openai#api_key"}  # type: ignore[attr-defined]
        result = leaseline("plan", code, "--format", "json", env=base_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert password not in result.stdout + result.stderr


def test_a_manifest_value_that_is_an_alias_plans_its_target(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text('[env]\nHF_TOKEN = "hf"\nOTHER = "nope"\n')
    plans = by_name(plan([tmp_path], aliases={"hf": "aws-ssm:///ml/hf/token"}))
    assert plans["job"].stage.references == {"aws-ssm:///ml/hf/token"}  # type: ignore[attr-defined]
    assert plans["job"].stage.notes == [  # type: ignore[attr-defined]
        "OTHER: not a reference to a store, nor a configured alias"
    ]
