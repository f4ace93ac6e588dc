"""The ``scan`` command: exit codes, formats, baselines, --staged; no value in any output."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from leaseline.cli.scan import scan

from .conftest import assert_no_values


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("LEASELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(scan, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("fmt", ["table", "json", "sarif"])
def test_findings_exit_1_in_every_format_without_values(corpus, fmt: str) -> None:  # type: ignore[no-untyped-def]
    root, planted = corpus
    code, out, err = invoke("--format", fmt, str(root))
    assert code == 1
    assert_no_values(out + err, planted)
    if fmt == "json":
        doc = json.loads(out)
        assert doc["summary"]["findings"] == len(planted)
        assert all(f["advice"] for f in doc["findings"])
    elif fmt == "sarif":
        doc = json.loads(out)
        assert doc["version"] == "2.1.0"
        results = doc["runs"][0]["results"]
        assert len(results) == len(planted)
        assert all(
            r["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1 for r in results
        )
    else:
        assert "notebooks/train.ipynb" in out and "cell 2 output 1 (stdout)" in out
        assert "vault://secret/llm/openai#api_key" in out


def test_clean_tree_exits_0(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text('key = "vault://secret/llm/openai#api_key"\n')
    code, out, _ = invoke(str(tmp_path))
    assert code == 0 and "no credentials found" in out


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert invoke("--format", "xml", ".")[0] == 2
    assert invoke(str(tmp_path / "absent"))[0] == 2
    assert invoke("--update-baseline", ".")[0] == 2
    assert invoke("--baseline", str(tmp_path / "absent.json"), ".")[0] == 2


def test_canary_in_a_file_is_reported_redacted(canary, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    # the canary plugin fails this test if the value shows up in captured output
    value = canary.new("sk-proj")
    where = tmp_path_factory.mktemp("canary-src")
    (where / "settings.py").write_text(f'OPENAI_KEY = "{value}"\n')
    code, out, err = invoke(str(where))
    print(out, err)
    assert code == 1 and "OpenAI API key sk-p…" in out


def test_baseline_accepts_known_findings_and_catches_new_ones(corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, planted = corpus
    base = tmp_path / "baseline.json"
    code, _, err = invoke("--baseline", str(base), "--update-baseline", str(root))
    assert code == 0 and f"wrote {len(planted)}" in err
    assert_no_values(base.read_text(), planted)
    assert invoke("--baseline", str(base), str(root))[0] == 0
    new = root / "later.env"
    new.write_text(
        "HF_TOKEN=hf_" + secrets.token_urlsafe(30).replace("-", "A").replace("_", "b") + "\n"
    )
    try:
        code, out, _ = invoke("--baseline", str(base), str(root))
        assert code == 1 and "later.env:1: Hugging Face token" in out
    finally:
        new.unlink()


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_staged_reads_the_index_not_the_work_tree(tmp_path: Path, corpus) -> None:  # type: ignore[no-untyped-def]
    root, planted = corpus
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".env").write_text((root / ".env").read_text())
    (repo / "clean.py").write_text("x = 1\n")
    _git(repo, "add", ".env", "clean.py")
    (repo / ".env").write_text("CLEARED=1\n")  # work tree differs from the index
    (repo / "unstaged.py").write_text('token = "hf_' + "Zz9" * 12 + '"\n')
    os.chdir(repo)
    code, out, _ = invoke("--staged", "--format", "json")
    doc = json.loads(out)
    assert code == 1
    assert {f["path"] for f in doc["findings"]} == {".env"}
    assert len(doc["findings"]) == 4
    assert_no_values(out, planted)


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "leaseline.scan", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "leaseline.scan", "--nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2
