"""Provider metadata for Airflow's ``apache_airflow_provider`` entry point.

This module imports nothing from Airflow (and nothing heavy from leaseline): Airflow calls
``get_provider_info`` while it is still initialising its configuration, and importing Airflow
from here would be a circular import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_provider_info"]

_VERSION = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    """What ``airflow providers list`` and ``airflow providers secrets`` show for leaseline."""
    return {
        "package-name": "leaseline",
        "name": "leaseline",
        "description": (
            "Short-lived credentials for Airflow tasks: a secrets backend that resolves "
            "references (vault://, aws-sm://, azure-kv://, ...) through leaseline's resolver, "
            "with caching, dynamic leases revoked at task end, masking and audit."
        ),
        "versions": [_VERSION],
        "secrets-backends": ["leaseline.airflow.LeaselineBackend"],
    }
