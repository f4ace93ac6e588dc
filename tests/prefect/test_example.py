"""examples/prefect runs end to end: real Prefect API, OpenBao, PostgreSQL, a local LLM endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.prefect.conftest import PrefectServer, subprocess_env
from tests.servers import DatabaseEngine, OpenBao

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "prefect"


class FakeLLM:
    """An OpenAI-compatible ``/chat/completions`` that answers only the expected key."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.calls = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ok = self.headers.get("Authorization") == f"Bearer {owner.key}"
                owner.calls += 1
                prompt = json.loads(body)["messages"][0]["content"] if ok else ""
                answer = {"choices": [{"message": {"content": f"a tiny corpus ({len(prompt)})"}}]}
                payload = json.dumps(answer if ok else {"error": "bad key"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_llm(canary: Any) -> Iterator[FakeLLM]:
    llm = FakeLLM(canary.new("sk"))
    yield llm
    llm.close()


def test_example_flow_trains_and_calls_the_llm(
    prefect_server: PrefectServer,
    openbao: OpenBao,
    vault_db: DatabaseEngine,
    fake_llm: FakeLLM,
) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path="llm/openai", secret={"api_key": fake_llm.key}, mount_point="secret"
    )
    sys.path.insert(0, str(EXAMPLE))
    try:
        from blocks import save_blocks  # examples/prefect/blocks.py
    finally:
        sys.path.remove(str(EXAMPLE))
    save_blocks(openbao.addr, vault_db.pg.host, vault_db.pg.port, token_ref="env://VAULT_TOKEN")

    roles_before = vault_db.pg.roles()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "flow.py")],
        env=subprocess_env(
            prefect_server,
            openbao,
            VAULT_TOKEN=openbao.root_token,
            LLM_BASE_URL=fake_llm.url,
            PGSSLMODE="disable",
        ),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    print(proc.stdout, proc.stderr)  # scanned by the canary plugin
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["words"] == 8 and result["summary"].startswith("a tiny corpus")
    assert fake_llm.calls == 1
    assert not {r for r in vault_db.pg.roles() - roles_before if r.startswith("v-")}
