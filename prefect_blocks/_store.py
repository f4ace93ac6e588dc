"""``LeaselineStore``: how to reach and authenticate to one secret store, and its resolver."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from leaseline import InvalidReference, Resolver, default_resolver
from leaseline._scope import Resolvers, config_with_store, looks_like_credential
from leaseline.audit import add_context_provider
from leaseline.masking import masker
from prefect.blocks.core import Block, schema_extra
from pydantic import ConfigDict, Field, SecretStr, field_validator

from . import _failures
from ._runs import audit_context

__all__ = ["LeaselineStore", "resolver_for"]

_LOGO = (
    "https://raw.githubusercontent.com/PrefectHQ/prefect/main/docs/images/logos/prefect-logo.png"
)


def _refuse_values(value: Any, where: str) -> None:
    """Refuse option values that look like credentials: those belong in a store."""
    if isinstance(value, str):
        kind = looks_like_credential(value)
        if kind:
            raise InvalidReference(
                f"LeaselineStore {where} looks like a credential ({kind}); block documents keep "
                "no secret values: give a reference such as env://VAULT_TOKEN or "
                "file:///run/secrets/vault-token instead (or, if you must, secret_options)"
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_values(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _refuse_values(item, f"{where}[{index}]")


def _store_schema_extra(schema: dict[str, Any], model: type[Block]) -> None:
    """Prefect's block schema, with ``secret_options`` named ``secret_options.*``.

    Prefect names a ``dict[str, SecretStr]`` field bare in ``secret_fields``, and its API then
    hides the field only if the whole value is one string: the values of the dict came back in
    clear to any reader who did not ask for secrets. ``.*`` makes it hide every value under the
    field (as it does for ``SecretDict``).
    """
    schema_extra(schema, model)
    schema["secret_fields"] = [
        "secret_options.*" if f == "secret_options" else f for f in schema["secret_fields"]
    ]


class LeaselineStore(Block):
    """How to reach and authenticate to one leaseline store (``[stores.NAME]`` as a block).

    ``options`` holds the store's settings exactly as ``leaseline.toml`` would; credentials go in
    as references that are resolved where the flow runs, so the block document holds none::

        LeaselineStore(
            store_name="vault",
            options={"addr": "https://vault.internal:8200", "token": "env://VAULT_TOKEN"},
        ).save("vault")

    ``secret_options`` (dotted keys for nested settings, e.g. ``auth.secret_id``) takes literal
    credentials for stores that cannot use a reference; Prefect then stores them encrypted, as
    its own ``Secret`` block does. Raises :class:`leaseline.InvalidReference` for an option value
    that looks like a credential.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(json_schema_extra=_store_schema_extra)

    _block_type_name: ClassVar[str] = "Leaseline Store"
    _block_type_slug: ClassVar[str] = "leaseline-store"
    _logo_url: ClassVar[Any] = _LOGO
    _description: ClassVar[str] = (
        "How to reach and authenticate to a secret store (Vault/OpenBao, AWS, Azure Key Vault, "
        "env, file) for leaseline references. Credentials are references, not values."
    )

    store_name: str = Field(
        default="vault",
        description="The store's name in references: STORE in STORE://LOCATOR.",
        pattern=r"^[a-z][a-z0-9-]*$",
    )
    store_type: str | None = Field(
        default=None,
        description="Store type (vault, aws-sm, aws-ssm, aws-sts, azure-kv, env, file); "
        "defaults to the store name.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Store settings as in leaseline.toml, e.g. addr, namespace, region, "
        'auth = {method = "approle", role_id = "...", secret_id = "env://SECRET_ID"}.',
    )
    secret_options: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Literal credentials (dotted keys for nested settings). Prefer references "
        "in options: these are stored, encrypted, in Prefect's database.",
    )

    @field_validator("options")
    @classmethod
    def _no_values(cls, options: dict[str, Any]) -> dict[str, Any]:
        _refuse_values(options, "options")
        return options

    def validate_references(self) -> None:
        """Check the settings again (attributes may have been changed since construction)."""
        _refuse_values(self.options, "options")

    def table(self) -> dict[str, Any]:
        """The ``[stores.NAME]`` table this block stands for (literal credentials included)."""
        table: dict[str, Any] = json.loads(json.dumps(self.options))
        if self.store_type:
            table["type"] = self.store_type
        for dotted, secret in self.secret_options.items():
            value = secret.get_secret_value()
            masker().add(value)
            node = table
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return table

    def get_resolver(self) -> Resolver:
        """The process's resolver for this store (one per distinct store settings)."""
        return resolver_for(self)

    def _to_block_document(self, *args: Any, **kwargs: Any) -> Any:
        self.validate_references()
        return super()._to_block_document(*args, **kwargs)


#: one resolver per distinct store settings (a digest of them: no setting is kept in the key)
_resolvers: Resolvers[str] = Resolvers()


def resolver_for(store: LeaselineStore | None) -> Resolver:
    """The resolver blocks use: the default one, or one per distinct ``LeaselineStore``.

    A resolver is shared by every block naming the same store settings, so they share its cache,
    leases and child token. The store is added to the configuration from the environment and
    ``leaseline.toml`` (aliases, audit, resolver settings still apply). The first value handed
    out makes Prefect mask a failed run's exception before recording it (:mod:`._failures`).
    """
    add_context_provider(audit_context)
    _failures.install_when_values_exist()
    if store is None:
        return default_resolver()
    name, table = store.store_name, store.table()
    digest = hashlib.sha256(json.dumps([name, table], sort_keys=True, default=str).encode())
    return _resolvers.get(digest.hexdigest(), lambda: Resolver(config_with_store(name, table)))


def _reset() -> None:
    """Close and forget every store resolver (tests)."""
    _resolvers.close()
