"""The exception tree. Every error leaseline raises is a ``LeaselineError``::

    LeaselineError
    ├── InvalidReference(ValueError)        a string is not a valid reference
    ├── ConfigError(ValueError)             a config file or variable is wrong
    ├── UnknownStore(LookupError)           a reference names no configured store
    ├── SecretNotFound(KeyError)            the store has no such secret or field
    ├── AccessDenied(PermissionError)       the store refused (after one re-login)
    ├── BackendUnavailable(ConnectionError) the store cannot be reached within the deadline
    ├── BackendNotInstalled(ImportError)    the store's SDK is missing: names the pip extra
    └── LeaseExpired                        a lease ended and could not be replaced

Builtin mix-ins let callers catch what they already know (``except KeyError``). Messages name
references, stores, paths and fixes; they never contain a secret value.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BackendNotInstalled",
    "BackendUnavailable",
    "ConfigError",
    "InvalidReference",
    "LeaseExpired",
    "LeaselineError",
    "SecretNotFound",
    "UnknownStore",
]


class LeaselineError(Exception):
    """Base class of every leaseline error."""

    #: CLI exit code for this kind of failure.
    exit_code = 1

    def __init__(self, message: str, *, ref: str | None = None, store: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref
        self.store = store

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class InvalidReference(LeaselineError, ValueError):
    """A string is not a valid secret reference (or looks like a value passed by mistake)."""

    exit_code = 2


class ConfigError(LeaselineError, ValueError):
    """A configuration file or environment variable is invalid."""

    exit_code = 2


class UnknownStore(LeaselineError, LookupError):
    """A reference names a store that is neither configured nor a built-in type."""

    exit_code = 2


class SecretNotFound(LeaselineError, KeyError):
    """The store has no secret at that locator, or the secret has no such field."""

    exit_code = 3


class AccessDenied(LeaselineError, PermissionError):
    """The store refused the request, after one re-authentication."""

    exit_code = 4


class BackendUnavailable(LeaselineError, ConnectionError):
    """The store could not be reached, or stayed sealed/overloaded past the deadline.

    ``transient`` tells the resolver the request may be retried.
    """

    exit_code = 5

    def __init__(
        self,
        message: str,
        *,
        ref: str | None = None,
        store: str | None = None,
        transient: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, ref=ref, store=store)
        self.transient = transient
        self.retry_after = retry_after


class BackendNotInstalled(LeaselineError, ImportError):
    """The SDK a store type needs is not installed; the message names the pip extra."""

    exit_code = 2


class LeaseExpired(LeaselineError):
    """A lease reached its end and no fresh credential could be issued in time."""

    exit_code = 5
