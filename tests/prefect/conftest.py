"""One Prefect API server (``prefect_test_harness``) for the whole session, plus store helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.canary import registry
from tests.conftest import require
from tests.servers import OpenBao

TOKEN_ENV = "LEASELINE_TEST_VAULT_TOKEN"


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    home: Path
    database: Path

    def env(self) -> dict[str, str]:
        """Environment for a new process talking to this server."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}


@pytest.fixture(scope="session")
def prefect_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """``prefect_test_harness()``, started once (~10 s); its database is watched for canaries."""
    try:
        from prefect.settings import (
            PREFECT_API_DATABASE_CONNECTION_URL,
            PREFECT_API_URL,
            PREFECT_HOME,
            PREFECT_SERVER_ANALYTICS_ENABLED,
            temporary_settings,
        )
        from prefect.testing.utilities import prefect_test_harness
    except ImportError as exc:
        require("prefect (pip install 'leaseline[prefect]')", exc)
    home = tmp_path_factory.mktemp("prefect-home")
    with (
        temporary_settings(updates={PREFECT_HOME: home, PREFECT_SERVER_ANALYTICS_ENABLED: False}),
        prefect_test_harness(),
    ):
        url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
        database = Path(url.split(":///", 1)[-1])
        reg = registry(request.config)
        reg.watch(database.parent)  # block documents, logs, flow runs: all of Prefect's state
        reg.watch(home)
        yield PrefectServer(str(PREFECT_API_URL.value()), home, database)


@pytest.fixture
def vault_token_env(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The Vault token in an environment variable; blocks refer to it as ``env://...``.

    The blocks' resolvers are closed after the test (while OpenBao still runs).
    """
    from leaseline.prefect import _store

    monkeypatch.setenv(TOKEN_ENV, openbao.root_token)
    yield f"env://{TOKEN_ENV}"
    _store._reset()


def store_options(openbao: OpenBao) -> dict[str, Any]:
    return {"addr": openbao.addr, "token": f"env://{TOKEN_ENV}"}


def subprocess_env(server: PrefectServer, openbao: OpenBao, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "PREFECT_"))}
    env.update(server.env())
    env[TOKEN_ENV] = openbao.root_token
    env.update(extra)
    return env


# -- Prefect as deployed (session scope: one server, one worker, one runner) -----------------


@dataclass
class DeployedRuns:
    """Failed runs of ``leaky`` through ``flow.serve()`` and through a process work pool."""

    deployment: Any = field(repr=False)  # tests.prefect.deployment.PrefectDeployment
    key: str = field(repr=False)
    flow_runs: dict[str, dict[str, Any]] = field(repr=False)  # "served" / "pool" -> flow run
    task_runs: dict[str, list[dict[str, Any]]] = field(repr=False)
    logs: dict[str, list[dict[str, Any]]] = field(repr=False)


@pytest.fixture(scope="session")
def prefect_deployed(
    request: pytest.FixtureRequest, openbao: OpenBao, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DeployedRuns]:
    from tests.prefect.deployment import FLOWS, PrefectDeployment

    reg = registry(request.config)
    key = reg.new("upstream-key", owner="tests/prefect deployed")
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="prefect/deployed", secret={"api_key": key}, mount_point="secret"
    )
    home = tmp_path_factory.mktemp("prefect-deployed")
    reg.watch(home)  # database, result storage, every console
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "PREFECT_"))}
    env.update(openbao.env())
    dep = None
    try:
        try:
            dep = PrefectDeployment.start(home, env)
            dep.python(
                FLOWS / "leaky.py",
                "save",
                "deployed-key",
                "vault://secret/prefect/deployed#api_key",
            )
            dep.serve("served")
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"Prefect deployment did not start: {reg.redact(str(exc))}")
        flow_runs, task_runs, logs = {}, {}, {}
        for name in ("served", "pool"):
            run = dep.run(f"leaky/{name}")
            flow_runs[name] = run
            task_runs[name] = dep.task_runs(run["id"])
            logs[name] = dep.logs(run["id"], containing="upstream rejected key")
        yield DeployedRuns(dep, key, flow_runs, task_runs, logs)
    finally:
        if dep is not None:
            dep.stop()
