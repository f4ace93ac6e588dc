"""``leaseline get REF``: print the value a reference points at."""

from __future__ import annotations

import json

import click

from . import make_resolver


@click.command("get")
@click.argument("ref")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print every field of the secret and its lease as JSON instead of one value.",
)
@click.pass_context
def get(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Print the value REF points at, followed by a newline.

    \b
    REF is a reference (STORE://LOCATOR[?OPTIONS][#FIELD]) or a configured alias. Without
    #FIELD, a one-field secret prints its value; a multi-field secret needs #FIELD or --json.
    Dynamic leases taken by `get` are revoked before it exits: use `leaseline run` to hand a
    credential to a program for its whole life.

    \b
    Examples:
      leaseline get vault://secret/llm/openai#api_key
      leaseline get vault://database/creds/reader --json | jq -r .fields.username

    \b
    Exit codes: 0 ok, 2 invalid reference or config, 3 not found, 4 denied, 5 store unavailable.
    """
    from ..runtime.ci import announce_masks

    announce_masks()  # GITHUB_ACTIONS=true: ::add-mask:: every value before it is printed
    with make_resolver(ctx) as resolver:
        parsed = resolver.parse(ref)
        if not as_json:
            click.echo(resolver.resolve(parsed))
            return
        secret = resolver.get(parsed)
        fields = list(secret.fields) if parsed.field is None else [parsed.field]
        lease = secret.lease
        doc = {
            "ref": str(parsed),
            "fields": {name: secret.reveal(name) for name in fields},
            "version": secret.version,
            "lease": None
            if lease is None
            else {
                "id": lease.id,
                "renewable": lease.renewable,
                "ttl": lease.ttl,
                "expires_at": lease.expires_at,
            },
        }
        click.echo(json.dumps(doc, indent=2))
