"""A real Jupyter kernel per notebook: ipykernel started by nbclient, OpenBao's address and
token in its environment, its state and IPython profile under the test's tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

from tests.servers import OpenBao


def run_notebook(cells: list[str], cwd: Path) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


@pytest.fixture
def notebook_env(vault_env: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> OpenBao:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.chdir(tmp_path)
    return vault_env


def run(kc: Any, code: str, messages: list[dict[str, Any]] | None = None) -> str:
    """Execute ``code`` on a kernel client; its stdout and results as text (errors fail the
    test). Every IOPub message is appended to ``messages`` when given."""
    shown: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if messages is not None:
            messages.append(msg)
        content = msg["content"]
        if msg["msg_type"] == "stream":
            shown.append(content["text"])
        elif msg["msg_type"] == "execute_result":
            shown.append(content["data"]["text/plain"])
        elif msg["msg_type"] == "error":
            raise AssertionError(f"{content['ename']}: {content['evalue']}")

    reply = kc.execute_interactive(code, output_hook=hook, timeout=120)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(shown)
