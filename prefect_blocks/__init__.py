"""Prefect blocks that store references, never values.

``prefect block register -m leaseline.prefect`` registers them (the ``prefect.collections``
entry point makes them loadable by slug too). Values are resolved inside the flow run, masked in
its logs, audited with its flow-run and task-run ids; dynamic leases taken in a run are revoked
when it ends, however it ends.

>>> from leaseline.prefect import SecretReference
>>> SecretReference(ref="vault://secret/llm/openai#api_key").save("openai")  # doctest: +SKIP
>>> SecretReference.load("openai").get()  # doctest: +SKIP
"""

from __future__ import annotations

from ._blocks import AwsRoleCredentials, DatabaseCredentials, DatabaseLease, SecretReference
from ._runs import revoke_leases
from ._store import LeaselineStore

__all__ = [
    "AwsRoleCredentials",
    "DatabaseCredentials",
    "DatabaseLease",
    "LeaselineStore",
    "SecretReference",
    "revoke_leases",
]
