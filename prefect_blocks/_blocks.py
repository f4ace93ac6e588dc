"""Blocks that store references and resolve them where the flow runs.

Each block maps onto :class:`leaseline.Resolver` calls: nothing is cached, renewed or revoked
here. A dynamic credential a block reads inside a flow run is held by the run's scope until it
ends (:mod:`._runs`); values are masked in Prefect's run logs because the core registers every value
it hands out with the process masker, which rewrites log records as they are created.
"""

from __future__ import annotations

import contextlib
from abc import ABC
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

from leaseline import InvalidReference, Lease, Resolver, Secret, SecretRef, parse
from leaseline._scope import LeaseHandle, RotateCallback, aliases
from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, field_validator, model_validator

from ._runs import run_scope
from ._store import LeaselineStore, resolver_for

if TYPE_CHECKING:
    import boto3

__all__ = ["AwsRoleCredentials", "DatabaseCredentials", "DatabaseLease", "SecretReference"]

_REF_HELP = (
    "A secret reference, STORE://LOCATOR[?OPTIONS][#FIELD], or an alias from leaseline.toml."
)


def check_reference(ref: str, store: LeaselineStore | None, owner: str) -> SecretRef:
    """Parse ``ref`` for block ``owner``; raise :class:`InvalidReference` saying what is wrong."""
    try:
        try:
            parsed = parse(ref)
        except InvalidReference:
            if not isinstance(ref, str) or "://" in ref:
                raise
            parsed = parse(ref, aliases=aliases())  # an alias; re-raises if unknown
    except InvalidReference as exc:
        raise InvalidReference(f"{owner}.ref is refused:\n{exc.message}", ref=exc.ref) from None
    if store is not None and parsed.store != store.store_name and "://" in ref:
        raise InvalidReference(
            f"{owner}: reference '{parsed}' names store '{parsed.store}', but the block's store "
            f"is '{store.store_name}'; write it as '{store.store_name}://{parsed.locator}'",
            ref=str(parsed),
        )
    return parsed


class _ReferenceBlock(Block, ABC):
    """A block holding one reference and, optionally, the store to resolve it with."""

    # A refused value must never be echoed back inside pydantic's error message.
    model_config = ConfigDict(hide_input_in_errors=True)

    ref: str = Field(default=..., description=_REF_HELP)
    store: LeaselineStore | None = Field(
        default=None,
        description="The store to resolve with; without it, the stores configured in the "
        "environment and leaseline.toml where the flow runs.",
    )

    def _check(self, parsed: SecretRef) -> None:
        """Extra checks of a block type (override)."""

    @model_validator(mode="after")
    def _valid_reference(self) -> _ReferenceBlock:
        self.validate_references()
        return self

    def validate_references(self) -> SecretRef:
        """Check the reference (and the store's settings); raise :class:`InvalidReference`."""
        if self.store is not None:
            self.store.validate_references()
        parsed = check_reference(self.ref, self.store, type(self).__name__)
        self._check(parsed)
        return parsed

    def _to_block_document(self, *args: Any, **kwargs: Any) -> Any:
        # Every save goes through here (sync and async): refuse a reference changed since
        # construction before anything reaches Prefect's database.
        self.validate_references()
        return super()._to_block_document(*args, **kwargs)

    def get_resolver(self) -> Resolver:
        """The resolver this block resolves with."""
        return resolver_for(self.store)

    def _read(self) -> tuple[Resolver, SecretRef, Secret]:
        resolver = self.get_resolver()
        parsed = resolver.parse(self.ref)
        run = run_scope()  # inside a flow run, a lease is held until the run ends
        secret = run.get(resolver, parsed) if run is not None else resolver.get(parsed)
        return resolver, parsed, secret

    async def _aread(self) -> tuple[Resolver, SecretRef, Secret]:
        resolver = self.get_resolver()
        parsed = resolver.parse(self.ref)
        run = run_scope()
        secret = await (run.aget(resolver, parsed) if run is not None else resolver.aget(parsed))
        return resolver, parsed, secret


