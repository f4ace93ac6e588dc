"""A user rotator for an LLM vendor's key-minting API (a template: ``AcmeKeys`` talks to a
made-up admin API). Register it in your package's pyproject::

    [project.entry-points."leaseline.rotators"]
    acme-llm-keys = "vendor_rotator:AcmeKeys"

leaseline writes the minted key to the store (KV v2 version / Secrets Manager AWSPENDING ->
AWSCURRENT), calls ``key_works`` before promoting it, waits the policy's grace window, then
calls ``revoke`` on the old key.
"""

from __future__ import annotations

import json
import urllib.request
from typing import ClassVar

from leaseline import Secret
from leaseline.rotators import Job, ProviderRotator

ADMIN_API = "https://api.acme-llm.example/v1/admin/keys"


def _call(method: str, url: str, admin_key: str, body: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


class AcmeKeys(ProviderRotator):
    name: ClassVar[str] = "acme-llm-keys"

    def _admin(self, job: Job) -> str:
        # the admin key is itself a reference: never in the config file
        return job.resolver.resolve(
            self.options.get("admin_key", "vault://secret/llm-admin/acme#key")
        )

    def mint(self, job: Job, current: Secret) -> dict[str, str]:
        created = _call("POST", ADMIN_API, self._admin(job), {"name": f"leaseline {job.ref.key}"})
        return {"api_key": created["secret"], "key_id": created["id"]}

    def revoke(self, job: Job, old: Secret) -> None:
        if "key_id" in old.fields:
            _call("DELETE", f"{ADMIN_API}/{old.reveal('key_id')}", self._admin(job))

    def discard(self, job: Job, new: Secret) -> None:
        self.revoke(job, new)


def key_works(secret: Secret) -> bool:
    """The verification hook: one cheap authenticated call with the new key."""
    request = urllib.request.Request(
        "https://api.acme-llm.example/v1/models",
        headers={"Authorization": f"Bearer {secret.reveal('api_key')}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status == 200
    except OSError:
        return False
