"""``leaseline run``: the command; what it does is :mod:`leaseline.runtime.run`."""

from __future__ import annotations

import click

from ..runtime.run import (
    Plan,
    _gc_paused,
    _on_change,
    _pair,
    _run_session,
    _signals_blocked,
    load_manifest,
)
from . import Options, end_process

__all__ = ["run"]


@click.command(
    "run",
    context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False},
)
@click.option(
    "--env",
    "envs",
    multiple=True,
    metavar="NAME=REF",
    help="Set environment variable NAME to the value REF points at. Repeatable.",
)
@click.option(
    "--file",
    "files",
    multiple=True,
    metavar="NAME=REF",
    help="Write REF's value to a 0600 file in a private tmpfs directory and set NAME to its "
    "path (or NAME=/abs/path=REF... see below). Removed when the command ends. Repeatable.",
)
@click.option(
    "--manifest",
    metavar="FILE",
    help="TOML (or .json) file with [env] and [files] tables of NAME = REF.",
)
@click.option("--no-mask", is_flag=True, help="Pass the command's output through unmasked.")
@click.option(
    "--on-change",
    default=None,
    metavar="restart|signal:NAME|ignore",
    help="When a credential is replaced (rotation, max TTL reached): restart the command with "
    "the new values, send it a signal (e.g. signal:HUP; --file files are rewritten first), or "
    "only rewrite --file files. Default: ignore.",
)
@click.option(
    "--no-env-refs",
    is_flag=True,
    help="Do not resolve environment variables whose values are references.",
)
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND [ARGS]...")
@click.pass_context
def run(
    ctx: click.Context,
    envs: tuple[str, ...],
    files: tuple[str, ...],
    manifest: str | None,
    no_mask: bool,
    on_change: str | None,
    no_env_refs: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND with secrets, holding their leases for its whole life.

    \b
    leaseline run resolves every reference, starts COMMAND with the values in its environment
    (or in files), and then:
      - keeps the leases renewed while COMMAND runs, and issues fresh credentials at max TTL;
      - masks every value in COMMAND's output, also base64, URL-encoded, JSON-escaped and hex
        forms and values split across writes; COMMAND runs in its own session, on its own
        pseudo-terminal where ours is a terminal, so colours, line buffering and isatty()
        behave as without leaseline and nothing reaches the terminal unmasked;
      - keeps the credentials leaseline logged in with (VAULT_TOKEN, BAO_TOKEN, AWS keys of a
        store it used, ...) out of COMMAND's environment; pass one on with --env NAME=env://NAME;
      - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 (and window size changes);
      - when COMMAND ends, however it ends, revokes every lease and the per-run Vault token;
      - exits with COMMAND's exit code (128+N when COMMAND was killed by signal N).

    \b
    Environment variables whose values are references (to a configured store or a store type
    other than file:// and env://) are resolved too: OPENAI_API_KEY=vault://secret/llm/openai#api_key
    The leases taken are written (ids and token accessors, never values) to the lease ledger;
    after a `kill -9` of leaseline itself, `leaseline leases revoke --orphaned` cleans up.

    \b
    --file NAME=REF writes the value to a file only this user can read, in a private directory
    on tmpfs (/dev/shm), and sets NAME to the file's path; --file /abs/path=REF writes to that
    path instead. Files are rewritten when the credential changes and removed at the end.

    \b
    Examples:
      leaseline run --env OPENAI_API_KEY=vault://secret/llm/openai#api_key -- python train.py
      leaseline run --env DB_USER=vault://database/creds/reader#username \\
                    --env DB_PASSWORD=vault://database/creds/reader#password -- ./etl.sh
      leaseline run --file GOOGLE_APPLICATION_CREDENTIALS=vault://secret/gcp#sa -- python job.py
      leaseline run --manifest secrets.toml --on-change restart -- python serve.py

    \b
    Exit codes: COMMAND's own; before COMMAND starts: 2 usage/config error, 3 not found,
    4 denied, 5 store unavailable, 126 not executable, 127 command not found.
    """
    opts = ctx.find_object(Options) or Options()
    plan = load_manifest(manifest) if manifest else Plan()
    for text in envs:
        name, ref = _pair("--env", text)
        plan.env[name] = ref
    for text in files:
        name, ref = _pair("--file", text, path_ok=True)
        plan.files[name] = ref
    policy, policy_signal = _on_change(on_change or plan.on_change or "ignore")
    from ..runtime.ci import announce_masks

    announce_masks()  # GITHUB_ACTIONS=true: ::add-mask:: every value before the child starts

    with _signals_blocked(), _gc_paused() as gc_on:
        code = _run_session(
            opts,
            plan,
            list(command),
            mask=not no_mask,
            implicit=not no_env_refs,
            policy=policy,
            policy_signal=policy_signal,
            gc_on=gc_on,
        )
    end_process(code)
