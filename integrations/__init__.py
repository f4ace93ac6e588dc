"""leaseline: short-lived credentials for ML pipelines.

A resolver turns secret references (``vault://secret/llm/openai#api_key``) into values and
leases: cached inside the lease, renewed, revoked when the task ends, masked in logs, audited.

>>> import leaseline
>>> leaseline.parse("vault://database/creds/reader#password").key
'vault://database/creds/reader'
"""

from __future__ import annotations

from ._api import aget, aresolve, default_resolver, get, lease, resolve, retry_on_rotation
from ._exceptions import (
    AccessDenied,
    BackendNotInstalled,
    BackendUnavailable,
    ConfigError,
    InvalidReference,
    LeaseExpired,
    LeaselineError,
    SecretNotFound,
    UnknownStore,
)
from ._refs import SecretRef, parse
from ._registry import register_backend
from ._resolver import Resolver
from ._secret import Lease, Secret
from ._stage import stage

__version__ = "0.1.0"


def load_ipython_extension(shell: object) -> None:
    """``%load_ext leaseline``: mask resolved values in everything the kernel shows, add the
    ``%leaseline`` magic (:mod:`leaseline.notebook`; IPython is imported only now)."""
    from .notebook import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: object) -> None:
    """``%unload_ext leaseline``."""
    from .notebook import unload_ipython_extension as unload

    unload(shell)


__all__ = [
    "AccessDenied",
    "BackendNotInstalled",
    "BackendUnavailable",
    "ConfigError",
    "InvalidReference",
    "Lease",
    "LeaseExpired",
    "LeaselineError",
    "Resolver",
    "Secret",
    "SecretNotFound",
    "SecretRef",
    "UnknownStore",
    "aget",
    "aresolve",
    "default_resolver",
    "get",
    "lease",
    "parse",
    "register_backend",
    "resolve",
    "retry_on_rotation",
    "stage",
]
