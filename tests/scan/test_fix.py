"""``leaseline scan --fix``: keys in notebooks' saved outputs become ``***``; the notebook stays
valid (``nbformat.validate``) and a clean notebook is not touched, byte for byte."""

from __future__ import annotations

import base64
import os
import secrets
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner
from leaseline.backends.memory import MemoryBackend
from leaseline.cli.scan import scan

from tests.canary import encodings

STORE = "fixmem"


def _key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "sk-proj-" + "".join(secrets.choice(alphabet) for _ in range(48))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("LEASELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    MemoryBackend.reset(STORE)
    yield
    MemoryBackend.reset(STORE)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(scan, list(args))
    return result.exit_code, result.stdout, result.stderr


def _notebook(path: Path, value: str, *, source: str = "train()") -> Path:
    v4 = nbformat.v4
    nb = v4.new_notebook()
    encoded = base64.b64encode(value.encode()).decode()
    nb.cells = [
        v4.new_markdown_cell("# Training"),
        v4.new_code_cell(
            source,
            execution_count=1,
            outputs=[
                v4.new_output("stream", name="stdout", text=f"epoch 1 loss 0.31\nkey {value}\n"),
                v4.new_output(
                    "execute_result",
                    execution_count=1,
                    data={
                        "text/plain": f"{{'api_key': '{value}', 'lr': 0.001}}",
                        "text/html": f"<td>{value}</td><td>lr</td>",
                        "application/json": {"token": value, "auth": encoded, "lr": 0.001},
                    },
                ),
                v4.new_output(
                    "error",
                    ename="AuthenticationError",
                    evalue=f"invalid key {value}",
                    traceback=[f"\x1b[0;31mAuthenticationError\x1b[0m: invalid key {value}"],
                ),
            ],
        ),
    ]
    nbformat.write(nb, path)
    return path


def _outputs(path: Path) -> list[Any]:
    return list(nbformat.read(path, as_version=4).cells[1].outputs)


def test_fix_masks_every_output_and_keeps_the_notebook_valid(tmp_path: Path) -> None:
    value = _key()
    path = _notebook(tmp_path / "train.ipynb", value)
    code, out, err = invoke("--fix", str(path))
    assert code == 1
    assert "cell 2 output 1 (stdout)" in out
    assert "fixed train.ipynb: " in err
    data = path.read_bytes()
    for needle, form in encodings(value):
        assert needle not in data, f"the key is still in the notebook ({form})"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stream, result, error = _outputs(path)
    assert stream["text"] == "epoch 1 loss 0.31\nkey ***\n"
    assert result["data"]["text/plain"] == "{'api_key': '***', 'lr': 0.001}"
    assert result["data"]["text/html"] == "<td>***</td><td>lr</td>"
    assert result["data"]["application/json"] == {"token": "***", "auth": "***", "lr": 0.001}
    assert error["evalue"] == "invalid key ***" and "AuthenticationError" in error["traceback"][0]

    # fixed: the next run finds nothing and leaves the file as it is
    code, out, _ = invoke("--fix", str(path))
    assert code == 0 and "no credentials found" in out
    assert path.read_bytes() == data


def test_clean_notebook_is_unchanged_byte_for_byte(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "clean.ipynb", "vault://secret/llm/openai#api_key")
    before, stat = path.read_bytes(), path.stat()
    code, out, err = invoke("--fix", str(tmp_path))
    assert code == 0 and "no credentials found" in out and "fixed" not in err
    assert path.read_bytes() == before and path.stat().st_mtime_ns == stat.st_mtime_ns


def test_key_in_a_cell_source_is_reported_not_rewritten(tmp_path: Path) -> None:
    value = _key()
    path = _notebook(tmp_path / "src.ipynb", value, source=f'client = OpenAI(api_key="{value}")')
    code, out, _ = invoke("--fix", str(path))
    assert code == 1 and "cell 2 (code) source" in out
    nb = nbformat.read(path, as_version=4)
    assert value in nb.cells[1].source
    assert all(value not in str(o) for o in nb.cells[1].outputs)


def test_managed_value_in_outputs_is_fixed(tmp_path: Path, canary: Any) -> None:
    """A managed reference's current value (not credential-shaped: no detector finds it) is
    masked too: --fix reads the references the config manages."""
    value = canary.new("managed-pw")
    MemoryBackend.put(STORE, "db/trainer", {"password": value})
    (tmp_path / "leaseline.toml").write_text(
        f'[stores.{STORE}]\ntype = "memory"\n\n[aliases]\ntrainer = "{STORE}://db/trainer#password"\n'
    )
    path = _notebook(tmp_path / "db.ipynb", value)
    code, _, err = invoke("--fix", str(path))
    assert code == 1 and "fixed db.ipynb" in err
    data = path.read_bytes()
    for needle, form in encodings(value):
        assert needle not in data, f"the managed value is still in the notebook ({form})"
    nbformat.validate(nbformat.read(path, as_version=4))

    code, _, err = invoke("--fix", "--no-managed", str(_notebook(tmp_path / "kept.ipynb", "x")))
    assert code == 0 and "fixed" not in err


def test_invalid_notebook_is_left_alone(tmp_path: Path) -> None:
    value = _key()
    path = _notebook(tmp_path / "bad.ipynb", value)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1]["outputs"][0]["bogus"] = 1  # not in the schema
    nbformat.write(nb, path, version=nbformat.NO_CONVERT)
    before = path.read_bytes()
    code, _, err = invoke("--fix", str(path))
    assert code == 2 and "not valid nbformat" in err
    assert path.read_bytes() == before
    path.unlink()  # the key stays in an invalid notebook: not a test artefact to keep


def test_fix_refuses_staged(tmp_path: Path) -> None:
    code, _, err = invoke("--fix", "--staged")
    assert code == 2 and "--fix rewrites files on disk" in err
