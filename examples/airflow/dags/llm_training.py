"""A training DAG whose task gets short-lived credentials from leaseline.

The LLM key is an Airflow Variable and the training database an Airflow Connection, as usual;
``LeaselineBackend`` answers both from the store (see ../README.md): the Variable from KV, the
Connection's login and password from one *dynamic* PostgreSQL lease, issued when the task asks,
renewed while it runs and revoked when it ends. Nothing secret is in this file.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow.sdk import Connection, Variable, dag, task

log = logging.getLogger(__name__)


@dag(
    dag_id="llm_training",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["leaseline", "example"],
)
def llm_training() -> None:
    @task(execution_timeout=timedelta(hours=6))
    def train() -> int:
        import psycopg

        api_key = Variable.get("llm_api_key")  # vault://secret/airflow/variables/llm_api_key
        conn = Connection.get("training_db")  # login/password: vault://database/creds/etl
        # Logged on purpose: the task log shows *** for every value leaseline handed out.
        log.info("LLM key: %s", api_key)
        log.info("connected as %s with password %s", conn.login, conn.password)
        with psycopg.connect(
            host=conn.host,
            port=conn.port,
            dbname=conn.schema,
            user=conn.login,
            password=conn.password,
            connect_timeout=10,
        ) as db:
            rows = db.execute("SELECT count(*) FROM training_rows").fetchone()
        count = int(rows[0]) if rows else 0
        log.info("training on %d rows", count)
        return count

    train()


llm_training()
