"""The DAG the deployment tests run: one task per executor, each doing what a user would do.

Each task reads the ``llm_api_key`` Variable (KV) and the ``training_db`` Connection (login and
password from one dynamic PostgreSQL lease), prints and logs them raw and base64-encoded (the
task log, the REST log endpoint and every component's console must show none of it), queries
PostgreSQL through the Connection, and asks for a Variable that is in no store. For the test
to check every form of the dynamic login and password, it writes them to a file outside
``AIRFLOW_HOME`` that only the test reads (``LEASELINE_TEST_CREDS_DIR``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import Connection, Variable, dag, task

log = logging.getLogger(__name__)


def _work(name: str) -> int:
    import psycopg

    key = Variable.get("llm_api_key")
    conn = Connection.get("training_db")
    b64 = base64.b64encode(key.encode()).decode()
    print(f"PRINT key={key} b64={b64}")
    print(f"PRINT login={conn.login} password={conn.password} uri={conn.get_uri()}")
    print(f"PRINT b64-password={base64.b64encode(str(conn.password).encode()).decode()}")
    log.info("LOG key=%s b64=%s login=%s", key, b64, conn.login)
    with psycopg.connect(
        host=conn.host,
        port=conn.port,
        dbname=conn.schema,
        user=conn.login,
        password=conn.password,
        connect_timeout=10,
    ) as db:
        row = db.execute("SELECT count(*), current_user FROM training_rows").fetchone()
    assert row is not None
    missing = Variable.get("llm_not_in_vault", default=None)
    log.info("training on %d rows; missing variable: %s", row[0], missing)
    creds = Path(os.environ["LEASELINE_TEST_CREDS_DIR"]) / f"{name}.json"
    creds.write_text(
        json.dumps({"login": conn.login, "password": conn.password, "current_user": row[1]})
    )
    return int(row[0])


@dag(dag_id="leaseline_deployed", schedule=None, start_date=datetime(2025, 1, 1), catchup=False)
def leaseline_deployed() -> None:
    @task(executor="LocalExecutor")
    def on_local() -> int:
        return _work("on_local")

    @task(executor="CeleryExecutor", queue="default")
    def on_celery() -> int:
        return _work("on_celery")

    on_local()
    on_celery()


leaseline_deployed()
