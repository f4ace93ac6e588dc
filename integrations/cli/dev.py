"""``leaseline dev``: the command; what it does is :mod:`leaseline.runtime.dev`."""

from __future__ import annotations

import click

from ..runtime.dev import serve

__all__ = ["dev"]


@click.command("dev")
@click.option(
    "--dir",
    "workdir",
    default=".leaseline-dev",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for the server's config, logs and the env file.",
)
@click.option("--env-file", default=None, help="Where to write the env file [default: DIR/env].")
@click.option("--port", type=int, default=0, help="Port on 127.0.0.1 [default: a free port].")
@click.option("--postgres", is_flag=True, help="Also start PostgreSQL and a database role.")
@click.option("--db-ttl", default="1h", show_default=True, help="TTL of database credentials.")
@click.option("--db-max-ttl", default="24h", show_default=True, help="Max TTL of them.")
def dev(
    workdir: str, env_file: str | None, port: int, postgres: bool, db_ttl: str, db_max_ttl: str
) -> None:
    """Start a local OpenBao dev server with demo secrets; Ctrl-C stops it.

    \b
    Seeds:
      vault://secret/llm/openai#api_key            a KV v2 "LLM API key" (random, per start)
      vault://database/creds/trainer               dynamic PostgreSQL credentials (--postgres)
    Writes an env file (mode 0600) to source in another shell:
      VAULT_ADDR, VAULT_TOKEN (the root token, generated now, never printed),
      LEASELINE_AUDIT__SINK (a JSON-lines audit log in DIR), LEASELINE_AUDIT__HMAC_KEY,
      LEASELINE_LEDGER__PATH, and PGHOST/PGPORT/PGDATABASE with --postgres.
    OpenBao's own audit device logs to DIR/openbao-audit.log. The server keeps nothing on disk:
    every start is a fresh, empty server. Not for production.

    \b
    Example:
      leaseline dev --postgres &          # or in another terminal
      . .leaseline-dev/env
      leaseline run --env OPENAI_API_KEY=vault://secret/llm/openai#api_key -- python train.py

    \b
    Exit codes: 0 stopped cleanly (Ctrl-C or SIGTERM), 1 a server failed, 2 OpenBao missing.
    """
    serve(workdir, env_file, port, postgres, db_ttl, db_max_ttl)
