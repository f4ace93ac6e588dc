"""The IAM side of the plan for every AWS reference kind leaseline reads: ``ssm:GetParameter`` on
the exact parameter ARN, ``sts:AssumeRole`` on the exact role ARN, ``secretsmanager:GetSecretValue``;
named stores' own regions; accepted by moto's IAM and clean under parliament."""

from __future__ import annotations

import json
import secrets
import warnings
from pathlib import Path

import boto3
from leaseline.plan._policy import iam_plan

from tests.cli.conftest import base_env, leaseline
from tests.servers import MotoServer

ACCOUNT = "123456789012"
STORES = {
    "prod-ssm": {"type": "aws-ssm", "region": "eu-west-1"},
    "prod-sm": {"type": "aws-sm", "region": "eu-west-1"},
    "china-sm": {"type": "aws-sm", "region": "cn-north-1"},
    "roles": {"type": "aws-sts", "region": "eu-west-1"},
}
TYPES = {name: str(table["type"]) for name, table in STORES.items()}


def resources(doc: dict[str, object] | None) -> dict[str, list[str]]:
    assert doc is not None
    return {s["Action"][0]: s["Resource"] for s in doc["Statement"]}  # type: ignore[attr-defined]


def test_every_aws_reference_kind_gets_its_exact_arn() -> None:
    doc, notes = iam_plan(
        [
            "prod-ssm:///ml/hf/token?version=3",  # a version selects nothing in IAM
            "prod-ssm:///ml/hf/token?label=prod",
            "prod-ssm://plain-name",  # a name outside any hierarchy
            "aws-ssm://arn:aws:ssm:us-east-1:123456789012:parameter/shared/key",  # shared by ARN
            "prod-sm://prod/openai#api_key",
            "roles://arn:aws:iam::123456789012:role/ml/train?duration=900",
            f"aws-sts://arn:aws:iam::{ACCOUNT}:role/eval?session-name=eval",
        ],
        store_types=TYPES,
        account=ACCOUNT,
        stores=STORES,
    )
    assert notes == []
    assert resources(doc) == {
        "secretsmanager:GetSecretValue": [
            f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:prod/openai-??????"
        ],
        "ssm:GetParameter": [
            "arn:aws:ssm:eu-west-1:123456789012:parameter/ml/hf/token",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/plain-name",
            "arn:aws:ssm:us-east-1:123456789012:parameter/shared/key",
        ],
        "sts:AssumeRole": [
            f"arn:aws:iam::{ACCOUNT}:role/eval",
            f"arn:aws:iam::{ACCOUNT}:role/ml/train",
        ],
    }


def test_a_stores_region_sets_the_partition() -> None:
    doc, _ = iam_plan(["china-sm://prod/key"], store_types=TYPES, account=ACCOUNT, stores=STORES)
    assert resources(doc) == {
        "secretsmanager:GetSecretValue": [
            f"arn:aws-cn:secretsmanager:cn-north-1:{ACCOUNT}:secret:prod/key-??????"
        ]
    }


def test_a_locator_that_is_no_exact_arn_is_noted_never_widened() -> None:
    doc, notes = iam_plan(
        [
            # a named store's references are checked by its type only here (parse knows names)
            "roles://train",
            "roles://arn:aws:iam::123456789012:role/*",
            "aws-sm://arn:aws:ssm:us-east-1:123456789012:parameter/x",  # another service's ARN
        ],
        store_types=TYPES,
    )
    assert doc is None
    assert notes == [
        "roles://train: not an exact IAM role ARN: no IAM statement planned for it",
        "roles://arn:aws:iam::123456789012:role/*: not an exact IAM role ARN: no IAM "
        "statement planned for it",
        "aws-sm://arn:aws:ssm:us-east-1:123456789012:parameter/x: not an exact secret ARN: no "
        "IAM statement planned for it",
    ]


def test_named_stores_document_is_accepted_by_iam_and_clean_under_parliament(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    config = tmp_path / "leaseline.toml"
    config.write_text(
        "".join(
            f'[stores.{name}]\ntype = "{table["type"]}"\nregion = "{table["region"]}"\n'
            for name, table in STORES.items()
            if name != "china-sm"
        )
    )
    (tmp_path / "flow.py").write_text(
        "from prefect import flow\n\n@flow\ndef fetch():\n"
        '    return ("prod-ssm:///ml/hf/token?version=3", "prod-sm://prod/openai#api_key",\n'
        '            "roles://arn:aws:iam::123456789012:role/ml/train")\n'
    )
    env = {**base_env(tmp_path), "LEASELINE_CONFIG": str(config)}
    result = leaseline(
        "plan", str(tmp_path / "flow.py"), "--format", "json", "--aws-account", ACCOUNT, env=env
    )
    assert result.returncode == 0, result.stderr
    [stage] = json.loads(result.stdout)
    doc = stage["iam_policy"]
    assert resources(doc) == {
        "secretsmanager:GetSecretValue": [
            f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:prod/openai-??????"
        ],
        "ssm:GetParameter": [f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/ml/hf/token"],
        "sts:AssumeRole": [f"arn:aws:iam::{ACCOUNT}:role/ml/train"],
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
