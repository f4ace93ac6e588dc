"""Throwaway real servers for tests, benchmarks and examples.

Plain Python, no pytest imports: every class starts a real component on loopback on a free port
and cleans up after itself (``stop()``, plus an ``atexit`` backstop and, where the process is our
direct child, a parent-death signal so nothing outlives a killed test run).
"""

from tests.servers._util import ComponentMissing, free_port
from tests.servers.moto import MotoServer
from tests.servers.openbao import OpenBao, Seed, seed
from tests.servers.postgres import Postgres
from tests.servers.proxy import TcpProxy
from tests.servers.vault_db import DatabaseEngine, configure_database_engine

__all__ = [
    "ComponentMissing",
    "DatabaseEngine",
    "MotoServer",
    "OpenBao",
    "Postgres",
    "Seed",
    "TcpProxy",
    "configure_database_engine",
    "free_port",
    "seed",
]
