"""The credentials leaseline logs in with: store tokens (login and per-task child tokens),
AppRole secret ids, JWTs, passwords.

A backend calls :func:`remember` with each one as it uses it. They are masked like every value
handed out, and ``leaseline run`` keeps every variable that holds one out of its child's
environment (``leaseline.runtime.child.child_environment``).
"""

from __future__ import annotations

import threading

from . import masking

__all__ = ["credentials", "remember"]

_lock = threading.Lock()
_credentials: set[str] = set()


def remember(value: str | None) -> None:
    """Register a login credential: masked from now on, never passed on to a child."""
    if not value:
        return
    masking.masker().add(value)
    with _lock:
        _credentials.add(value)


def credentials() -> frozenset[str]:
    """Every login credential this process has used."""
    with _lock:
        return frozenset(_credentials)
