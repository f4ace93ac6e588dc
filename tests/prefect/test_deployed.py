"""Prefect as deployed: failed runs through ``flow.serve()`` and a process work pool + worker.

The task raises ``ValueError(f"upstream rejected key {key} (sent as {base64})")`` with the
value it read from OpenBao. No form of it may reach the API (flow-run and task-run states,
logs) or result storage (the pickled exception).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from tests.canary import encodings
from tests.prefect.conftest import DeployedRuns

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _stop_when_this_module_is_done(prefect_deployed: DeployedRuns) -> Iterator[None]:
    """The deployment is a session fixture, used by this module only: free its processes for
    the rest of the session as soon as the module is done."""
    yield
    prefect_deployed.deployment.stop()


RUNS = ("served", "pool")


def _leaks(text: str, value: str) -> list[str]:
    return [form for needle, form in encodings(value) if needle.decode() in text]


@pytest.mark.parametrize("how", RUNS)
def test_failed_run_states_hold_no_value(prefect_deployed: DeployedRuns, how: str) -> None:
    run = prefect_deployed.flow_runs[how]
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert "upstream rejected key *** (sent as ***)" in message, message
    (task_run,) = prefect_deployed.task_runs[how]
    assert task_run["state"]["type"] == "FAILED"
    assert "upstream rejected key *** (sent as ***)" in task_run["state"]["message"]
    everything = json.dumps([run, prefect_deployed.task_runs[how]])
    assert _leaks(everything, prefect_deployed.key) == []


@pytest.mark.parametrize("how", RUNS)
def test_failed_run_logs_hold_no_value(prefect_deployed: DeployedRuns, how: str) -> None:
    logs = json.dumps(prefect_deployed.logs[how])
    assert "upstream rejected key ***" in logs
    assert _leaks(logs, prefect_deployed.key) == []


def test_result_storage_holds_no_value(prefect_deployed: DeployedRuns) -> None:
    results = prefect_deployed.deployment.results
    files = [p for p in results.rglob("*") if p.is_file()]
    assert len(files) >= 2, "each failed run persisted its task's exception"
    hits = {
        str(p): _leaks(p.read_bytes().decode("utf-8", "replace"), prefect_deployed.key)
        for p in files
    }
    assert {p: h for p, h in hits.items() if h} == {}
    # the exception is there (a base64 pickle), masked: the run's failure is still explained
    assert any(b"upstream rejected key ***" in _decoded(p.read_bytes()) for p in files)


def _decoded(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=False)
    except ValueError:
        return data
