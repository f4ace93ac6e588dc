"""The ``leaseline`` command.

Subcommands are loaded lazily from ``"module:attr"`` strings (the table below), so ``leaseline
--help`` imports no SDK and a subcommand whose module is missing breaks only itself.

Exit codes, for every command (``run`` exits with its child's code instead):

====  =====================================================================
0     ok
1     failure, or findings (``doctor`` found a problem, ``scan`` found secrets)
2     usage or configuration error (bad option, malformed manifest or config, invalid reference)
3     not found (no secret at that reference, or no such field)
4     denied (the store refused the request)
5     store unavailable (unreachable, sealed, timed out)
====  =====================================================================
"""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from .._resolver import Resolver

__all__ = ["COMMANDS", "Options", "cli", "end_process", "fail", "main", "make_resolver"]

#: set by :func:`main` when it was called as the process entry point (no ``argv``): commands may
#: then end the process without interpreter teardown (see :func:`end_process`).
_owns_process = False

#: name -> ("module:attr", one-line help). Other engineers' commands live in their own modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("leaseline.cli.agent:agent", "Sidecar: keep secret files fresh; revoke on stop."),
    "audit": ("leaseline.cli.audit:audit", "Verify, tail and analyze audit logs."),
    "dev": ("leaseline.cli.dev:dev", "Start a local OpenBao dev server with demo secrets."),
    "doctor": (
        "leaseline.cli.doctor:doctor",
        "Check stores, auth and references; exit 1 on failure.",
    ),
    "get": ("leaseline.cli.get:get", "Print the value a reference points at."),
    "leases": ("leaseline.cli.leases:leases", "List leases held by runs; revoke orphaned ones."),
    "plan": (
        "leaseline.cli.plan:plan",
        "Least Vault/IAM policy per pipeline stage, from its files; no secret read.",
    ),
    "proxy": (
        "leaseline.cli.proxy:proxy",
        "Serve one Vault credential per node through OpenBao/Vault Proxy.",
    ),
    "render": ("leaseline.cli.render:render", "Init container: write secret files and exit."),
    "rotation": (
        "leaseline.cli.rotation:rotation",
        "Check ages against policies; rotate in two phases.",
    ),
    "run": ("leaseline.cli.run:run", "Run a command with secrets in its environment, masked."),
    "scan": ("leaseline.cli.scan:scan", "Find committed credentials in files and notebooks."),
}

EXIT_CODES = """\b
Exit codes:
  0  ok                       3  not found
  1  failure or findings      4  denied
  2  usage or config error    5  store unavailable
  (run exits with the child's code; 128+N when the child was killed by signal N)"""


@dataclass
class Options:
    """Global options, on ``click.Context.obj``."""

    config: str | None = None
    debug: bool = False


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``leaseline: error: message`` to stderr and exit with ``code``."""
    click.echo(f"leaseline: error: {message}", err=True)
    raise SystemExit(code)


def end_process(code: int) -> NoReturn:
    """Exit with ``code``, skipping interpreter teardown when :func:`main` owns the process.

    Tearing down the interpreter (hvac, requests, click... module by module) costs ~30 ms that
    a command which has already cleaned up (leases revoked, ledger written) need not pay.
    Everything a normal exit does that matters still happens: ``atexit`` handlers run (logging
    shutdown, resolver close), stdout and stderr are flushed. When ``main`` was called with an
    explicit ``argv`` (in-process callers, tests) or a non-daemon thread is still running, this
    is a plain ``SystemExit``.
    """
    if _owns_process and not any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        import atexit
        import os

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    raise SystemExit(code)


def make_resolver(ctx: click.Context | None = None, **kwargs: Any) -> Resolver:
    """A :class:`leaseline.Resolver` from ``--config`` (or the usual places) and the environment."""
    from .._config import load_config
    from .._resolver import Resolver

    ctx = ctx or click.get_current_context()
    opts = ctx.find_object(Options) or Options()
    return Resolver(load_config(opts.config), **kwargs)


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, from :data:`COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, _, attr = spec[0].partition(":")
        try:
            module = importlib.import_module(module_name)
            command = getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            return _unavailable(cmd_name, spec[0], exc)
        if not isinstance(command, click.Command):
            return _unavailable(cmd_name, spec[0], TypeError("not a click command"))
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table: listing commands must not import them.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(60)))
            else:
                rows.append((name, COMMANDS[name][1]))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, target: str, exc: BaseException) -> click.Command:
    detail = f"{type(exc).__name__}: {exc}"

    @click.command(
        name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
        help=f"(not available: {target} could not be loaded)",
    )
    def missing() -> None:
        fail(
            f"'leaseline {name}' is not available in this installation ({target}: {detail}); "
            "upgrade leaseline or install the extra that provides it",
            2,
        )

    return missing


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES,
)
@click.option(
    "--config",
    "config",
    metavar="PATH",
    envvar="LEASELINE_CONFIG",
    help="Config file (default: $LEASELINE_CONFIG, ./leaseline.toml, [tool.leaseline] in "
    "./pyproject.toml). LEASELINE_<SECTION>__<KEY> variables apply on top.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(package_name="leaseline", prog_name="leaseline")
@click.pass_context
def cli(ctx: click.Context, config: str | None, debug: bool) -> None:
    """leaseline - short-lived secrets for ML pipelines, from any store.

    \b
    A secret reference names a secret in a store:
      vault://secret/llm/openai#api_key     aws-sm://prod/openai#api_key
      vault://database/creds/reader         env://OPENAI_API_KEY
    `leaseline run` turns references into values for a command, keeps their leases renewed
    while it runs, masks them in its output and revokes them when it ends.

    \b
    Examples:
      leaseline get vault://secret/llm/openai#api_key
      leaseline run --env OPENAI_API_KEY=vault://secret/llm/openai#api_key -- python train.py
      leaseline doctor
      leaseline dev --postgres
    """
    ctx.obj = Options(config=config, debug=debug)
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="leaseline: %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point: maps errors to exit codes, no traceback without ``--debug``."""
    global _owns_process
    _owns_process = argv is None
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args[: args.index("--")] if "--" in args else "--debug" in args
    try:
        cli.main(args=args, prog_name="leaseline", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("leaseline: aborted", err=True)
        raise SystemExit(130) from None
    except click.exceptions.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except BaseException as exc:
        from .._exceptions import LeaselineError

        if debug:
            raise
        if isinstance(exc, LeaselineError):
            fail(str(exc), exc.exit_code)
        if isinstance(exc, OSError):
            fail(f"{exc.strerror or exc} ({getattr(exc, 'filename', None) or 'OS error'})", 1)
        from ..masking import masker

        detail = masker().mask(f"{type(exc).__name__}: {exc}")
        fail(f"internal error ({detail}); rerun with --debug for details", 1)
    raise SystemExit(0)
