"""The public surface, the light import, and packaging consistency."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import leaseline
import tomllib
from leaseline._registry import BUILTIN

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = {
    "parse",
    "SecretRef",
    "Secret",
    "Lease",
    "Resolver",
    "resolve",
    "aresolve",
    "get",
    "aget",
    "lease",
    "default_resolver",
    "retry_on_rotation",
    "register_backend",
    "LeaselineError",
    "InvalidReference",
    "UnknownStore",
    "SecretNotFound",
    "AccessDenied",
    "BackendUnavailable",
    "BackendNotInstalled",
    "LeaseExpired",
    "ConfigError",
    "stage",  # the pipeline stage a block runs as (per-stage child tokens)
}


def test_all_is_exactly_the_public_surface() -> None:
    assert set(leaseline.__all__) == PUBLIC
    assert leaseline.__all__ == sorted(leaseline.__all__)
    for name in PUBLIC:
        assert getattr(leaseline, name) is not None


def test_exception_tree() -> None:
    assert issubclass(leaseline.InvalidReference, ValueError)
    assert issubclass(leaseline.UnknownStore, LookupError)
    assert issubclass(leaseline.SecretNotFound, KeyError)
    assert issubclass(leaseline.AccessDenied, PermissionError)
    assert issubclass(leaseline.BackendUnavailable, ConnectionError)
    assert issubclass(leaseline.BackendNotInstalled, ImportError)
    for name in PUBLIC:
        obj = getattr(leaseline, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, leaseline.LeaselineError)
    # KeyError would repr() its message; ours reads as written
    assert str(leaseline.SecretNotFound("no secret at x")) == "no secret at x"


def test_import_is_light() -> None:
    heavy = [
        "hvac",
        "boto3",
        "botocore",
        "azure",
        "airflow",
        "prefect",
        "kfp",
        "mlflow",
        "requests",
        "urllib3",
        "hyperscan",
        "pytest",
        "rich",
        "yaml",
        "IPython",
        "ipykernel",
        "nbformat",
    ]
    code = (
        "import sys, leaseline\n"
        "r = leaseline.Resolver()\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        cwd="/",
    )
    assert out.stdout.strip() == "[]"


def test_registry_extras_and_entry_points_agree() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for type_, spec in BUILTIN.items():
        module = spec.target.split(":")[0]
        assert module.startswith("leaseline.backends."), type_
        if spec.extra is not None:
            assert spec.extra in extras, f"{type_} names extra {spec.extra!r}, not in pyproject"
        source = ROOT / "integrations" / "backends" / (module.rsplit(".", 1)[1] + ".py")
        assert source.is_file(), f"{type_}: {source} missing"
        assert spec.target.split(":")[1] in source.read_text()
    (everything,) = extras["all"]
    named = set(everything.removeprefix("leaseline[").removesuffix("]").split(","))
    assert named == set(extras) - {"all", "test"}, "extra `all` must name every other extra"
    eps = pyproject["project"]["entry-points"]
    assert eps["apache_airflow_provider"]["provider_info"].startswith("leaseline.airflow.")
    assert (
        eps["mlflow.request_auth_provider"]["leaseline"] == "leaseline.mlflow:LeaselineAuthProvider"
    )
    installed = {ep.name for ep in entry_points(group="mlflow.request_auth_provider")}
    assert "leaseline" in installed
    assert pyproject["project"]["scripts"]["leaseline"] == "leaseline.cli:main"


def test_package_dir_mapping() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = pyproject["tool"]["setuptools"]["package-dir"]
    assert mapping["leaseline"] == "integrations"
    assert mapping["leaseline.airflow"] == "airflow_provider"
    assert mapping["leaseline.prefect"] == "prefect_blocks"
    assert mapping["leaseline.kfp"] == "kfp_components"
