"""``%load_ext leaseline`` in a real Jupyter kernel (ipykernel, run by nbclient) against a real
OpenBao: a canary the kernel resolves never reaches the saved notebook, in any form, while the
rest of every output is still there."""

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

CELLS = [
    "%load_ext leaseline",
    "import base64, json, os, leaseline\nkey = leaseline.resolve(os.environ['NB_REF'])",
    "%leaseline env NB_KEY={ref}",
    "print(key)",
    "print(f'the key is {key}!')",
    "class Frame:\n"
    "    def _repr_html_(self):\n"
    "        return f'<table><tr><td>api_key</td><td>{key}</td></tr></table>'\n"
    "    def __repr__(self):\n"
    "        return f'Frame(api_key={key})'\n"
    "Frame()",
    "{'api_key': key, 'model': 'gpt-small'}",
    "print('b64:', base64.b64encode(key.encode()).decode())",
    "from IPython.display import JSON, Markdown, display\n"
    "display(Markdown(f'**token** `{key}`'))\n"
    "display(JSON({'token': key, 'kind': 'json-view'}))",
    "import sys\nprint('on stderr', key, file=sys.stderr)",
    "print('env set:', os.environ['NB_KEY'] == key)",
    "%leaseline leases",
    "raise ValueError(f'rejected key {key} by the API')",
]


def _store(bao: OpenBao, value: str) -> str:
    path = f"nb/{secrets.token_hex(4)}"
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"api_key": value}, mount_point="secret"
    )
    return f"vault://secret/{path}#api_key"


def test_saved_notebook_holds_no_form_of_the_value(
    notebook_env: OpenBao, canary: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = canary.new("nb-key")
    ref = _store(notebook_env, value)
    monkeypatch.setenv("NB_REF", ref)
    nb = run_notebook([c.replace("{ref}", ref) for c in CELLS], tmp_path)
    saved = tmp_path / "run.ipynb"
    nbformat.write(nb, saved)
    data = saved.read_bytes()
    for needle, form in encodings(value):
        assert needle not in data, f"the canary is in the saved notebook ({form})"
    nbformat.validate(nbformat.read(saved, as_version=4))

    text = data.decode()
    outs = [c.outputs for c in nb.cells]
    assert outs[0] == [] and outs[1] == []
    assert outs[2][0]["text"] == f"leaseline: NB_KEY set from {ref}\n"
    assert outs[3][0]["text"] == "***\n"
    assert outs[4][0]["text"] == "the key is ***!\n"
    html = outs[5][0]["data"]
    assert html["text/html"] == "<table><tr><td>api_key</td><td>***</td></tr></table>"
    assert html["text/plain"] == "Frame(api_key=***)"
    assert outs[6][0]["data"]["text/plain"] == "{'api_key': '***', 'model': 'gpt-small'}"
    assert outs[7][0]["text"] == "b64: ***\n"
    assert outs[8][0]["data"]["text/markdown"] == "**token** `***`"
    assert outs[8][1]["data"]["application/json"] == {"token": "***", "kind": "json-view"}
    assert outs[9][0]["name"] == "stderr" and outs[9][0]["text"] == "on stderr ***\n"
    assert outs[10][0]["text"] == "env set: True\n"
    assert "holds no leases" in outs[11][0]["text"]  # a KV value has no lease
    error = outs[12][0]
    assert error["output_type"] == "error" and error["ename"] == "ValueError"
    assert error["evalue"] == "rejected key *** by the API"
    assert any("rejected key *** by the API" in line for line in error["traceback"])
    assert "ValueError" in text


def test_without_the_extension_the_value_is_saved(
    notebook_env: OpenBao, canary: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the extension prevents: the same cells without ``%load_ext`` save the value. (A
    value that is not a canary: this one is meant to be seen.)"""
    value = f"plain-{secrets.token_hex(12)}"
    ref = _store(notebook_env, value)
    monkeypatch.setenv("NB_REF", ref)
    nb = run_notebook([CELLS[1], CELLS[3], CELLS[7]], tmp_path)
    text = nbformat.writes(nb)
    assert value in text


def test_loaded_from_the_kernel_config(
    notebook_env: OpenBao, canary: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The automatic form: ``c.InteractiveShellApp.extensions`` in the profile's config."""
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        "c.InteractiveShellApp.extensions = ['leaseline']\n"
    )
    value = canary.new("nb-auto")
    ref = _store(notebook_env, value)
    monkeypatch.setenv("NB_REF", ref)
    nb = run_notebook([CELLS[1], CELLS[3], CELLS[6]], tmp_path)
    text = nbformat.writes(nb)
    for needle, form in encodings(value):
        assert needle.decode() not in text, f"the canary is in the notebook ({form})"
    assert nb.cells[1].outputs[0]["text"] == "***\n"
    assert "'model': 'gpt-small'" in nb.cells[2].outputs[0]["data"]["text/plain"]
