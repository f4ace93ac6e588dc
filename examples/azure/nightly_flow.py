"""A Prefect flow whose two tasks read Azure Key Vault secrets: what `leaseline plan` makes of it.

    leaseline plan examples/azure/nightly_flow.py --format table \\
        --azure-subscription "$SUBSCRIPTION_ID" --azure-resource-group ml-rg

gives each stage (``nightly-embeddings/embed``, ``nightly-embeddings/load-rows``) one role
assignment per secret it reads, ``Key Vault Secrets User`` scoped to that secret only, and prints
the ``az role assignment create`` command for each (``--format hcl``, the default). Run it where
the stage identities have those assignments (workload identity on AKS, a managed identity on
Azure ML): ``python examples/azure/nightly_flow.py``.
"""

from __future__ import annotations

from leaseline.prefect import SecretReference
from prefect import flow, task


@task
def embed(texts: list[str]) -> int:
    key = SecretReference(ref="azure-kv://ml-keys/openai-key").get()
    return len(texts) if key else 0  # the embedding call, with the key, goes here


@task(name="load-rows")
def load_rows() -> list[str]:
    password = SecretReference(ref="azure-kv://ml-data/warehouse#password").get()
    return ["a row"] if password else []  # the warehouse query goes here


@flow
def nightly_embeddings() -> int:
    return embed(load_rows())


if __name__ == "__main__":
    print(nightly_embeddings())
