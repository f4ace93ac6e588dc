"""The project environment of the README commands (scripts/_env.sh, requirements/*.txt).

The fresh-machine run itself (a clean clone, an empty HOME, Debian's and pyenv's python3) is
``benchmarks/bench_setup.py``: it takes minutes and downloads, so it is a benchmark, not a test.
These tests pin what the lock files and the script promise without the network.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)\s*(?:;\s*([^#]+?))?\s*(?:#.*)?$")


def pins(name: str) -> dict[str, Version]:
    """The versions ``requirements/NAME.txt`` pins for this interpreter (markers evaluated)."""
    env = default_environment()
    out: dict[str, Version] = {}
    for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        match = PIN.match(line.strip())
        if not match:
            continue
        package, version, marker = match.groups()
        if marker and not Requirement(f"x; {marker}").marker.evaluate(env):  # type: ignore[union-attr]
            continue
        out[canonicalize_name(package)] = Version(version)
    return out


def requirements_of(extras: set[str]) -> list[Requirement]:
    """pyproject's dependencies plus those of ``extras``, self-references followed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    seen: set[str] = set()
    todo = sorted(extras)
    found = [Requirement(r) for r in project["dependencies"]]
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == "leaseline":
                todo += sorted(req.extras)
            else:
                found.append(req)
    env = default_environment()
    return [r for r in found if r.marker is None or r.marker.evaluate({**env, "extra": ""})]


def test_the_test_lock_pins_every_requirement_of_the_test_extra_within_its_range() -> None:
    locked = pins("test")
    missing, outside = [], []
    for req in requirements_of({"test"}):
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            missing.append(str(req))
        elif not req.specifier.contains(version, prereleases=True):
            outside.append(f"{req} (locked {version})")
    assert not missing, f"not in requirements/test.txt (run scripts/lock): {missing}"
    assert not outside, f"requirements/test.txt is stale (run scripts/lock): {outside}"


def test_the_demo_lock_is_a_subset_of_the_test_lock_at_the_same_versions() -> None:
    """scripts/demo reuses a current test environment: that only holds if the versions agree."""
    demo, test = pins("demo"), pins("test")
    assert demo, "requirements/demo.txt pins nothing"
    differ = {name: (v, test.get(name)) for name, v in demo.items() if test.get(name) != v}
    assert not differ, f"demo pins differ from the test lock (run scripts/lock): {differ}"
    for req in requirements_of({"dev", "vault"}):
        assert canonicalize_name(req.name) in demo, f"{req} missing from requirements/demo.txt"


def test_this_interpreter_is_the_project_environment_not_the_base_one() -> None:
    """scripts/test runs pytest from .venv (or $LEASELINE_VENV), never the base interpreter."""
    assert sys.prefix != sys.base_prefix, "pytest is not running inside a virtual environment"
    stamp = Path(sys.prefix) / ".leaseline-stamp"
    assert stamp.is_file(), f"{sys.prefix} was not built by scripts/_env.sh"
    assert stamp.read_text().split()[0] == "test"


def pip_settings(env: dict[str, str]) -> list[str]:
    script = f". {ROOT / 'scripts' / '_env.sh'}; ll_pip_settings {sys.executable}"
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout.splitlines()


def test_pip_settings_of_the_machine_are_handed_to_uv(tmp_path: Path) -> None:
    """uv reads no pip.conf: the index, extra indexes, find-links, CA bundle are passed on."""
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url = file:///opt/one/simple file:///opt/two/simple\n"
        "trusted-host = mirror.example\ncert = /etc/ssl/custom.pem\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=str(conf), PIP_FIND_LINKS="/opt/wheels", HOME=str(tmp_path))
    out = pip_settings(env)
    pairs = list(zip(out[::2], out[1::2], strict=False))
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert ("--extra-index-url", "file:///opt/one/simple") in pairs
    assert ("--extra-index-url", "file:///opt/two/simple") in pairs
    assert ("--find-links", "/opt/wheels") in pairs
    assert ("--allow-insecure-host", "mirror.example") in pairs
    assert ("--index-strategy", "unsafe-best-match") in pairs  # pip's rule across indexes
    assert "SSL_CERT_FILE=/etc/ssl/custom.pem" in out


def test_without_pip_settings_uv_keeps_its_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, HOME=str(tmp_path))
    assert pip_settings(env) == []


def test_the_active_project_environment_is_never_taken_for_the_base_interpreter() -> None:
    """.ci/run activates .venv, then calls scripts/test, which looks for python3 again: it must
    find the base interpreter, not .venv's own (that rebuilt .venv from itself and failed)."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {
        **os.environ,
        "VIRTUAL_ENV": sys.prefix,
        "PATH": os.pathsep.join([venv_bin, venv_bin, os.environ["PATH"], venv_bin]),  # as in CI
    }
    env.pop("PYTHON", None)
    script = f". {ROOT / 'scripts' / '_env.sh'}; ll_base_python"
    out = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert not out.stdout.strip().startswith(venv_bin), out.stdout