class SecretReference(_ReferenceBlock):
    """A reference to one secret; the value is read where the flow runs, never stored.

    >>> SecretReference(ref="vault://secret/llm/openai#api_key").save("openai")  # doctest: +SKIP
    >>> key = SecretReference.load("openai").get()  # doctest: +SKIP

    ``get()`` raises what :meth:`leaseline.Resolver.resolve` raises (``SecretNotFound``,
    ``AccessDenied``, ``BackendUnavailable``...). A dynamic secret read in a flow run is revoked
    when the run ends; ``lease()`` scopes it to a ``with`` block instead.
    """

    _block_type_name: ClassVar[str] = "Leaseline Secret Reference"
    _block_type_slug: ClassVar[str] = "leaseline-secret-reference"
    _description: ClassVar[str] = (
        "A reference to a secret in Vault/OpenBao, AWS, Azure Key Vault, env or files. Only the "
        "reference is stored; the value is resolved, cached inside its lease and masked in logs "
        "where the flow runs."
    )

    def get(self, field: str | None = None) -> str:
        """The value: the reference's ``#field``, ``field``, or the only field of the secret."""
        _, parsed, secret = self._read()
        value: str = secret.reveal(field or parsed.field)
        return value

    async def aget(self, field: str | None = None) -> str:
        """:meth:`get` for async flows; never blocks the event loop."""
        _, parsed, secret = await self._aread()
        value: str = secret.reveal(field or parsed.field)
        return value

    def get_secret(self) -> Secret:
        """Every field of the secret, with its lease (``repr`` shows no value)."""
        return self._read()[2]

    @contextlib.contextmanager
    def lease(self, on_rotate: RotateCallback | None = None) -> Iterator[LeaseHandle]:
        """Hold the lease for a ``with`` block: renewed inside it, revoked at its end.

        The handle always gives the current credential (``handle.reveal(field)``), also after
        a rotation; ``on_rotate(ref, old, new)`` is called when one happens.
        """
        with self.get_resolver().lease(self.ref, on_rotate=on_rotate) as handle:
            yield handle


