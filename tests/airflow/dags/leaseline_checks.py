"""Test DAGs (not examples): printed secrets, a denied variable, a timed-out task, SIGTERM."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import Connection, Variable, dag, task


def _mark(text: str) -> None:
    marker = os.environ.get("LEASELINE_TEST_MARKER")
    if marker:
        Path(marker).write_text(text)


@dag(dag_id="leaseline_mask", schedule=None, start_date=datetime(2025, 1, 1), catchup=False)
def leaseline_mask() -> None:
    @task
    def print_secrets() -> None:
        # print(), not logging: only Airflow's own masker can hide these (leaseline handed the
        # values to airflow.sdk.log.mask_secret).
        conn = Connection.get("training_db")
        print(f"PRINTED key={Variable.get('llm_api_key')} login={conn.login} pw={conn.password}")

    print_secrets()


@dag(dag_id="leaseline_checks", schedule=None, start_date=datetime(2025, 1, 1), catchup=False)
def leaseline_checks() -> None:
    @task
    def read_forbidden() -> None:
        # A fallback value exists (AIRFLOW_VAR_FORBIDDEN_KEY): the denial must not fall through.
        value = Variable.get("forbidden_key")
        _mark("FELL THROUGH" if value else "EMPTY")

    @task(execution_timeout=timedelta(seconds=4))
    def lease_then_timeout() -> None:
        Connection.get("training_db")
        time.sleep(60)

    read_forbidden()
    lease_then_timeout()


@dag(dag_id="leaseline_sigterm", schedule=None, start_date=datetime(2025, 1, 1), catchup=False)
def leaseline_sigterm() -> None:
    @task
    def lease_then_wait() -> None:
        conn = Connection.get("training_db")
        _mark("LEASED " + str(conn.conn_id))
        time.sleep(120)

    lease_then_wait()


leaseline_mask()
leaseline_checks()
leaseline_sigterm()
