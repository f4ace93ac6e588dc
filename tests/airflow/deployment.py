"""Airflow as deployed: api-server, scheduler, DAG processor and a Celery worker, one home.

``[core] executor = LocalExecutor,CeleryExecutor`` (Airflow's multiple executors): one
scheduler runs tasks on the LocalExecutor and, for tasks that ask for it, on Celery (Redis
broker), whose prefork pool processes fork the task processes. Metadata in PostgreSQL (the
LocalExecutor refuses SQLite). Every component's console goes to ``consoles/<name>.log``.
Plain Python (no pytest): :meth:`AirflowDeployment.start` and :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers._util import free_port, stop_process, tail, track, untrack, wait_until

COMPONENTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "celery-worker": ["celery", "worker", "--concurrency", "2", "--skip-serve-logs"],
}


@dataclass
class AirflowDeployment:
    home: Path
    env: dict[str, str] = field(repr=False)
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def console(self, name: str) -> Path:
        return self.home / "consoles" / f"{name}.log"

    def consoles(self) -> dict[str, str]:
        return {
            name: self.console(name).read_text("utf-8", "replace")
            for name in self.procs
            if self.console(name).exists()
        }

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def start(cls, home: Path, env: dict[str, str], *, timeout: float = 240) -> AirflowDeployment:
        port = free_port()
        env = {
            **env,
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        }
        dep = cls(home, env, port)
        (home / "consoles").mkdir(exist_ok=True)
        migrate = dep.cli("db", "migrate", timeout=300)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-4000:]}")
        track(dep)
        for name, args in COMPONENTS.items():
            argv = [a.replace("{port}", str(port)) for a in args]
            with dep.console(name).open("wb") as console:
                dep.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "airflow", *argv],
                    env=env,
                    cwd=home,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: stop() ends its children too
                )
        try:
            wait_until(
                dep._healthy,
                timeout=timeout,
                what="airflow api-server",
                alive=dep._dead,
                interval=1,
            )
        except (RuntimeError, TimeoutError) as exc:
            dep.stop()
            raise RuntimeError(f"{exc}\n{dep.tails()}") from None
        return dep

    def _dead(self) -> str | None:
        dead = [
            f"{n} exited with {p.returncode}" for n, p in self.procs.items() if p.poll() is not None
        ]
        return "; ".join(dead) or None

    def tails(self) -> str:
        return "\n".join(
            f"--- {name} console ---\n{tail(self.console(name), 3000)}" for name in self.procs
        )

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
            body = json.load(resp)
        return all(
            (body.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            stop_process(proc, grace=15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        untrack(self)

    # -- talking to it ----------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    def api(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        """The public REST API (simple auth manager, all admins: a token needs no login)."""
        if self._token is None:
            with urllib.request.urlopen(f"{self.url}/auth/token", timeout=10) as resp:
                self._token = str(json.load(resp)["access_token"])
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v2/{path.lstrip('/')}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Content-Type": "application/json",
                "Accept": "text/plain" if raw else "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            payload = resp.read().decode("utf-8", "replace")
        return payload if raw else json.loads(payload)

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        def parsed() -> bool:
            try:
                self.api("GET", f"dags/{dag_id}")
            except urllib.error.HTTPError:
                return False
            return True

        wait_until(
            parsed, timeout=timeout, what=f"DAG {dag_id} parsed", alive=self._dead, interval=1
        )

    def run_dag(self, dag_id: str, timeout: float = 300) -> dict[str, Any]:
        """Trigger ``dag_id`` and wait until its run ends; returns the run."""
        run = self.api("POST", f"dags/{dag_id}/dagRuns", {"logical_date": None})
        run_id = run["dag_run_id"]
        deadline = time.monotonic() + timeout
        while True:
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return dict(run)
            problem = self._dead()
            if problem:
                raise RuntimeError(f"{problem}\n{self.tails()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG run {run_id} still {run['state']}\n{self.tails()}")
            time.sleep(1)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        body = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as the REST API serves it (what the UI shows)."""
        body = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
            "?full_content=true",
        )
        return json.dumps(body)

    def log_files(self) -> dict[Path, str]:
        root = self.home / "logs"
        return {p: p.read_text("utf-8", "replace") for p in root.rglob("*") if p.is_file()}
