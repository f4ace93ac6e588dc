"""``pre-commit`` in a real temporary git repository, with this repository's hook definitions.

Offline by construction: the hooks repository is a local git repository holding a copy of
``.pre-commit-hooks.yaml``, and the hook used is ``leaseline-scan-system`` (``language: system``:
the installed leaseline, nothing downloaded). ``leaseline-scan`` (``language: python``) differs
only in letting pre-commit build its own environment, which needs the package index.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(
    cwd: Path, *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=cwd, env=env, capture_output=True, text=True, check=check, timeout=300
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("LEASELINE_", "GIT_"))}
    out.update(
        {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + out.get("PATH", ""),
            "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
            "HOME": str(tmp_path / "home"),
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
            "GIT_CONFIG_NOSYSTEM": "1",
        }
    )
    (tmp_path / "home").mkdir()
    return out


def _notebook(output_text: str | None) -> str:
    outputs = (
        []
        if output_text is None
        else [{"output_type": "stream", "name": "stdout", "text": [output_text]}]
    )
    return json.dumps(
        {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "metadata": {},
                    "source": ["import os\n", "print(os.environ['OPENAI_API_KEY'])"],
                    "outputs": outputs,
                }
            ],
            "metadata": {},
            "nbformat": 4,
            "nbformat_minor": 5,
        },
        indent=1,
    )


def _project(tmp_path: Path, env: dict[str, str], hook: str) -> Path:
    """A git repository whose pre-commit config uses ``hook`` from a copy of this repository's
    hook definitions."""
    hooks = tmp_path / "hooks-repo"
    hooks.mkdir()
    shutil.copy(ROOT / ".pre-commit-hooks.yaml", hooks / ".pre-commit-hooks.yaml")
    _run(hooks, "git", "init", "-q", env=env)
    _run(hooks, "git", "add", ".", env=env)
    _run(hooks, "git", "commit", "-q", "-m", "hooks", env=env)
    rev = _run(hooks, "git", "rev-parse", "HEAD", env=env).stdout.strip()

    repo = tmp_path / "project"
    repo.mkdir()
    _run(repo, "git", "init", "-q", env=env)
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {hooks}\n  rev: {rev}\n  hooks:\n  - id: {hook}\n"
    )
    _run(repo, "git", "add", ".pre-commit-config.yaml", env=env)
    _run(repo, sys.executable, "-m", "pre_commit", "install", env=env)
    _run(repo, "git", "commit", "-q", "-m", "config", env=env)
    return repo


def _key() -> str:
    return "sk-proj-" + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(48)
    )


def test_commit_with_key_in_notebook_output_is_blocked_until_cleared(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = _project(tmp_path, env, "leaseline-scan-system")
    key = _key()
    (repo / "explore.ipynb").write_text(_notebook(key + "\n"))
    _run(repo, "git", "add", "explore.ipynb", env=env)
    blocked = _run(repo, "git", "commit", "-m", "notebook", env=env, check=False)
    assert blocked.returncode != 0, blocked.stdout + blocked.stderr
    shown = blocked.stdout + blocked.stderr
    assert "explore.ipynb" in shown and "cell 1 output 1 (stdout)" in shown
    assert key not in shown and key[8:20] not in shown
    assert _run(repo, "git", "log", "--oneline", env=env).stdout.count("\n") == 1

    (repo / "explore.ipynb").write_text(_notebook(None))  # outputs cleared
    _run(repo, "git", "add", "explore.ipynb", env=env)
    passed = _run(repo, "git", "commit", "-m", "notebook", env=env, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "leaseline scan" in passed.stdout + passed.stderr  # the hook ran and passed


def test_fix_hook_rewrites_the_output_and_the_next_commit_passes(
    tmp_path: Path, env: dict[str, str]
) -> None:
    repo = _project(tmp_path, env, "leaseline-scan-fix-system")
    key = _key()
    (repo / "explore.ipynb").write_text(_notebook(key + "\n"))
    _run(repo, "git", "add", "explore.ipynb", env=env)
    stopped = _run(repo, "git", "commit", "-m", "notebook", env=env, check=False)
    assert stopped.returncode != 0, stopped.stdout + stopped.stderr
    shown = stopped.stdout + stopped.stderr
    assert "fixed explore.ipynb" in shown and key not in shown
    fixed = (repo / "explore.ipynb").read_text()
    assert key not in fixed and json.loads(fixed)["cells"][0]["outputs"][0]["text"] == ["***\n"]

    _run(repo, "git", "add", "explore.ipynb", env=env)
    passed = _run(repo, "git", "commit", "-m", "notebook", env=env, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    committed = _run(repo, "git", "show", "HEAD:explore.ipynb", env=env).stdout
    assert key not in committed


def test_hook_definitions() -> None:
    import yaml

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {
        "leaseline-scan",
        "leaseline-scan-system",
        "leaseline-scan-fix",
        "leaseline-scan-fix-system",
    }
    for name in ("leaseline-scan", "leaseline-scan-fix"):
        assert hooks[name]["language"] == "python"
        assert hooks[f"{name}-system"]["language"] == "system"
    assert hooks["leaseline-scan"]["entry"] == hooks["leaseline-scan-system"]["entry"]
    assert hooks["leaseline-scan"]["entry"] == "python -m leaseline.scan"
    fix_hooks = [hooks["leaseline-scan-fix"], hooks["leaseline-scan-fix-system"]]
    assert all(h["entry"] == "python -m leaseline.scan --fix" for h in fix_hooks)
    assert all(h["types"] == ["jupyter"] for h in fix_hooks)
