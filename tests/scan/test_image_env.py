"""18.9: `scan --image` names the variable of an `Env` finding."""

from __future__ import annotations

from pathlib import Path

import pytest
from leaseline.scan._image import scan_image
from leaseline.scan._report import table

from tests.scan.test_image import docker_save, leaky_parts, oci_archive


@pytest.mark.parametrize("build", [docker_save, oci_archive], ids=["docker-save", "oci"])
def test_an_env_finding_names_its_variable(tmp_path: Path, build: object) -> None:
    env, history, layers, values = leaky_parts()
    image = build(tmp_path / "train.tar", env, history, layers)  # type: ignore[operator]
    result = scan_image(str(image))
    (finding,) = [f for f in result.findings if f.secret == values["openai"]]
    assert finding.path == "train.tar@config:Env"
    assert (finding.line, finding.location) == (2, "ENV OPENAI_API_KEY")  # Env[1]
    text = table([finding], 1)
    assert "train.tar@config:Env:2 [ENV OPENAI_API_KEY]" in text
    assert values["openai"] not in text