class DatabaseLease:
    """What :meth:`DatabaseCredentials.lease` yields: the current credentials of a live lease."""

    __slots__ = ("_block", "_handle")

    def __init__(self, block: DatabaseCredentials, handle: LeaseHandle) -> None:
        self._block = block
        self._handle = handle

    @property
    def username(self) -> str:
        return str(self._handle.secret.reveal(self._block.username_field))

    @property
    def password(self) -> str:
        return str(self._handle.secret.reveal(self._block.password_field))

    @property
    def url(self) -> str:
        """The connection URL with the credentials of the lease as it is now."""
        return self._block.build_url(self._handle.secret)

    @property
    def lease(self) -> Lease | None:
        return self._handle.lease

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` and most DB-API drivers."""
        return self._block.build_connect_kwargs(self._handle.secret)

    def __repr__(self) -> str:
        return f"<DatabaseLease {self._handle.secret!r} at {self._block.address()}>"


class DatabaseCredentials(_ReferenceBlock):
    """Dynamic database credentials (``vault://database/creds/reader``) plus where the database is.

    >>> db = DatabaseCredentials(ref="vault://database/creds/reader", host="db", database="ml")
    >>> with db.lease() as held:  # doctest: +SKIP
    ...     rows = pandas.read_sql(query, held.url)

    Raises like :meth:`SecretReference.get`; :class:`leaseline.SecretNotFound` when the
    credential lacks the username or password field.
    """

    _block_type_name: ClassVar[str] = "Leaseline Database Credentials"
    _block_type_slug: ClassVar[str] = "leaseline-database-credentials"
    _description: ClassVar[str] = (
        "Short-lived database credentials from a dynamic secret (e.g. Vault's database engine): "
        "a connection URL whose user exists only for the lease, revoked when the flow run ends."
    )

    ref: str = Field(
        default=...,
        description="The credential, without #field, e.g. vault://database/creds/reader.",
        examples=["vault://database/creds/reader"],
    )
    host: str = Field(default=..., description="Database host.")
    port: int = Field(default=5432, description="Database port.", ge=1, le=65535)
    database: str = Field(default=..., description="Database name.")
    driver: str = Field(
        default="postgresql",
        description="URL scheme, e.g. postgresql, postgresql+psycopg, mysql+pymysql.",
        pattern=r"^[a-z][a-z0-9+]*$",
    )
    query: dict[str, str] = Field(
        default_factory=dict, description="URL query parameters, e.g. sslmode=verify-full."
    )
    username_field: str = Field(default="username", description="Field holding the user name.")
    password_field: str = Field(default="password", description="Field holding the password.")

    def _check(self, parsed: SecretRef) -> None:
        if parsed.field:
            raise InvalidReference(
                f"DatabaseCredentials: reference '{parsed}' selects field '{parsed.field}'; give "
                f"the whole credential, '{parsed.key}' (its {self.username_field} and "
                f"{self.password_field} fields are used)",
                ref=str(parsed),
            )

    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.database}"

    def build_url(self, secret: Secret) -> str:
        user = quote(secret.reveal(self.username_field), safe="")
        password = quote(secret.reveal(self.password_field), safe="")
        query = f"?{urlencode(sorted(self.query.items()))}" if self.query else ""
        return f"{self.driver}://{user}:{password}@{self.address()}{query}"

    def build_connect_kwargs(self, secret: Secret) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": secret.reveal(self.username_field),
            "password": secret.reveal(self.password_field),
            **self.query,
        }

    def get_url(self) -> str:
        """A connection URL with current credentials (held, in a flow run, until it ends)."""
        return self.build_url(self._read()[2])

    def get_connect_kwargs(self) -> dict[str, Any]:
        """``psycopg.connect(**kwargs)`` arguments with current credentials."""
        return self.build_connect_kwargs(self._read()[2])

    @contextlib.contextmanager
    def lease(self, on_rotate: RotateCallback | None = None) -> Iterator[DatabaseLease]:
        """Hold the credential for a ``with`` block: renewed inside it, revoked at its end.

        ``held.url`` always carries the current credentials; after a rotation (``on_rotate``)
        open a new connection with it.
        """
        with self.get_resolver().lease(self.ref, on_rotate=on_rotate) as handle:
            yield DatabaseLease(self, handle)


class AwsRoleCredentials(_ReferenceBlock):
    """AWS credentials from an STS role (or any reference with AWS key fields), never stored.

    >>> role = AwsRoleCredentials(ref="arn:aws:iam::123456789012:role/train")
    >>> s3 = role.get_boto3_session().client("s3")  # doctest: +SKIP

    A bare role ARN means ``aws-sts://ARN``. The session's credentials refresh themselves
    before they expire (:func:`leaseline.aws.session`).
    """

    _block_type_name: ClassVar[str] = "Leaseline AWS Role Credentials"
    _block_type_slug: ClassVar[str] = "leaseline-aws-role-credentials"
    _description: ClassVar[str] = (
        "Short-lived AWS credentials: an STS role assumed where the flow runs, refreshed before "
        "expiry. Only the role ARN is stored."
    )

    ref: str = Field(
        default=...,
        description="aws-sts://ROLE_ARN[?duration=900], a Vault AWS engine reference, or a "
        "bare role ARN.",
        examples=["aws-sts://arn:aws:iam::123456789012:role/train?duration=900"],
    )
    region_name: str | None = Field(default=None, description="AWS region of the session.")

    @field_validator("ref", mode="before")
    @classmethod
    def _arn(cls, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("arn:"):
            return f"aws-sts://{value}"
        return value

    def get_boto3_session(self) -> boto3.Session:
        """A ``boto3.Session`` whose credentials refresh before they expire.

        Raises :class:`leaseline.BackendNotInstalled` without boto3.
        """
        from leaseline.aws import session

        result: boto3.Session = session(self.ref, self.get_resolver(), region_name=self.region_name)
        return result

    def get_client(self, service: str, **kwargs: Any) -> Any:
        """``get_boto3_session().client(service, **kwargs)``."""
        boto_session: Any = self.get_boto3_session()
        return boto_session.client(service, **kwargs)
