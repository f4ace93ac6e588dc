"""``leaseline audit verify|tail|analyze|hash``.

Why ~410 lines: four subcommands (verify, tail, analyze, hash), each with its table and JSON
output; the logic they print is in :mod:`leaseline.audit`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import Options, fail

if TYPE_CHECKING:
    from ..audit._verify import LineMarker

__all__ = ["audit"]

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def _audit_section(ctx: click.Context) -> Mapping[str, Any]:
    from .._config import load_config

    opts = ctx.find_object(Options) or Options()
    return load_config(opts.config).section("audit")


def _audit_key(ctx: click.Context) -> bytes | None:
    """``[audit] hmac_key``, resolved (a reference such as ``env://LEASELINE_AUDIT_KEY``).

    The resolver that reads it has no auditor: looking at the trail does not write to it.
    """
    import dataclasses
    from types import MappingProxyType

    from .._config import load_config
    from .._exceptions import LeaselineError
    from .._resolver import Resolver
    from ..audit import audit_key

    opts = ctx.find_object(Options) or Options()
    try:
        config = load_config(opts.config)
        section = config.section("audit")
        if not section.get("hmac_key"):
            return None
        quiet = dataclasses.replace(
            config,
            sections=MappingProxyType({k: v for k, v in config.sections.items() if k != "audit"}),
        )
        with Resolver(quiet, handle_signals=False) as resolver:
            return audit_key(section, resolver.resolve)
    except LeaselineError as exc:
        fail(f"[audit] hmac_key: {exc}", exc.exit_code)


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, box=None, pad_edge=False, show_edge=False)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=True, width=max(100, 30 * len(headers))).print(table)


@click.group("audit")
def audit() -> None:
    """The audit trail: verify its hash chain, follow it, raise alerts over it.

    \b
    leaseline writes one JSON line per store request ([audit] sink); each line holds the
    HMAC under the audit key ([audit] hmac_key; plain SHA-256 without one) of the one
    before it. `verify` checks that chain, `tail` shows the newest events, `analyze` reads
    leaseline trails, Vault/OpenBao audit-device logs and CloudTrail JSON and raises alerts
    (new or disallowed networks, off-hours access, usage spikes, bursts of denials), `hash`
    prints the HMAC of a value to grep the trail for.
    """


@audit.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--no-rotated", is_flag=True, help="Do not add rotated siblings (FILE.1, FILE.2...) of FILE."
)
@click.option(
    "--strict-start",
    is_flag=True,
    help="Fail when the oldest file given is a rotated one that starts mid-chain "
    "(by default a warning: its predecessors were pruned by rotation).",
)
@click.option(
    "--unkeyed-ok",
    is_flag=True,
    help="Accept lines chained by plain SHA-256 although [audit] hmac_key is set "
    "(a trail written before the key was configured).",
)
@_FORMAT
@click.pass_context
def verify(
    ctx: click.Context,
    files: tuple[Path, ...],
    no_rotated: bool,
    strict_start: bool,
    unkeyed_ok: bool,
    fmt: str,
) -> None:
    """Check the chain of an audit trail, across rotated files.

    \b
    Links are HMACs under [audit] hmac_key (read from the config, as the writer did); a
    trail written without a key is chained by plain SHA-256, which verify reports: it
    catches damage, not someone who can rewrite the file. With a key, SHA-256 links are
    errors (unless --unkeyed-ok). Reports an edited line, deleted lines, reordered lines
    and complete lines outside the chain (inserted) with the file and line number.
    A last line torn by a killed writer is reported as a warning: every complete line before
    it is still verified. Rotated files are read oldest first (FILE.3, FILE.2, FILE.1, FILE).

    \b
    Examples:
      leaseline audit verify /var/log/leaseline/audit.jsonl
      leaseline audit verify --format json audit.jsonl.2 audit.jsonl.1 audit.jsonl

    \b
    Exit codes: 0 chain intact (warnings allowed), 1 chain broken, 2 usage error.
    """
    from ..audit._verify import verify_files, with_rotated

    paths: list[Path] = []
    for f in files:
        if not f.exists():
            fail(f"no such file: {f}", 2)
        paths.extend([f] if no_rotated else with_rotated(f))
    report = verify_files(
        paths, strict_start=strict_start, key=_audit_key(ctx), unkeyed_ok=unkeyed_ok
    )
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    else:
        for p in report.problems:
            level = "error" if p.fatal else "warning"
            click.echo(f"{level}: {p.file}:{p.line}: {p.kind}: {p.message}")
        status = "OK" if report.ok else "BROKEN"
        chain = {"hmac-sha256": ", keyed (HMAC-SHA256)", "sha256": ", plain SHA-256"}
        click.echo(
            f"{status}: {report.lines} line(s) in {len(report.files)} file(s), "
            f"seq {report.first_seq}..{report.last_seq}{chain.get(report.chain, '')}"
        )
    raise SystemExit(0 if report.ok else 1)


def _sink_path(ctx: click.Context) -> Path:
    spec = str(_audit_section(ctx).get("sink") or "")
    if not spec or spec in {"stdout", "logging"} or spec.startswith("logging:"):
        fail("no FILE given and [audit] sink is not a file", 2)
    return Path(spec[len("file://") :] if spec.startswith("file://") else spec)


def _show(lines: list[str], fmt: str, marker: LineMarker) -> None:
    marks = [marker.mark(line) for line in lines]
    if fmt == "json":
        for line, mark in zip(lines, marks, strict=True):
            if mark:
                click.echo(f"leaseline: warning: {mark}: {line[:80]}", err=True)
            click.echo(line)
        return
    rows = []
    for line, mark in zip(lines, marks, strict=True):
        try:
            r = json.loads(line)
            if not isinstance(r, dict):
                raise ValueError(line)
        except ValueError:
            rows.append(["?", "(torn line)", "", "", "", ""])
            continue
        who = r.get("actor") or {}
        who = who if isinstance(who, dict) else {}
        ctx = next((f"{k}:{v}" for k, v in who.items() if isinstance(v, dict)), "")
        what = str(r.get("event", ""))
        if what == "cache_hits":
            what = f"cache_hits x{r.get('count')}"
        if mark:
            what = f"[{mark.upper()}] {what}"
        rows.append(
            [
                str(r.get("time", "")),
                what,
                str(r.get("outcome", "")),
                str(r.get("ref") or ""),
                f"{who.get('user', '')}@{who.get('host', '')}:{who.get('pid', '')} {ctx}".strip(),
                "" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f}",
            ]
        )
    _table(["time", "event", "outcome", "ref", "actor", "ms"], rows)
    if any(marks):
        click.echo(
            f"{sum(1 for m in marks if m)} line(s) marked are not part of the chain as written: "
            "run `leaseline audit verify` on the file",
            err=True,
        )


@audit.command("tail")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-n", "--lines", "count", default=10, show_default=True, help="Lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events (across rotation).")
@_FORMAT
@click.pass_context
def tail(ctx: click.Context, file: Path | None, count: int, follow: bool, fmt: str) -> None:
    """Show the newest events of the audit trail (default: the [audit] sink file).

    Lines that are not part of the chain are marked: [UNCHAINED] (no prev/seq: inserted),
    [BROKEN LINK] (its prev does not follow the line before: edited, deleted or inserted),
    [UNKEYED] (plain SHA-256 although [audit] hmac_key is set).

    \b
    Examples:
      leaseline audit tail -n 50
      leaseline audit tail -f --format json /var/log/leaseline/audit.jsonl | jq .ref

    \b
    Exit codes: 0 ok, 2 usage or config error (no such file).
    """
    path = file or _sink_path(ctx)
    if not path.exists():
        fail(f"no such file: {path}", 2)
    from ..audit._verify import LineMarker

    lines = [ln for ln in path.read_text("utf-8", errors="replace").splitlines() if ln.strip()]
    shown = lines[-count:] if count > 0 else []
    marker = LineMarker(_audit_key(ctx))
    if len(shown) < len(lines):
        marker.mark(lines[-len(shown) - 1])  # the line before the window, for the first link
    _show(shown, fmt, marker)
    if not follow:
        return
    fh = path.open("rb")
    fh.seek(0, os.SEEK_END)
    ino = os.fstat(fh.fileno()).st_ino
    pending = b""
    try:
        while True:
            chunk = fh.read()
            if chunk:
                pending += chunk
                *done, pending = pending.split(b"\n")
                text = [d.decode("utf-8", "replace") for d in done if d.strip()]
                if text:
                    _show(text, fmt, marker)
                    sys.stdout.flush()
                continue
            try:
                if os.stat(path).st_ino != ino:  # rotated: the rest is in the new file
                    fh.close()
                    fh = path.open("rb")
                    ino = os.fstat(fh.fileno()).st_ino
                    continue
            except FileNotFoundError:
                pass
            time.sleep(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        fh.close()


@audit.command("analyze")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--allowed-network",
    "networks",
    multiple=True,
    metavar="CIDR",
    help="Allowed source network (repeatable); overrides [audit.analyze] allowed_networks.",
)
@click.option("--business-hours", metavar="HH:MM-HH:MM", help="e.g. 08:00-19:00.")
@click.option("--timezone", "tz", metavar="ZONE", help="e.g. Europe/Berlin (default UTC).")
@click.option("--business-days", metavar="DAYS", help="e.g. mon,tue,wed,thu,fri.")
@click.option(
    "--fail-on",
    type=click.Choice(["low", "medium", "high"]),
    default="low",
    show_default=True,
    help="Lowest severity that makes the exit code 1.",
)
@_FORMAT
@click.pass_context
def analyze(
    ctx: click.Context,
    files: tuple[Path, ...],
    networks: tuple[str, ...],
    business_hours: str | None,
    tz: str | None,
    business_days: str | None,
    fail_on: str,
    fmt: str,
) -> None:
    """Raise alerts over leaseline trails, Vault/OpenBao audit logs and CloudTrail JSON.

    \b
    Rules (settings in [audit.analyze]):
      disallowed_network  high    source outside allowed_networks
      new_source          medium  an identity uses an address it never used before
      off_hours           medium  access outside business_hours/business_days in timezone
      spike               high    per identity and secret, a spike_bucket far above the
                                  median (robust: MAD), at least spike_min_count
      denial_burst        high    denial_threshold denials within denial_window
    Identities: leaseline user@host plus task; Vault/OpenBao auth display_name (or
    entity); CloudTrail userIdentity.arn. Sources: leaseline `source`, Vault/OpenBao
    request.remote_address, CloudTrail sourceIPAddress.

    \b
    Examples:
      leaseline audit analyze /var/log/openbao/audit.log
      leaseline audit analyze --business-hours 08:00-19:00 --timezone Europe/Berlin \\
          --allowed-network 10.0.0.0/8 --format json audit.jsonl cloudtrail.json

    \b
    Exit codes: 0 no alert at or above --fail-on (default: any alert), 1 alerts,
    2 usage or config error.
    """
    from ..audit._analyze import SEVERITIES, Settings
    from ..audit._analyze import analyze as run_rules
    from ..audit._readers import read_accesses

    table = dict(_audit_section(ctx).get("analyze") or {})
    if networks:
        table["allowed_networks"] = list(networks)
    if business_hours:
        table["business_hours"] = business_hours
    if tz:
        table["timezone"] = tz
    if business_days:
        table["business_days"] = business_days
    try:
        settings = Settings.from_table(table)
    except ValueError as exc:
        fail(str(exc), 2)
    for f in files:
        if not f.exists():
            fail(f"no such file: {f}", 2)
    accesses = read_accesses(files)
    alerts = run_rules(accesses, settings)
    if fmt == "json":
        for alert in alerts:
            click.echo(json.dumps(alert.as_dict(), sort_keys=True))
    else:
        if alerts:
            _table(
                ["severity", "rule", "identity", "secret/address", "first", "count", "detail"],
                [
                    [
                        a.severity,
                        a.rule,
                        a.identity,
                        a.secret or a.address or "",
                        a.first.strftime("%Y-%m-%d %H:%M:%S"),
                        str(a.count),
                        a.message,
                    ]
                    for a in alerts
                ],
            )
        click.echo(f"{len(alerts)} alert(s) over {len(accesses)} access record(s)", err=True)
    threshold = SEVERITIES.index(fail_on)
    raise SystemExit(1 if any(SEVERITIES.index(a.severity) >= threshold for a in alerts) else 0)


@audit.command("hash")
@click.argument("value", metavar="VALUE|-")
@click.pass_context
def hash_value(ctx: click.Context, value: str) -> None:
    """Print the HMAC of a value under the audit key, to grep the trail for.

    \b
    Each event's value_hmacs holds, per field, HMAC-SHA256 of the value alone under
    [audit] hmac_key (as Vault's audit devices and its sys/audit-hash do): a responder
    holding one leaked value finds every event that handed it out. `-` reads the value
    from stdin (one trailing newline dropped); prefer it: an argument is visible in `ps`
    and shell history. The value is never printed.

    \b
    Examples:
      leaseline audit hash - < leaked.txt
      grep -F "$(leaseline audit hash - < leaked.txt)" /var/log/leaseline/audit.jsonl

    \b
    Exit codes: 0 ok, 2 no [audit] hmac_key or no value.
    """
    from ..audit import value_hmac

    if value == "-":
        data = sys.stdin.read()
        data = data[:-2] if data.endswith("\r\n") else data.removesuffix("\n")
    else:
        data = value
    if not data:
        fail("no value given (empty argument or empty stdin)", 2)
    key = _audit_key(ctx)
    if key is None:
        fail(
            "no audit key: set [audit] hmac_key (or LEASELINE_AUDIT__HMAC_KEY) to the key the "
            "trail was written with",
            2,
        )
    click.echo(value_hmac(key, data))
