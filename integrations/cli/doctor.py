"""``leaseline doctor``: is each store reachable, are we authenticated, do the references resolve?"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import click

from . import make_resolver

if TYPE_CHECKING:
    from .._resolver import Resolver

__all__ = ["doctor"]


def check_store(resolver: Resolver, name: str) -> dict[str, Any]:
    from .._exceptions import LeaselineError
    from ..backends import HealthChecked

    row: dict[str, Any] = {"store": name, "type": None, "ok": False}
    try:
        backend = resolver.backend(name)
    except LeaselineError as exc:
        row["detail"] = str(exc).splitlines()[0]
        return row
    row["type"] = backend.type
    if isinstance(backend, HealthChecked):  # a backend's own health check, when it has one
        row.update(backend.check())
    else:
        row.update({"reachable": None, "authenticated": None, "token_ttl": None})
    row["ok"] = row.get("reachable") is not False and row.get("authenticated") is not False
    return row


def check_ref(resolver: Resolver, ref: str) -> dict[str, Any]:
    from .._exceptions import AccessDenied, BackendUnavailable, LeaselineError, SecretNotFound

    row: dict[str, Any] = {"ref": ref, "status": "ok", "ok": True, "detail": ""}
    started = time.monotonic()
    try:
        parsed = resolver.parse(ref)
        secret = resolver.get(parsed)
        if parsed.field is not None and parsed.field not in secret:
            raise SecretNotFound(f"{parsed.key} has no field '{parsed.field}'")
        row["detail"] = f"fields: {', '.join(secret.fields)}"
    except LeaselineError as exc:
        row["ok"] = False
        row["status"] = (
            "denied"
            if isinstance(exc, AccessDenied)
            else "not found"
            if isinstance(exc, SecretNotFound)
            else "unavailable"
            if isinstance(exc, BackendUnavailable)
            else "error"
        )
        row["detail"] = str(exc).splitlines()[0]
    row["ms"] = round((time.monotonic() - started) * 1000, 1)
    return row


@click.command("doctor")
@click.option("--ref", "refs", multiple=True, metavar="REF", help="Also check REF. Repeatable.")
@click.option("--manifest", metavar="FILE", help="Also check every reference in a run manifest.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_context
def doctor(ctx: click.Context, refs: tuple[str, ...], manifest: str | None, fmt: str) -> None:
    """Check every configured store and every reference in the config.

    \b
    For each store: reachable, authenticated, the login token's TTL. For each reference (the
    config's [aliases], --ref, --manifest): resolves, not found, or denied. Nothing is printed
    but names, statuses and field names; leases taken while checking are revoked at once.

    \b
    Exit codes: 0 all good, 1 something failed, 2 config error.
    """
    resolver = make_resolver(ctx, handle_signals=False)
    try:
        config = resolver.config
        targets = list(config.aliases.values()) + list(refs)
        if manifest:
            from ..runtime.run import load_manifest

            plan = load_manifest(manifest)
            targets += [*plan.env.values(), *plan.files.values()]
        targets = list(dict.fromkeys(targets))
        stores = set(config.stores)
        if os.environ.get("VAULT_ADDR") or os.environ.get("BAO_ADDR"):
            stores.add("vault")
        for ref in targets:
            head = ref.split("://", 1)[0] if "://" in ref else None
            if head:
                stores.add(head)
        store_rows = [check_store(resolver, name) for name in sorted(stores)]
        ref_rows = [check_ref(resolver, ref) for ref in targets]
    finally:
        resolver.close()
    failed = [r for r in store_rows + ref_rows if not r["ok"]]
    if fmt == "json":
        click.echo(json.dumps({"stores": store_rows, "refs": ref_rows, "ok": not failed}, indent=2))
    else:
        _print_tables(store_rows, ref_rows, config.source)
    if failed:
        raise SystemExit(1)


def _yes(value: Any) -> str:
    return {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}.get(value, str(value))


def _print_tables(
    stores: list[dict[str, Any]], refs: list[dict[str, Any]], source: str | None
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"config: {source or 'none (zero config: environment only)'}")
    if not stores:
        console.print("no stores configured: set VAULT_ADDR or add [stores.NAME] to leaseline.toml")
    else:
        table = Table("store", "type", "reachable", "authenticated", "token TTL", "detail")
        for r in stores:
            table.add_row(
                r["store"],
                str(r.get("type") or "?"),
                _yes(r.get("reachable")),
                _yes(r.get("authenticated")),
                str(r.get("token_ttl") or "-"),
                str(r.get("detail") or r.get("version") or ""),
            )
        console.print(table)
    if refs:
        table = Table("reference", "status", "ms", "detail")
        for r in refs:
            colour = "green" if r["ok"] else "red"
            table.add_row(r["ref"], f"[{colour}]{r['status']}[/]", str(r["ms"]), r["detail"])
        console.print(table)
