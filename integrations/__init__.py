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

__version__ = "0.1.0"

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
]
