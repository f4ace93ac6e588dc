"""``leaseline proxy``: the command; what it does is :mod:`leaseline.runtime.proxy`."""

from __future__ import annotations

import contextlib
import signal

import click

from . import Options

__all__ = ["proxy"]


@click.command("proxy")
@click.option(
    "--listen",
    required=True,
    metavar="ADDR",
    help="Where processes reach it: a loopback HOST:PORT or unix:/PATH (made 0660).",
)
@click.option("--store", default="vault", show_default=True, help="The vault store to serve.")
@click.pass_context
def proxy(ctx: click.Context, listen: str, store: str) -> None:
    """Serve one Vault credential per node: OpenBao Proxy (or Vault Proxy) with a node token.

    \b
    Logs in with the store's config ([stores.vault]: token, AppRole, Kubernetes, JWT...), takes
    a per-node child token and runs `bao proxy` (`vault proxy` if that is the binary found) with
    a generated config: `cache {}` (one leased response for every process, renewed by the
    proxy) and the node's token forced on every request. Processes then set
      LEASELINE_STORES__VAULT__PROXY=true LEASELINE_STORES__VAULT__ADDR=<the listen address>
    and hold no token. The proxy is restarted with backoff when it exits or stops answering.
    On SIGTERM, SIGINT or SIGHUP the node token is revoked - and with it every lease minted
    through the proxy - and it exits. After a kill -9, `leaseline leases revoke --orphaned`
    revokes the token. Who can connect to the address can read what the node token can:
    a unix socket is made 0660; a TCP address must be loopback.

    \b
    Examples:
      leaseline proxy --listen unix:/run/leaseline/proxy.sock
      leaseline proxy --listen 127.0.0.1:8100

    \b
    Exit codes: 0 stopped by a signal (node token revoked), 1 the proxy failed to start,
    2 usage/config error or no proxy binary, 4 denied, 5 store unavailable (at start, or at stop:
    the token could not be revoked and is pending in the lease ledger).
    """
    from .._config import load_config
    from .._ledger import Ledger, default_path
    from .._resolver import Resolver
    from ..runtime.proxy import Listen, Proxy, find_proxy_binary

    opts = ctx.find_object(Options) or Options()
    where = Listen.parse(listen)
    binary = find_proxy_binary()
    config = load_config(opts.config)
    resolver = Resolver(config, handle_signals=False)
    runner = Proxy(resolver, store, where, Ledger(default_path(config.section("ledger"))), binary)
    previous = {
        s: signal.signal(s, lambda signum, frame: runner.stop())
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        runner.start()
        click.echo(
            f"leaseline proxy: serving store {store} at {where.addr} "
            f"(LEASELINE_STORES__{store.upper()}__PROXY=true "
            f"LEASELINE_STORES__{store.upper()}__ADDR={where.addr})",
            err=True,
        )
        runner.run()
    finally:
        unrevoked = runner.close()
        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
    if unrevoked:
        from .leases import report_unrevoked

        raise SystemExit(report_unrevoked("proxy", unrevoked))
    click.echo("leaseline proxy: stopped; the node token and its leases are revoked", err=True)
