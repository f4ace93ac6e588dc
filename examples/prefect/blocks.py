"""Save the example's blocks: references only, no secret value reaches Prefect's database.

    VAULT_ADDR=http://127.0.0.1:8200 PGHOST=127.0.0.1 PGPORT=5432 python examples/prefect/blocks.py

(or ``prefect block register -m leaseline.prefect`` and fill the same fields in the UI).
The Vault token is *not* saved: the store block says ``token = "env://VAULT_TOKEN"``, resolved
where the flow runs. The OpenAI key lives in Vault at ``secret/llm/openai`` (field ``api_key``);
the database credentials come from Vault's database engine, role ``reader``.
"""

from __future__ import annotations

import os

from leaseline.prefect import DatabaseCredentials, LeaselineStore, SecretReference


def save_blocks(
    vault_addr: str,
    db_host: str,
    db_port: int,
    database: str = "postgres",
    *,
    token_ref: str = "env://VAULT_TOKEN",
) -> None:
    """Save ``vault`` (store), ``training-db`` and ``openai`` blocks, overwriting old ones."""
    store = LeaselineStore(store_name="vault", options={"addr": vault_addr, "token": token_ref})
    store.save("vault", overwrite=True)
    DatabaseCredentials(
        ref="vault://database/creds/reader",
        store=store,
        host=db_host,
        port=db_port,
        database=database,
        query={"sslmode": os.environ.get("PGSSLMODE", "prefer")},
    ).save("training-db", overwrite=True)
    SecretReference(ref="vault://secret/llm/openai#api_key", store=store).save(
        "openai", overwrite=True
    )


if __name__ == "__main__":
    save_blocks(
        os.environ.get("VAULT_ADDR", "http://127.0.0.1:8200"),
        os.environ.get("PGHOST", "127.0.0.1"),
        int(os.environ.get("PGPORT", "5432")),
        os.environ.get("PGDATABASE", "postgres"),
    )
    print(
        "saved blocks: leaseline-store/vault, leaseline-database-credentials/training-db, "
        "leaseline-secret-reference/openai"
    )
