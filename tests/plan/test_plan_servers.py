"""``leaseline plan`` against the real servers: OpenBao takes the policies and enforces them per
stage, its audit log shows that planning read no secret; moto and parliament take the IAM
documents."""

from __future__ import annotations

import json
import secrets
import textwrap
import warnings
from pathlib import Path

import boto3

from tests.canary import CanaryFixture
from tests.cli.conftest import base_env, leaseline
from tests.servers import MotoServer, OpenBao

SECRET_PATH_PREFIXES = ("secret/data/", "secret/metadata/", "kv1/", "database/creds/")


def two_stage_dag(folder: Path, dag_id: str) -> None:
    (folder / f"{dag_id}.py").write_text(
        textwrap.dedent(
            f"""
            from airflow.sdk import Variable, dag, task

            @dag(dag_id="{dag_id}")
            def pipeline():
                @task
                def load():
                    return Variable.get("load_key")

                @task
                def score():
                    return Variable.get("score_key")

                load() >> score()

            pipeline()
            """
        )
    )


def test_apply_then_each_stage_reads_only_its_own_secrets(
    openbao: OpenBao, canary: CanaryFixture, tmp_path: Path
) -> None:
    dag_id = f"plan_{secrets.token_hex(4)}"
    base = f"plan-test/{dag_id}"
    kv = openbao.client().secrets.kv.v2
    for key in ("load_key", "score_key"):
        kv.create_or_update_secret(
            path=f"{base}/{key}", secret={"value": canary.new(key)}, mount_point="secret"
        )
    dags = tmp_path / "dags"
    dags.mkdir()
    two_stage_dag(dags, dag_id)
    env = {**base_env(tmp_path), **openbao.env()}
    kwargs = json.dumps({"variables_ref": f"vault://secret/{base}/{{key}}#value"})

    seen = len(openbao.audit_lines())
    result = leaseline(
        "plan", str(dags), "--airflow-backend-kwargs", kwargs, "--apply", "--addr", openbao.addr,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote policy leaseline-{dag_id}-load" in result.stderr
    assert f'path "secret/data/{base}/load_key" {{' in result.stdout
    assert "KV v2 (no server asked)" not in result.stdout  # the mount was looked up

    # plan read no secret: only the mount lookups and the policy writes reached the server
    paths = [
        line["request"]["path"]
        for line in openbao.audit_lines()[seen:]
        if line.get("type") == "request"
    ]
    assert any(p.startswith("sys/internal/ui/mounts/") for p in paths), paths
    assert f"sys/policies/acl/leaseline-{dag_id}-score" in paths
    assert not [p for p in paths if p.startswith(SECRET_PATH_PREFIXES)], paths

    client = openbao.client()
    for stage, own, other in (
        ("load", "load_key", "score_key"),
        ("score", "score_key", "load_key"),
    ):
        token = client.auth.token.create(policies=[f"leaseline-{dag_id}-{stage}"], ttl="10m")
        stage_env = {**env, "VAULT_TOKEN": token["auth"]["client_token"]}
        got = leaseline("get", f"vault://secret/{base}/{own}#value", env=stage_env)
        assert got.returncode == 0, got.stderr
        denied = leaseline("get", f"vault://secret/{base}/{other}#value", env=stage_env)
        assert denied.returncode == 4, denied.stderr
        assert f'"secret/data/{base}/{other}"' in denied.stderr


def test_plan_without_addr_sends_nothing_to_vault(openbao: OpenBao, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    two_stage_dag(dags, "offline")
    env = {**base_env(tmp_path), **openbao.env()}
    seen = len(openbao.audit_lines())
    kwargs = json.dumps({"variables_ref": "vault://secret/offline/{key}#value"})
    result = leaseline("plan", str(dags), "--airflow-backend-kwargs", kwargs, env=env)
    assert result.returncode == 0, result.stderr
    assert "taken as KV v2 (no server asked)" in result.stdout
    assert openbao.audit_lines()[seen:] == []


def iam_document(tmp_path: Path, env: dict[str, str]) -> dict[str, object]:
    (tmp_path / "flow.py").write_text(
        textwrap.dedent(
            """
            from prefect import task
            from leaseline.prefect import SecretReference

            @task
            def fetch():
                SecretReference(ref="aws-sm://prod/openai#api_key").get()
                SecretReference(ref="aws-ssm:///ml/hf/token").get()
                SecretReference(ref="aws-sts://arn:aws:iam::123456789012:role/train").get()
            """
        )
    )
    result = leaseline(
        "plan", str(tmp_path / "flow.py"), "--format", "json",
        "--aws-region", "us-east-1", "--aws-account", "123456789012", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [stage] = json.loads(result.stdout)
    return dict(stage["iam_policy"])


def test_iam_document_is_accepted_by_iam_and_clean_under_parliament(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    doc = iam_document(tmp_path, base_env(tmp_path))
    assert {s["Action"][0]: s["Resource"] for s in doc["Statement"]} == {  # type: ignore[attr-defined]
        "secretsmanager:GetSecretValue": [
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/openai-??????"
        ],
        "ssm:GetParameter": ["arn:aws:ssm:us-east-1:123456789012:parameter/ml/hf/token"],
        "sts:AssumeRole": ["arn:aws:iam::123456789012:role/train"],
    }
    iam = boto3.client(
        "iam",
        endpoint_url=moto_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=moto_server.access_key_id,
        aws_secret_access_key=moto_server.secret_access_key,
    )
    created = iam.create_policy(
        PolicyName=f"leaseline-plan-{secrets.token_hex(4)}", PolicyDocument=json.dumps(doc)
    )
    assert created["Policy"]["Arn"].startswith("arn:aws:iam::")

    with warnings.catch_warnings():  # parliament 1.6: pkg_resources, invalid escapes at import
        warnings.simplefilter("ignore")
        from parliament import analyze_policy_string

    findings = analyze_policy_string(json.dumps(doc)).findings
    assert [(f.issue, f.detail) for f in findings] == []
    # parliament does lint: an action on a resource it cannot apply to is a finding
    wrong = {**doc, "Statement": [{**doc["Statement"][1], "Resource": ["arn:aws:s3:::b"]}]}  # type: ignore[index]
    assert analyze_policy_string(json.dumps(wrong)).findings


def test_check_finds_a_policy_that_grants_more_or_less(openbao: OpenBao, tmp_path: Path) -> None:
    dag_id = f"check_{secrets.token_hex(4)}"
    dags = tmp_path / "dags"
    dags.mkdir()
    two_stage_dag(dags, dag_id)
    env = {**base_env(tmp_path), **openbao.env()}
    kwargs = json.dumps({"variables_ref": f"vault://secret/{dag_id}/{{key}}#value"})
    args = ["plan", str(dags), "--airflow-backend-kwargs", kwargs, "--addr", openbao.addr]

    missing = leaseline(*args, "--check", env=env)
    assert missing.returncode == 1
    assert f"leaseline-{dag_id}-load is missing from Vault" in missing.stderr

    assert leaseline(*args, "--apply", env=env).returncode == 0
    seen = len(openbao.audit_lines())
    same = leaseline(*args, "--check", env=env)
    assert same.returncode == 0, same.stderr
    paths = [r["request"]["path"] for r in openbao.audit_lines()[seen:] if r["type"] == "request"]
    assert f"sys/policies/acl/leaseline-{dag_id}-load" in paths
    assert not [p for p in paths if p.startswith(SECRET_PATH_PREFIXES)], paths

    client = openbao.client()
    name = f"leaseline-{dag_id}-score"
    current = client.sys.read_policy(name=name)["data"]["rules"]
    wider = current + '\npath "secret/data/*" {\n  capabilities = ["read", "list"]\n}\n'
    client.sys.create_or_update_policy(name=name, policy=wider)
    more = leaseline(*args, "--check", env=env)
    assert more.returncode == 1
    assert f'{name} grants more than planned: list, read on "secret/data/*"' in more.stderr

    narrower = current.replace(f'path "secret/data/{dag_id}/score_key"', 'path "unrelated/x"')
    client.sys.create_or_update_policy(name=name, policy=narrower)
    less = leaseline(*args, "--check", env=env)
    assert less.returncode == 1
    assert f'no read on "secret/data/{dag_id}/score_key"' in less.stderr
    assert "1 stage policy(ies) differ" in less.stderr


def test_plan_on_the_examples_asks_the_server_which_mounts_are_kv_v1_or_v2(
    openbao: OpenBao, canary: CanaryFixture, tmp_path: Path
) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    readme = (examples / "airflow" / "README.md").read_text()
    kwargs = next(ln for ln in readme.splitlines() if ln.startswith("backend_kwargs = "))
    name = f"v1-{secrets.token_hex(4)}"
    openbao.client().secrets.kv.v1.create_or_update_secret(
        path=name, secret={"pgpass": canary.new("pgpass")}, mount_point="kv1"
    )
    manifest = tmp_path / "etl.toml"
    manifest.write_text(f'[files]\nPGPASSFILE = "vault://kv1/{name}#pgpass"\n')
    env = {**base_env(tmp_path), **openbao.env()}
    result = leaseline(
        "plan", str(examples), str(manifest), "--format", "json", "--addr", openbao.addr,
        "--airflow-backend-kwargs", kwargs.split("=", 1)[1], "--apply", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stages = {s["stage"]: s for s in json.loads(result.stdout)}
    train = stages["llm_training/train"]
    assert train["vault_policy"].startswith(
        'path "database/creds/etl" {  # vault://database/creds/etl\n  capabilities = ["read"]\n}\n'
        'path "secret/data/airflow/variables/llm_api_key" {'
    )
    assert train["notes"] == []  # secret/ is KV v2: the server said so, nothing assumed
    assert stages["pipeline.py"]["references"] == [  # examples/kfp/pipeline.py's constants
        "vault://database/creds/reader",
        "vault://secret/llm/openai#api_key",
    ]
    etl = stages["etl"]
    assert etl["kind"] == "manifest"
    assert etl["vault_policy"].startswith(f'path "kv1/{name}" {{')  # KV v1: no data/ segment
    token = openbao.client().auth.token.create(policies=[etl["vault_policy_name"]], ttl="10m")
    stage_env = {**env, "VAULT_TOKEN": token["auth"]["client_token"]}
    got = leaseline("get", f"vault://kv1/{name}#pgpass", env=stage_env)
    assert got.returncode == 0, got.stderr
