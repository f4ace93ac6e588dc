"""leaseline for Airflow: a secrets backend handing tasks short-lived credentials.

``[secrets] backend = leaseline.airflow.LeaselineBackend`` (workers read ``[workers]
secrets_backend``, falling back to it). Importing this package does not import Airflow;
``LeaselineBackend`` is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._provider_info import get_provider_info

if TYPE_CHECKING:
    from ._backend import LeaselineBackend

__all__ = ["LeaselineBackend", "get_provider_info"]


def __getattr__(name: str) -> Any:
    if name == "LeaselineBackend":
        from ._backend import LeaselineBackend

        return LeaselineBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
