"""Session-wide real servers (DESIGN.md section 9) and the missing-component rule.

Fixtures (session scope unless noted):
- ``openbao``: ``tests.servers.OpenBao``, started, seeded (``openbao.seeds``), audit log watched by
  the canary plugin.
- ``postgres``: ``tests.servers.Postgres``.
- ``vault_db``: ``tests.servers.DatabaseEngine`` (``database/`` on ``openbao`` -> ``postgres``,
  dynamic role ``reader``).
- ``moto_server``: ``tests.servers.MotoServer``.
- ``vault_env`` (function): VAULT_ADDR/VAULT_TOKEN set for ``openbao``; returns ``openbao``.
- ``aws_env`` (function): AWS_* set for ``moto_server``; returns ``moto_server``.

In CI (``CI=true``) a missing component fails the test, naming what is missing; elsewhere it skips
with the same message.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.canary import registry
from tests.servers import (
    ComponentMissing,
    DatabaseEngine,
    MotoServer,
    OpenBao,
    Postgres,
    configure_database_engine,
    seed,
)

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}

SERVER_FIXTURES = frozenset(
    {"openbao", "postgres", "vault_db", "moto_server", "vault_env", "aws_env"}
)


def require(component: str, exc: BaseException | str) -> NoReturn:
    """A component is missing: fail in CI, skip elsewhere; the message names it either way."""
    message = f"{component} is not available: {exc}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: missing components fail, they never skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _airflow_masker_per_test() -> Iterator[None]:
    """Airflow's secrets masker recompiles one regex of every pattern it holds on each new mask,
    and once an Airflow test made a backend, every value the session's process resolves is
    forwarded to it in all its forms: across a whole session that grows into minutes per test.
    A task process starts with a fresh masker; so does each test here."""
    yield
    module = sys.modules.get("airflow.sdk._shared.secrets_masker.secrets_masker")
    if module is not None:
        module.reset_secrets_masker()


def pytest_configure(config: pytest.Config) -> None:
    if not any(str(m).startswith("integration:") for m in config.getini("markers")):
        config.addinivalue_line(
            "markers", "integration: talks to a real server started by the test session"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a server fixture are ``integration`` tests (``-m 'not integration'``)."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def openbao(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpenBao]:
    try:
        import hvac  # noqa: F401
    except ImportError as exc:
        require("hvac (pip install hvac)", exc)
    try:
        bao = OpenBao.start(tmp_path_factory.mktemp("openbao"))
    except ComponentMissing as exc:
        require("OpenBao", exc)
    try:
        seed(bao)
        registry(request.config).watch(bao.audit_log)
        yield bao
    finally:
        bao.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        require("psycopg (pip install 'psycopg[binary]')", exc)
    try:
        pg = Postgres.start()
    except ComponentMissing as exc:
        require("PostgreSQL", exc)
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def vault_db(openbao: OpenBao, postgres: Postgres) -> DatabaseEngine:
    return configure_database_engine(openbao, postgres, role="reader")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    try:
        server = MotoServer.start()
    except ComponentMissing as exc:
        require("moto", exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vault_env(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> OpenBao:
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_")):
            monkeypatch.delenv(name)
    for name, value in openbao.env().items():
        monkeypatch.setenv(name, value)
    return openbao


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoServer:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    # never read the machine's real AWS config or credentials
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    return moto_server
