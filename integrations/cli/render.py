"""``leaseline render``: write secrets into files once (an init container), hand the leases over.

Shares option parsing with ``leaseline agent`` (``agent --once`` is ``render``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from . import Options

if TYPE_CHECKING:
    from ..runtime.render import Output

__all__ = ["build_outputs", "output_options", "render", "render_once"]


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected an octal mode such as 0600") from None
    if mode & ~0o777:
        raise click.BadParameter(f"{text!r}: expected permission bits only, such as 0600")
    return mode


def build_outputs(files: tuple[str, ...], templates: tuple[str, ...], mode: str) -> list[Output]:
    """:class:`~leaseline.runtime.render.Output` list from ``--file PATH=REF`` and ``--template SRC:DEST``."""
    from ..runtime.render import Output

    bits = _mode(mode)
    outputs = []
    for text in files:
        path, sep, ref = text.partition("=")
        if not sep or not path or not ref:
            raise click.UsageError(f"--file expects PATH=REF, got {path!r}=...")
        outputs.append(Output.file(path, ref, bits))
    for text in templates:
        src, sep, dest = text.partition(":")
        if not sep or not src or not dest:
            raise click.UsageError(f"--template expects SRC:DEST, got {text!r}")
        outputs.append(Output.from_template(src, dest, bits))
    if not outputs:
        raise click.UsageError("nothing to render: give --file PATH=REF or --template SRC:DEST")
    return outputs


def output_options(fn: Any) -> Any:
    """The ``--file``/``--template``/``--mode`` options shared by ``render`` and ``agent``."""
    fn = click.option(
        "--mode",
        default="0600",
        show_default=True,
        metavar="OCTAL",
        help="File mode of every rendered file.",
    )(fn)
    fn = click.option(
        "--template",
        "templates",
        multiple=True,
        metavar="SRC:DEST",
        help="Render template file SRC (placeholders {{ REF }}, {{ REF#field | FILTER }}) to "
        "DEST. Repeatable.",
    )(fn)
    fn = click.option(
        "--file",
        "files",
        multiple=True,
        metavar="PATH=REF",
        help="Write REF's value to PATH (a multi-field secret without #FIELD: a JSON object of "
        "its fields). Repeatable.",
    )(fn)
    return fn


def render_once(opts: Options, outputs: list[Output], *, quiet: bool = False) -> None:
    """Render ``outputs`` once and hand every lease over (recorded in the ledger, not revoked)."""
    from .._config import load_config
    from .._ledger import Ledger, Recorder, default_path
    from .._resolver import Resolver
    from ..runtime.ci import announce_masks
    from ..runtime.render import Renderer, detach, handover_config

    announce_masks()
    config = load_config(opts.config)
    resolver = Resolver(handover_config(config), handle_signals=False)
    try:
        renderer = Renderer(resolver, outputs)
        written = renderer.render(force=True)
        recorder = Recorder(
            Ledger(default_path(config.section("ledger"))), resolver, "render", handover=True
        )
        recorder.record(p.store for p in renderer.parsed.values())
    except BaseException:
        resolver.close()  # nothing was handed over: take nothing with us
        raise
    leases = len(resolver.leases())
    detach(resolver)
    if not quiet:
        for path in written:
            click.echo(f"leaseline render: wrote {os.fspath(path)}", err=True)
        click.echo(
            f"leaseline render: {len(written)} file(s), {leases} lease(s) handed over "
            "(see `leaseline leases list`)",
            err=True,
        )


@click.command("render")
@output_options
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success.")
@click.pass_context
def render(
    ctx: click.Context, files: tuple[str, ...], templates: tuple[str, ...], mode: str, quiet: bool
) -> None:
    """Write secrets into files once, for an init container, and exit.

    \b
    Each file is written atomically (a reader sees the old file or the new one, never a part)
    with mode 0600. Templates combine several values in one file:
      {{ vault://database/creds/reader#username }}     a value
      {{ db#password | pgpass }}                        an alias, then a filter
    Filters: json (quoted JSON string), pgpass (escapes \\ and :), base64, url, trim.
    All fields of one reference in one file come from the same credential.

    \b
    The leases taken are NOT revoked when render exits: they are recorded in the lease ledger
    (ids, never values) for a sidecar (`leaseline agent`, which takes them over and revokes
    them when it stops) or a later `leaseline leases revoke --orphaned`. Vault leases are taken
    without a per-task child token, so they outlive this process until their own TTL.

    \b
    Examples:
      leaseline render --file /secrets/openai=vault://secret/llm/openai#api_key
      leaseline render --template /etc/leaseline/pgpass.tpl:/secrets/.pgpass

    \b
    Exit codes: 0 ok, 2 usage/config error, 3 not found, 4 denied, 5 store unavailable.
    """
    opts = ctx.find_object(Options) or Options()
    render_once(opts, build_outputs(files, templates, mode), quiet=quiet)
