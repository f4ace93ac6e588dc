"""``leaseline agent``: the command; what it does is :mod:`leaseline.runtime.agent`."""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

import click

from . import Options
from .render import build_outputs, output_options, render_once

if TYPE_CHECKING:
    from .._ledger import Unrevoked
from ..runtime.agent import Agent, Notify, _say

__all__ = ["agent"]


@click.command("agent")
@output_options
@click.option(
    "--signal",
    "signals",
    multiple=True,
    metavar="PIDFILE:SIGNAL",
    help="After a re-render, send SIGNAL to the pid in PIDFILE (e.g. /run/app.pid:HUP).",
)
@click.option("--once", is_flag=True, help="Render once, hand the leases over, exit (= render).")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    metavar="SECONDS",
    help="How often to check static secrets for changes (leases renew on their own schedule).",
)
@click.pass_context
def agent(
    ctx: click.Context,
    files: tuple[str, ...],
    templates: tuple[str, ...],
    mode: str,
    signals: tuple[str, ...],
    once: bool,
    interval: float,
) -> None:
    """Keep secret files fresh for a service (a sidecar); revoke every lease when stopped.

    \b
    The agent renders every --file and --template like `leaseline render`, then:
      - keeps each lease renewed, and issues a fresh credential at max TTL;
      - re-renders a file atomically when its content changes (rotation, new KV version), so a
        reader never sees a partial file, and signals the application if --signal is given;
      - takes over the leases a finished `leaseline render` handed over (init container);
      - on SIGTERM, SIGINT or SIGHUP revokes every lease (and its per-task Vault token) and
        exits 0; a lease or token it could not revoke (store down, sealed) is kept as pending in
        the lease ledger for `leaseline leases revoke --orphaned`, and the exit status says so.

    \b
    Examples:
      leaseline agent --template /etc/leaseline/pgpass.tpl:/secrets/.pgpass
      leaseline agent --file /secrets/openai=openai --signal /secrets/app.pid:HUP

    \b
    Exit codes: 0 stopped by a signal (everything revoked), 2 usage/config error,
    3 not found, 4 denied, 5 store unavailable (at start, or at stop: something could not be
    revoked and is pending), 1 some other revocation failure.
    """
    opts = ctx.find_object(Options) or Options()
    outputs = build_outputs(files, templates, mode)
    notify = tuple(Notify.parse(s) for s in signals)
    if once:
        render_once(opts, outputs)
        return
    from .._config import load_config
    from .._ledger import Ledger, default_path
    from .._resolver import Resolver
    from ..runtime.ci import announce_masks

    announce_masks()
    config = load_config(opts.config)
    resolver = Resolver(config, handle_signals=False)
    runner = Agent(
        resolver,
        outputs,
        Ledger(default_path(config.section("ledger"))),
        notify=notify,
        interval=interval,
    )
    previous = {
        s: signal.signal(s, lambda signum, frame: runner.stop())
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    unrevoked: list[Unrevoked] = []
    try:
        runner.start()
        _say(f"rendered {len(outputs)} file(s); holding {len(resolver.leases())} lease(s)")
        runner.run()
    finally:
        unrevoked = runner.close()
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
    if unrevoked:
        from .leases import report_unrevoked

        raise SystemExit(report_unrevoked("agent", unrevoked))
    _say(f"stopped; every lease revoked ({runner.rotations} rotation(s) served)")
