"""examples/notebooks/explore.ipynb in a real kernel against OpenBao: every output shows ``***``
where the key was, the saved notebook holds no form of it, and it stays valid."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.canary import encodings
from tests.servers import OpenBao

from .conftest import run_notebook

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "explore.ipynb"
REF = "vault://secret/llm/openai#api_key"


def test_example_notebook(notebook_env: OpenBao, canary: Any, tmp_path: Path) -> None:
    value = canary.new("example-key")
    path = f"nb-example/{secrets.token_hex(4)}"
    notebook_env.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"api_key": value}, mount_point="secret"
    )
    example = nbformat.read(EXAMPLE, as_version=4)
    assert all(not c.get("outputs") for c in example.cells)  # committed clean
    code = [
        c.source.replace(REF, f"vault://secret/{path}#api_key")
        for c in example.cells
        if c.cell_type == "code"
    ]
    nb = run_notebook(code, tmp_path)
    saved = tmp_path / "explore.ipynb"
    nbformat.write(nb, saved)
    nbformat.validate(nbformat.read(saved, as_version=4))
    data = saved.read_bytes()
    for needle, form in encodings(value):
        assert needle not in data, f"the key is in the saved example ({form})"
    printed = nb.cells[2].outputs[0]["text"]
    assert printed == "***\nAuthorization: Bearer ***\n***\n"
    assert (
        nb.cells[3].outputs[0]["data"]["text/plain"] == "{'model': 'gpt-4o-mini', 'api_key': '***'}"
    )
    assert "holds no leases" in nb.cells[4].outputs[0]["text"]
