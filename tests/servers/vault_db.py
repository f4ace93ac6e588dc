"""Wire OpenBao's database secrets engine to a throwaway PostgreSQL cluster."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from tests.servers.openbao import OpenBao
from tests.servers.postgres import Postgres

CREATION_STATEMENTS = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
]
TRAINING_ROWS = [(1, "the quick brown fox"), (2, "jumps over"), (3, "the lazy dog")]


@dataclass
class DatabaseEngine:
    """The ``database/`` mount of ``bao`` pointed at ``pg`` (connection ``pg``)."""

    bao: OpenBao
    pg: Postgres
    mount: str = "database"
    connection: str = "pg"
    role: str = "reader"
    roles: list[str] = field(default_factory=list)
    static_roles: list[str] = field(default_factory=list)

    def creds_path(self, role: str | None = None) -> str:
        """Logical path of a dynamic role's credentials, e.g. ``database/creds/reader``."""
        return f"{self.mount}/creds/{role or self.role}"

    def static_creds_path(self, role: str) -> str:
        return f"{self.mount}/static-creds/{role}"

    def create_db_role(self, name: str, default_ttl: str = "1h", max_ttl: str = "24h") -> str:
        """A dynamic role (``creds_path(name)``) with the given TTLs; returns ``name``."""
        self.bao.client().write_data(
            f"{self.mount}/roles/{name}",
            data={
                "db_name": self.connection,
                "creation_statements": CREATION_STATEMENTS,
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            },
        )
        if name not in self.roles:
            self.roles.append(name)
        return name

    def create_static_role(self, name: str, username: str, rotation_period: str = "1h") -> str:
        """Create PostgreSQL user ``username`` and a static role managing its password."""
        if username not in self.pg.roles():
            initial = secrets.token_urlsafe(18)
            self.pg.execute(f"CREATE ROLE \"{username}\" WITH LOGIN PASSWORD '{initial}'")
            self.pg.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{username}"')
        self.bao.client().write_data(
            f"{self.mount}/static-roles/{name}",
            data={
                "db_name": self.connection,
                "username": username,
                "rotation_period": rotation_period,
            },
        )
        if name not in self.static_roles:
            self.static_roles.append(name)
        return name


def configure_database_engine(
    bao: OpenBao,
    pg: Postgres,
    role: str = "reader",
    default_ttl: str = "1h",
    max_ttl: str = "24h",
    *,
    mount: str = "database",
) -> DatabaseEngine:
    """Enable ``database/``, configure connection ``pg`` (verified), create role ``role``.

    Also creates ``public.training_rows(id int, text text)`` with a few rows, readable by every
    dynamic role.
    """
    pg.execute("CREATE TABLE IF NOT EXISTS public.training_rows (id int, text text)")
    if not pg.execute("SELECT 1 FROM public.training_rows LIMIT 1"):
        for row in TRAINING_ROWS:
            pg.execute("INSERT INTO public.training_rows (id, text) VALUES (%s, %s)", row)

    c = bao.client()
    if f"{mount}/" not in c.sys.list_mounted_secrets_engines()["data"]:
        c.sys.enable_secrets_engine("database", path=mount)
    c.write_data(
        f"{mount}/config/pg",
        data={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": (
                f"postgresql://{{{{username}}}}:{{{{password}}}}@{pg.host}:{pg.port}/postgres"
                "?sslmode=disable"
            ),
            "username": pg.superuser,
            "password": pg.password,
            "allowed_roles": "*",
            "verify_connection": True,
            "password_authentication": "scram-sha-256",
        },
    )
    engine = DatabaseEngine(bao=bao, pg=pg, mount=mount, connection="pg", role=role)
    engine.create_db_role(role, default_ttl=default_ttl, max_ttl=max_ttl)
    return engine
