"""``env://NAME``: a variable of the process environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from .._exceptions import SecretNotFound
from .._refs import SecretRef
from .._secret import Lease
from . import BackendContext, ReadResult, SecretMetadata, options_of

__all__ = ["EnvBackend"]


class EnvBackend:
    """Reads ``os.environ``; an optional ``prefix`` is prepended to every name."""

    type: ClassVar[str] = "env"
    default_refresh_after = 60.0

    def __init__(self, name: str, options: Mapping[str, Any], context: BackendContext) -> None:
        opts = options_of(options, {"prefix"}, f"[stores.{name}]")
        self.name = name
        self._prefix = str(opts.get("prefix", ""))

    def read(self, ref: SecretRef) -> ReadResult:
        var = self._prefix + ref.locator.lstrip("/")
        value = os.environ.get(var)
        if value is None:
            raise SecretNotFound(
                f"environment variable {var} is not set (reference {ref.key})", ref=ref.key
            )
        return ReadResult({"value": value})

    def renew(self, lease: Lease) -> Lease:
        return lease

    def revoke(self, lease: Lease) -> None:
        pass

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        return SecretMetadata(ref.key)

    def close(self) -> None:
        pass
