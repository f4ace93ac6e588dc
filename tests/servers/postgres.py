"""A throwaway PostgreSQL cluster on a free loopback port.

``initdb`` and ``postgres`` refuse to run as root, and CI runs as root: when euid == 0 the cluster
is owned by an unprivileged user (the ``postgres`` system user if it exists, else a ``leaseline-pg``
system user created with ``useradd --system``) and the binaries run as that user
(``subprocess`` ``user=``/``group=``, the same setuid/setgid that ``setpriv`` does). The
postmaster runs in the foreground as our direct child, so ``stop()``, the ``atexit`` backstop and
a parent-death signal all reach it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
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
    import psycopg

PG_MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
    "/usr/lib/postgresql/*/bin: apt-get install postgresql"
)
FALLBACK_USER = "leaseline-pg"


def find_pg_bindir() -> Path:
    """Directory holding ``initdb`` and ``postgres``: PATH first, then the newest Debian install."""
    initdb = shutil.which("initdb")
    if initdb:
        bindir = Path(os.path.realpath(initdb)).parent
        if (bindir / "postgres").exists():
            return bindir

    def version(p: str) -> int:
        try:
            return int(Path(p).parent.parent.name.split(".")[0])
        except ValueError:
            return 0

    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        bindir = Path(cand).parent
        if (bindir / "postgres").exists():
            return bindir
    raise ComponentMissing(PG_MISSING)


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(FALLBACK_USER)


STALE_AFTER_S = 600


def reap_stale_clusters() -> None:
    """Remove cluster dirs left by killed runs (SIGKILL skips ``stop()``; the postmaster itself
    dies with its parent). A dir is stale when it is older than 10 minutes and no live
    postmaster owns it."""
    now = time.time()
    for d in Path(tempfile.gettempdir()).glob("leaseline-pg-*"):
        try:
            if now - d.stat().st_mtime < STALE_AFTER_S:
                continue
            pidfile = d / "data" / "postmaster.pid"
            if pidfile.exists():
                pid = int(pidfile.read_text().split("\n", 1)[0])
                if Path(f"/proc/{pid}").exists():
                    continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Postgres:
    """A running throwaway cluster. Start with ``Postgres.start()``."""

    host: str
    port: int
    superuser: str
    password: str
    basedir: Path
    bindir: Path
    log_path: Path
    _proc: subprocess.Popen[bytes] = field(repr=False)
    _keep: bool = field(default=False, repr=False)

    @property
    def datadir(self) -> Path:
        return self.basedir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.basedir / "sock"

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    def start(cls, workdir: Path | None = None, *, timeout: float = 60) -> Postgres:
        """Create and start a cluster.

        ``workdir`` is ignored for the data directory when running as root: pytest's temp dirs
        are 0700 root-owned, which the service user could not traverse. The cluster then lives in
        its own ``mkdtemp`` directory (removed by ``stop()``).
        """
        bindir = find_pg_bindir()
        reap_stale_clusters()
        user = _service_user()
        base = Path(tempfile.mkdtemp(prefix="leaseline-pg-", dir=workdir if user is None else None))
        run_as: dict[str, Any] = {}
        if user is not None:
            os.chown(base, user.pw_uid, user.pw_gid)
            run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        password = secrets.token_urlsafe(24)
        superuser = "postgres"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(base),
        }

        def as_owner(path: Path) -> None:
            if user is not None:
                os.chown(path, user.pw_uid, user.pw_gid)

        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        as_owner(pwfile)
        (base / "sock").mkdir(mode=0o700)
        as_owner(base / "sock")
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(base / "data"),
                "-U",
                superuser,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=base,
            env=env,
            capture_output=True,
            **run_as,
        )
        pwfile.unlink()
        if init.returncode != 0:
            out = (init.stdout + init.stderr).decode("utf-8", "replace")
            shutil.rmtree(base, ignore_errors=True)
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{out}")

        last_error: Exception | None = None
        for attempt in range(3):
            port = free_port()
            log_path = base / f"postgres-{attempt}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [
                        str(bindir / "postgres"),
                        "-D",
                        str(base / "data"),
                        "-p",
                        str(port),
                        "-k",
                        str(base / "sock"),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=200",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=base,
                    env=env,
                    preexec_fn=die_with_parent,
                    **run_as,
                )
            pg = cls(
                host="127.0.0.1",
                port=port,
                superuser=superuser,
                password=password,
                basedir=base,
                bindir=bindir,
                log_path=log_path,
                _proc=proc,
            )
            track(pg)
            try:
                wait_until(pg._ready, timeout=timeout, what="PostgreSQL", alive=pg._dead)
            except (RuntimeError, TimeoutError) as exc:
                log_text = tail(log_path)
                stop_process(proc, sig=signal.SIGINT)
                last_error = exc
                if "already in use" in log_text:
                    continue
                pg.stop()
                raise RuntimeError(f"{exc}\n--- postgres log ---\n{log_text}") from None
            return pg
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {last_error}")

    def _dead(self) -> str | None:
        rc = self._proc.poll()
        return None if rc is None else f"postgres exited with code {rc}"

    def _ready(self) -> bool:
        with self.connect():
            return True

    # --- access --------------------------------------------------------------------------------

    def dsn(
        self, user: str | None = None, password: str | None = None, dbname: str = "postgres"
    ) -> str:
        """libpq URL; defaults to the superuser."""
        from urllib.parse import quote

        u = quote(user or self.superuser, safe="")
        p = quote(password if password is not None else self.password, safe="")
        return f"postgresql://{u}:{p}@{self.host}:{self.port}/{dbname}?sslmode=disable"

    def connect(
        self, user: str | None = None, password: str | None = None, dbname: str = "postgres"
    ) -> psycopg.Connection[Any]:
        """A psycopg connection (autocommit); defaults to the superuser."""
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=user or self.superuser,
            password=password if password is not None else self.password,
            dbname=dbname,
            sslmode="disable",
            connect_timeout=30,  # a loaded 2-core machine can take seconds to fork a backend
            autocommit=True,
        )

    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; return its rows (empty when it returns none)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql.encode() if params is None else sql, params)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def roles(self) -> set[str]:
        """Names of every role in ``pg_roles``."""
        return {str(r[0]) for r in self.execute("SELECT rolname FROM pg_roles")}

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the cluster directory."""
        stop_process(self._proc, sig=signal.SIGINT)
        untrack(self)
        if not self._keep:
            shutil.rmtree(self.basedir, ignore_errors=True)
