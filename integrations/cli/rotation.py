"""``leaseline rotation check|run``: secret ages against rotation policies, and rotation."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import click

from . import fail, make_resolver

if TYPE_CHECKING:
    from .._resolver import Resolver
    from ..rotation import RotationSettings

__all__ = ["rotation"]

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
_NOW = click.option(
    "--now",
    "now",
    hidden=True,
    metavar="TIME",
    help="Evaluate at TIME (ISO-8601 or epoch seconds) instead of the current time (testing).",
)


def _parse_now(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        fail(f"--now: expected ISO-8601 or epoch seconds, got {value!r}", 2)


def _settings(resolver: Resolver) -> RotationSettings:
    from ..rotation import RotationSettings

    settings = RotationSettings.from_section(resolver.config.section("rotation"))
    if not settings.policies:
        fail(
            "no rotation policies: add [[rotation.policies]] with match and kind to "
            f"{resolver.config.source or 'leaseline.toml'}",
            2,
        )
    return settings


def _age(seconds: float | None) -> str:
    from ..rotation import format_duration

    return "-" if seconds is None else format_duration(seconds)


@click.group("rotation")
def rotation() -> None:
    """Check secret ages against rotation policies; rotate what is due.

    \b
    Policies in leaseline.toml map reference globs to kinds:
      [[rotation.policies]]
      match = "vault://secret/llm/*"     # * is one path segment, ** any number
      kind = "llm-api-key"               # 90d; cloud-credential 30d; database-password: per deploy
    """


@rotation.command("check")
@_FORMAT
@click.option("--strict", is_flag=True, help="Exit 1 when something is due soon, too.")
@_NOW
@click.pass_context
def check_cmd(ctx: click.Context, fmt: str, strict: bool, now: str | None) -> None:
    """List every managed reference with its kind, age, limit, due date and status.

    \b
    Exit codes: 0 nothing overdue (due-soon only warns unless --strict), 1 something overdue,
    unknown or unreadable, 2 config error.
    """
    from ..rotation import DUE_SOON, OK, check

    at = _parse_now(now)
    with make_resolver(ctx) as resolver:
        results = check(resolver, settings=_settings(resolver), now=at)
    if fmt == "json":
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        _table(
            ["status", "reference", "kind", "age", "limit", "due", "detail"],
            [
                [
                    r.status,
                    r.ref,
                    r.kind,
                    _age(r.age),
                    r.limit,
                    (r.as_dict()["due_at"] or "-")[:16],
                    r.detail,
                ]
                for r in results
            ],
        )
    failing = [r for r in results if r.status not in (OK, DUE_SOON)]
    warned = [r for r in results if r.status == DUE_SOON]
    if failing or (strict and warned):
        raise SystemExit(1)


@rotation.command("run")
@click.option(
    "--deploy",
    "deploy",
    metavar="ID",
    help="Record deployment ID first: per-deploy secrets (database passwords) become due.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be rotated; change nothing.")
@click.option(
    "--ref", "refs", multiple=True, metavar="REF", help="Rotate REF now, due or not (repeatable)."
)
@_FORMAT
@_NOW
@click.pass_context
def run_cmd(
    ctx: click.Context,
    deploy: str | None,
    dry_run: bool,
    refs: tuple[str, ...],
    fmt: str,
    now: str | None,
) -> None:
    """Rotate every due reference: stage, verify, promote, grace window, retire.

    \b
    Each step is an audit event. A failure before promote leaves the old version current.
    Exit codes: 0 all rotated (or nothing due), 1 any failure, 2 config error.
    """
    from ..rotation import run

    at = _parse_now(now)
    with make_resolver(ctx) as resolver:
        _, results = run(
            resolver,
            settings=_settings(resolver),
            deploy=deploy,
            dry_run=dry_run,
            refs=list(refs) or None,
            now=at,
        )
    if fmt == "json":
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    elif not results:
        click.echo("nothing is due for rotation")
    else:
        _table(
            ["outcome", "reference", "rotator", "from", "to", "message"],
            [
                [
                    r.outcome,
                    r.ref,
                    r.rotator,
                    r.previous_version or "-",
                    r.version or "-",
                    r.message,
                ]
                for r in results
            ],
        )
    if any(not r.ok for r in results):
        raise SystemExit(1)


def _table(header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*header)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # references are not rich markup
    Console(width=200).print(table)
