"""Two-step Kubeflow pipeline whose spec holds references only.

1. ``prepare_data`` reads training rows from PostgreSQL with a *dynamic* database credential
   (``vault://database/creds/reader``): issued when the step starts, renewed while it runs,
   revoked when it ends.
2. ``train`` gets the LLM key (``vault://secret/llm/openai#api_key``) as ``OPENAI_API_KEY``.

Compile (the spec is checked: it fails if it holds a credential or a resolved value)::

    python examples/kfp/pipeline.py compile pipeline.yaml --vault-addr https://vault:8200 \\
        --kubernetes-role training

Run on this machine with KFP's local runner (VAULT_ADDR/VAULT_TOKEN come from your shell and
are inherited by the task processes; they never enter the spec)::

    python examples/kfp/pipeline.py local --db-host 127.0.0.1 --db-port 5432

Each task with only its own policy: plan the compiled spec and apply it (one policy per task,
``leaseline-leaseline-training-prepare-data`` and ``...-train``, and the token role), then turn
per-stage child tokens on for the run (``docs/least-privilege.md``, "At run time")::

    leaseline plan pipeline.yaml --apply
    LEASELINE_STORES__VAULT__CHILD_TOKEN__POLICIES=per-stage \
        python examples/kfp/pipeline.py local --db-host 127.0.0.1 --db-port 5432

(On a cluster, also set ``LEASELINE_STAGE`` to ``leaseline-training/TASK`` on each task.)
"""

import argparse
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import leaseline.kfp
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

IMAGE = "python:3.11"
DB_CREDS = "vault://database/creds/reader"
LLM_KEY = "vault://secret/llm/openai#api_key"


def prepare_data(db_host: str, db_port: int, dataset: Output[Dataset]) -> int:
    """Copy the training rows to a CSV dataset; returns the row count."""
    import csv

    import psycopg

    # PGUSER/PGPASSWORD were resolved from the dynamic role when the task started; libpq
    # reads them from the environment, so the code never handles the values itself.
    with psycopg.connect(host=db_host, port=db_port, dbname="postgres", sslmode="disable") as conn:
        rows = conn.execute("SELECT id, text FROM public.training_rows ORDER BY id").fetchall()
    with open(dataset.path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        writer.writerows(rows)
    print(f"prepared {len(rows)} rows")
    return len(rows)


def train(dataset: Input[Dataset], model: Output[Model]) -> str:
    """Train a (toy) model; returns the fingerprint of the LLM key used, for the run record."""
    import csv
    import hashlib
    import json
    import os

    api_key = os.environ["OPENAI_API_KEY"]  # resolved inside this task, at run time
    # A real step would call the LLM here, e.g. openai.OpenAI() reads OPENAI_API_KEY itself.
    with open(dataset.path) as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    vocabulary = sorted({word for text in texts for word in text.split()})
    with open(model.path, "w") as out:
        json.dump({"vocabulary": vocabulary}, out)
    print(f"trained on {len(texts)} rows, {len(vocabulary)} words")
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


class TrainingOutputs(NamedTuple):
    model: Model
    rows: int
    key_fingerprint: str  # identifies the key used, without revealing it


def build_pipeline(
    *,
    packaged: bool = True,
    vault_addr: str | None = None,
    kubernetes_role: str | None = None,
    db_creds: str = DB_CREDS,
    llm_key: str = LLM_KEY,
) -> Callable[..., Any]:
    """The pipeline function.

    ``packaged=False`` installs nothing at task start (the image, or the local interpreter, has
    leaseline, kfp and psycopg). ``vault_addr``/``kubernetes_role`` put the Vault address and the
    Kubernetes auth role (never a token) into each task's environment. ``db_creds``/``llm_key``
    are the references the tasks resolve.
    """
    options: dict[str, Any] = {"base_image": IMAGE}
    if not packaged:
        options.update(install_leaseline=False, install_kfp_package=False)
    prepare_component = leaseline.kfp.component(
        prepare_data,
        packages_to_install=["psycopg[binary]"] if packaged else None,
        **options,
    )
    train_component = leaseline.kfp.component(train, secrets={"OPENAI_API_KEY": llm_key}, **options)

    def configure(task: Any) -> None:
        if kubernetes_role and vault_addr:
            leaseline.kfp.vault_kubernetes_auth(task, role=kubernetes_role, addr=vault_addr)
        elif vault_addr:
            task.set_env_variable("VAULT_ADDR", vault_addr)

    @dsl.pipeline(
        name="leaseline-training", description="references in the spec, values in the task"
    )
    def training_pipeline(
        db_host: str = "postgres.data.svc", db_port: int = 5432
    ) -> TrainingOutputs:
        prepare = prepare_component(db_host=db_host, db_port=db_port)
        leaseline.kfp.use_secrets(
            prepare, {"PGUSER": f"{db_creds}#username", "PGPASSWORD": f"{db_creds}#password"}
        )
        configure(prepare)
        trained = train_component(dataset=prepare.outputs["dataset"])
        configure(trained)
        return TrainingOutputs(
            trained.outputs["model"], prepare.outputs["Output"], trained.outputs["Output"]
        )

    return training_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    comp = sub.add_parser("compile", help="compile and check the spec")
    comp.add_argument("path")
    comp.add_argument("--vault-addr")
    comp.add_argument("--kubernetes-role")
    local = sub.add_parser("local", help="run with kfp.local.SubprocessRunner")
    local.add_argument("--db-host", default="127.0.0.1")
    local.add_argument("--db-port", type=int, default=5432)
    local.add_argument("--pipeline-root", default="./local_outputs")
    args = parser.parse_args(argv)

    if args.command == "compile":
        pipeline = build_pipeline(vault_addr=args.vault_addr, kubernetes_role=args.kubernetes_role)
        leaseline.kfp.compile(pipeline, args.path)
        print(f"compiled {args.path}: references only")
        return 0

    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=args.pipeline_root)
    build_pipeline(packaged=False)(db_host=args.db_host, db_port=args.db_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
