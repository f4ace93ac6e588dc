"""``leaseline leases list|revoke``: the lease ledger, and cleanup after a killed run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from . import make_resolver

if TYPE_CHECKING:
    from .._ledger import Ledger, Unrevoked
    from ..backends import Backend

__all__ = ["leases"]


def _ledger(ctx: click.Context) -> Ledger:
    from .._config import load_config
    from .._ledger import Ledger, default_path
    from . import Options

    opts = ctx.find_object(Options) or Options()
    return Ledger(default_path(load_config(opts.config).section("ledger")))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    left = ts - time.time()
    return f"in {int(left)}s" if left >= 0 else f"{int(-left)}s ago"


@click.group("leases")
def leases() -> None:
    """The lease ledger: leases and per-run tokens held by `leaseline run`, `agent`, `render`.

    \b
    `leaseline run` records every lease id and per-run token accessor it holds (never a value)
    and its --file paths in the ledger ([ledger] path, default
    $XDG_STATE_HOME/leaseline/ledger.jsonl), fsync'd when taken and marked when revoked. If
    leaseline itself is killed (kill -9, OOM, node loss), the entries stay; a revocation that
    failed (store down or sealed) is kept as pending, also for Python programs.
    `leaseline leases revoke --orphaned` revokes both.
    """


@leases.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked entries.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_context
def list_(ctx: click.Context, show_all: bool, fmt: str) -> None:
    """List ledger entries: status held (its process is alive), orphaned (its process is gone),
    pending (revoking it failed: `leases revoke --orphaned` retries), expired or revoked.

    \b
    Exit codes: 0 ok, 2 config error.
    """
    entries = _ledger(ctx).entries(include_revoked=show_all)
    rows = [e.as_dict() for e in entries]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no leases recorded")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("status", "store", "kind", "reference / accessor", "lease id", "pid", "expires")
    for e in entries:
        status = e.status()
        table.add_row(
            status,
            e.store,
            e.kind,
            e.ref or e.accessor or "-",
            e.lease_id or "-",
            str(e.pid),
            "-" if status == "revoked" else _when(e.expires_at),  # a revoked lease expires never
        )
    Console().print(table)


def revoke_accessor(backend: Backend, accessor: str) -> None:
    """Revoke a Vault token (and every lease issued under it) by its accessor."""
    from ..backends import PerTaskTokens

    if not isinstance(backend, PerTaskTokens):
        raise click.ClickException(
            f"store {backend.name} cannot revoke a token by accessor; its leases expire with "
            "the token's TTL"
        )
    backend.revoke_accessor(accessor)


def report_unrevoked(command: str, unrevoked: Sequence[Unrevoked]) -> int:
    """Say on stderr what ``command`` could not revoke and how to finish the job; returns the
    exit status for it: 5 a store was unavailable (down, sealed), 4 denied, 1 otherwise."""
    if not unrevoked:
        return 0
    what = ", ".join(sorted({u.describe() for u in unrevoked}))
    click.echo(
        f"leaseline {command}: error: {len(unrevoked)} lease(s)/token(s) could not be revoked "
        f"({what}); they stay valid until they expire and are kept as pending in the lease "
        "ledger (`leaseline leases list`). Fix: once the store is reachable again (unsealed), "
        "run `leaseline leases revoke --orphaned`.",
        err=True,
    )
    codes = {"BackendUnavailable": 5, "AccessDenied": 4}
    return max(codes.get(u.error, 1) for u in unrevoked)


@leases.command("revoke")
@click.option(
    "--orphaned",
    is_flag=True,
    help="Revoke every entry whose process is gone, and every pending one (required; the only "
    "mode for now).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.pass_context
def revoke(ctx: click.Context, orphaned: bool, fmt: str) -> None:
    """Revoke orphaned and pending leases and per-run tokens, and remove orphaned secret files.

    \b
    Orphaned: the process that took it (`leaseline run`, `agent`, `render`, a Python program)
    is gone - same pid and start time, so a reused pid does not hide it. Pending: its owner
    tried to revoke it and failed (store down or sealed at exit). Tokens are revoked by
    accessor (auth/token/revoke-accessor: every lease issued under the token goes with it),
    leases through their store. The --file files and private directories of runs that are
    gone are removed. Entries are marked revoked and the ledger is compacted; what fails stays
    pending for the next try.

    \b
    Exit codes: 0 everything revoked (or nothing to do), 1 some revocations failed,
    2 usage/config error, 4 denied, 5 store unavailable.
    """
    if not orphaned:
        raise click.UsageError("say what to revoke: --orphaned")
    from .._exceptions import LeaselineError
    from .._ledger import done_record, revoked_record, run_alive
    from .._secret import Lease

    ledger = _ledger(ctx)
    targets = [
        e
        for e in ledger.entries()
        if e.status() == "pending" or (e.status() in {"orphaned", "expired"} and not e.alive())
    ]
    results: list[dict[str, Any]] = []
    failed = 0
    with make_resolver(ctx, handle_signals=False) as resolver:
        # tokens first: revoking one revokes every lease issued under it
        for entry in sorted(targets, key=lambda e: e.kind != "token"):
            outcome = "revoked"
            try:
                backend = resolver.backend(entry.store)
                if entry.kind == "token" and entry.accessor:
                    revoke_accessor(backend, entry.accessor)
                elif entry.lease_id:
                    lease = Lease(entry.lease_id, True, 0.0, 0.0, entry.expires_at or 0.0)
                    backend.revoke(lease)
            except LeaselineError as exc:
                outcome = f"failed: {exc}"
                failed += 1
            if outcome == "revoked":
                ledger.append(revoked_record(entry.id))
            results.append({**entry.as_dict(), "outcome": outcome})
        done = []
        remaining = {(e.pid, e.started) for e in ledger.entries()}
        for run in ledger.runs():
            key = (int(run.get("pid") or 0), run.get("started"))
            if run_alive(*key):
                continue  # still running
            # a run that is gone: its secret files go now, whatever else failed
            for path in run.get("files") or ():
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if run.get("dir"):
                shutil.rmtree(str(run["dir"]), ignore_errors=True)
            if key in remaining:
                continue  # something could not be revoked: keep the run for another try
            done.append(done_record(*key))
        ledger.append(*done)
    with contextlib.suppress(OSError):
        ledger.compact()
    if fmt == "json":
        click.echo(json.dumps(results, indent=2))
    elif not results:
        click.echo("no orphaned leases")
    else:
        for r in results:
            what = r["ref"] or f"token accessor {r['accessor']}"
            click.echo(f"{r['outcome']:>8}  {r['store']}  {what}  (pid {r['pid']})")
    if failed:
        raise SystemExit(1)
