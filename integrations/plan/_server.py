"""The requests ``plan`` makes to Vault/OpenBao: which engine serves a path, write a policy and
the token role per-stage child tokens are made with.

None reads a secret: ``sys/internal/ui/mounts/PATH`` names the mount and its KV version (the
default policy allows it), ``sys/policies/acl/NAME`` writes a policy and
``auth/token/roles/ROLE`` the token role (``--apply`` only).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

from .._exceptions import AccessDenied, BackendUnavailable, ConfigError

__all__ = ["Vault", "worker_policy"]


class Vault:
    """``addr`` and ``token`` (default ``VAULT_ADDR``/``VAULT_TOKEN``, or ``BAO_*``)."""

    def __init__(self, addr: str | None = None, token: str | None = None) -> None:
        env = os.environ
        self.addr = (addr or env.get("VAULT_ADDR") or env.get("BAO_ADDR") or "").rstrip("/")
        if not self.addr.startswith(("http://", "https://")):
            raise ConfigError("plan: --addr (or VAULT_ADDR) must be http(s)://HOST:PORT")
        self._token = token or env.get("VAULT_TOKEN") or env.get("BAO_TOKEN") or ""
        cacert = env.get("VAULT_CACERT") or env.get("BAO_CACERT")
        self._tls = ssl.create_default_context(cafile=cacert) if cacert else None

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method)
        request.add_header("X-Vault-Request", "true")
        if self._token:
            request.add_header("X-Vault-Token", self._token)
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._tls) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise AccessDenied(
                    f"plan: {self.addr} denied {method} {path}: the token needs that capability"
                ) from None
            if exc.code == 404:
                return None
            raise BackendUnavailable(
                f"plan: {self.addr}: {method} {path}: HTTP {exc.code}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendUnavailable(f"plan: {self.addr} is unreachable ({reason})") from None
        return json.loads(raw) if raw else None

    def mounts(self, locators: Iterable[str]) -> dict[str, int | None]:
        """Mount path -> KV version (1, 2) or ``None`` (another engine), for each locator's mount."""
        found: dict[str, int | None] = {}
        for locator in sorted(set(locators)):
            if any(locator.startswith(m) for m in found):
                continue
            try:
                answer = self._request("GET", f"sys/internal/ui/mounts/{locator}") or {}
            except AccessDenied:
                # Vault answers 403 for a path under no mount, even to a root token: the plan
                # falls back to its assumption for this path and says so
                continue
            data = answer.get("data") or {}
            mount = str(data.get("path") or "")
            if not mount:
                continue
            version = ((data.get("options") or {}).get("version")) or "1"
            found[mount] = int(version) if data.get("type") in ("kv", "generic") else None
        return found

    def write_policy(self, name: str, hcl: str) -> None:
        self._request("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def read_policy(self, name: str) -> str | None:
        answer = self._request("GET", f"sys/policies/acl/{name}")
        return None if answer is None else str((answer.get("data") or {}).get("policy") or "")

    def write_token_role(self, role: str, policies: Iterable[str]) -> list[str]:
        """Let ``auth/token/create/ROLE`` make tokens with any of ``policies`` (added to what
        the role already allows, so pipelines applied one by one keep theirs): renewable,
        children of the token that makes them (not orphans). Returns the allowed policies."""
        current = self._request("GET", f"auth/token/roles/{role}") or {}
        allowed = set((current.get("data") or {}).get("allowed_policies") or [])
        allowed |= set(policies)
        body = {"allowed_policies": sorted(allowed), "orphan": False, "renewable": True}
        self._request("POST", f"auth/token/roles/{role}", body)
        return sorted(allowed)

    def read_token_role(self, role: str) -> list[str] | None:
        """The policies token role ``role`` allows, ``None`` when there is no such role."""
        answer = self._request("GET", f"auth/token/roles/{role}")
        if answer is None:
            return None
        return [str(p) for p in (answer.get("data") or {}).get("allowed_policies") or []]


def worker_policy(role: str) -> str:
    """The policy a worker's login needs to hand each stage its own token (and nothing more to
    read any secret itself: the stages' policies grant the reads)."""
    return (
        f'path "auth/token/create/{role}" {{  # per-stage child tokens\n'
        '  capabilities = ["update"]\n}\n'
        'path "auth/token/create" {  # the per-task child token\n'
        '  capabilities = ["update"]\n}\n'
        'path "auth/token/renew-self" {\n  capabilities = ["update"]\n}\n'
        'path "auth/token/revoke-self" {\n  capabilities = ["update"]\n}\n'
        'path "auth/token/lookup-self" {\n  capabilities = ["read"]\n}\n'
    )
