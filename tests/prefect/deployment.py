"""Prefect as deployed: ``prefect server start``, a process work pool and its worker, and a
``flow.serve()`` runner, all subprocesses of one ``PREFECT_HOME``.

Plain Python (no pytest): :meth:`PrefectDeployment.start`, :meth:`serve`, :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
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

FLOWS = Path(__file__).resolve().parent / "deployed_flows"
POOL = "leaseline-pool"


@dataclass
class PrefectDeployment:
    home: Path
    env: dict[str, str] = field(repr=False)
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def results(self) -> Path:
        return self.home / "results"

    def console(self, name: str) -> Path:
        return self.home / "consoles" / f"{name}.log"

    def consoles(self) -> dict[str, str]:
        return {
            n: self.console(n).read_text("utf-8", "replace")
            for n in self.procs
            if self.console(n).exists()
        }

    def tails(self) -> str:
        return "\n".join(f"--- {n} ---\n{tail(self.console(n), 3000)}" for n in self.procs)

    @classmethod
    def start(cls, home: Path, env: dict[str, str], *, timeout: float = 120) -> PrefectDeployment:
        port = free_port()
        env = {
            **env,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"),
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
        dep = cls(home, env, port)
        (home / "consoles").mkdir(exist_ok=True)
        track(dep)
        dep._spawn(
            "server",
            ["-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        )
        try:
            wait_until(dep._healthy, timeout=timeout, what="prefect server", alive=dep._dead)
            dep.python(FLOWS / "leaky.py", "deploy", "pool", POOL, create_pool=True)
            dep._spawn("worker", ["-m", "prefect", "worker", "start", "--pool", POOL])
        except (RuntimeError, TimeoutError) as exc:
            dep.stop()
            raise RuntimeError(f"{exc}\n{dep.tails()}") from None
        return dep

    def serve(self, name: str) -> None:
        """``flow.serve(name)`` in a runner process; returns when the deployment exists."""
        self._spawn(f"serve-{name}", [str(FLOWS / "leaky.py"), "serve", name])

        def registered() -> bool:
            self.deployment_id(f"leaky/{name}")
            return True

        wait_until(registered, timeout=90, what=f"leaky/{name} served", alive=self._dead)

    def _spawn(self, name: str, argv: list[str]) -> None:
        with self.console(name).open("wb") as console:
            self.procs[name] = subprocess.Popen(
                [sys.executable, *argv],
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _dead(self) -> str | None:
        dead = [
            f"{n} exited with {p.returncode}" for n, p in self.procs.items() if p.poll() is not None
        ]
        return "; ".join(dead) or None

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.api_url}/health", timeout=3) as resp:
            return resp.status == 200

    def python(self, script: Path, *args: str, create_pool: bool = False) -> str:
        if create_pool:
            self.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
        proc = subprocess.run(
            [sys.executable, str(script), *args],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{script.name} {args[0]} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def cli(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.api_url}/{path.lstrip('/')}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        for attempt in range(10):  # the server answers 503 while its SQLite is busy (its own
            try:  # client retries those too)
                with urllib.request.urlopen(request, timeout=30) as resp:
                    return json.load(resp)
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 502, 503) or attempt == 9:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def deployment_id(self, name: str) -> str:
        flow_name, _, deployment = name.partition("/")
        return str(self.api("GET", f"deployments/name/{flow_name}/{deployment}")["id"])

    def run(self, name: str, timeout: float = 180) -> dict[str, Any]:
        """Create a run of deployment ``name`` and wait until it is final; returns the flow run."""
        run = self.api("POST", f"deployments/{self.deployment_id(name)}/create_flow_run", {})
        deadline = time.monotonic() + timeout
        while True:
            run = self.api("GET", f"flow_runs/{run['id']}")
            if (run.get("state") or {}).get("type") in ("COMPLETED", "FAILED", "CRASHED"):
                return dict(run)
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run of {name} still {run.get('state')}\n{self.tails()}")
            time.sleep(1)

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
        return list(self.api("POST", "task_runs/filter", body))

    def logs(
        self, flow_run_id: str, *, containing: str = "", timeout: float = 60
    ) -> list[dict[str, Any]]:
        """The run's logs; with ``containing``, once one holds it (logs are shipped to the API
        in batches, after the run's final state)."""
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
        deadline = time.monotonic() + timeout
        while True:
            logs = list(self.api("POST", "logs/filter", body))
            if not containing or any(containing in str(log.get("message")) for log in logs):
                return logs
            if time.monotonic() > deadline:
                return logs
            time.sleep(1)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            stop_process(proc, grace=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        untrack(self)
