"""Writing a rotator: the public names (implementation in ``leaseline.rotation._rotators``).

Subclass :class:`ProviderRotator` and implement ``mint(job, current) -> {field: value}``
(optionally ``revoke(job, old)`` and ``discard(job, new)``), then register the class in the
``leaseline.rotators`` entry-point group. See docs/rotation.md.
"""

from __future__ import annotations

from .rotation._rotators import (
    Job,
    ProviderRotator,
    RandomPassword,
    RandomToken,
    Rotator,
    Staged,
    VaultDatabaseStaticRole,
)

__all__ = [
    "Job",
    "ProviderRotator",
    "RandomPassword",
    "RandomToken",
    "Rotator",
    "Staged",
    "VaultDatabaseStaticRole",
]
