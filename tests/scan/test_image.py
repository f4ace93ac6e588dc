"""`leaseline scan --image`: docker-save and OCI-layout tarballs built here with `tarfile`."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from leaseline.scan._image import scan_image
from leaseline.scan.corpus import _an

LEASELINE = [sys.executable, "-m", "leaseline.cli"]


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _config(env: list[str], history: list[str], diff_ids: list[str]) -> bytes:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "Cmd": ["python", "train.py"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created_by": h} for h in history],
    }
    return json.dumps(doc).encode()


def docker_save(path: Path, env: list[str], history: list[str], layers: list[bytes]) -> Path:
    config = _config(env, history, [_sha(layer) for layer in layers])
    config_name = f"{_sha(config)}.json"
    members: dict[str, bytes] = {config_name: config}
    layer_names = []
    for layer in layers:
        name = f"{_sha(layer)}/layer.tar"
        members[name] = layer
        layer_names.append(name)
    members["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": ["train:latest"], "Layers": layer_names}]
    ).encode()
    path.write_bytes(_tar(members))
    return path


def oci_archive(path: Path, env: list[str], history: list[str], layers: list[bytes]) -> Path:
    blobs: dict[str, bytes] = {}
    layer_descs = []
    for layer in layers:
        gz = gzip.compress(layer)
        blobs[_sha(gz)] = gz
        layer_descs.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": f"sha256:{_sha(gz)}",
                "size": len(gz),
            }
        )
    config = _config(env, history, [_sha(layer) for layer in layers])
    blobs[_sha(config)] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{_sha(config)}",
                "size": len(config),
            },
            "layers": layer_descs,
        }
    ).encode()
    blobs[_sha(manifest)] = manifest
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{_sha(manifest)}",
                "size": len(manifest),
            }
        ],
    }
    members = {f"blobs/sha256/{d}": b for d, b in blobs.items()}
    members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    members["index.json"] = json.dumps(index).encode()
    path.write_bytes(_tar(members))
    return path


def leaky_parts() -> tuple[list[str], list[str], list[bytes], dict[str, str]]:
    """An image with a key in Env, one in a layer file and one in an ARG of the history."""
    openai = "sk-proj-" + _an(20) + "T3BlbkFJ" + _an(20)
    hf = "hf_" + _an(34)
    groq = "gsk_" + _an(52)
    env = ["PATH=/usr/local/bin:/usr/bin", f"OPENAI_API_KEY={openai}", "LANG=C.UTF-8"]
    history = [
        "/bin/sh -c #(nop) ADD file:abc in / ",
        f"ARG GROQ_API_KEY={groq}",
        "RUN |1 GROQ_API_KEY=*** /bin/sh -c pip install -r requirements.txt # buildkit",
    ]
    base = _tar({"etc/os-release": b"ID=debian\n", "usr/bin/tool": b"\x7fELF\0\0binary"})
    app = _tar(
        {
            "app/train.py": b"import os\nprint('training')\n",
            "app/.env": f"HF_TOKEN={hf}\nEPOCHS=3\n".encode(),
        }
    )
    return env, history, [base, app], {"openai": openai, "hf": hf, "groq": groq}


def clean_parts() -> tuple[list[str], list[str], list[bytes]]:
    env = ["PATH=/usr/local/bin:/usr/bin", "OPENAI_API_KEY=vault://secret/llm/openai#api_key"]
    history = ["/bin/sh -c #(nop) ADD file:abc in / ", "RUN /bin/sh -c pip install torch"]
    app = _tar(
        {
            "app/train.py": b"import leaseline\nkey = leaseline.resolve('openai')\n",
            "app/model.sha256": (_sha(b"weights") + "  model.safetensors\n").encode(),
            "app/.env": b"OPENAI_API_KEY=vault://secret/llm/openai#api_key\nEPOCHS=3\n",
        }
    )
    return env, history, [app]


@pytest.mark.parametrize("build", [docker_save, oci_archive], ids=["docker-save", "oci"])
def test_keys_in_env_layer_and_history_are_found(tmp_path: Path, build: object) -> None:
    env, history, layers, values = leaky_parts()
    image = build(tmp_path / "train.tar", env, history, layers)  # type: ignore[operator]
    result = scan_image(str(image))
    by_secret = {f.secret: f for f in result.findings}
    assert set(values.values()) <= set(by_secret), sorted(f.path for f in result.findings)
    assert by_secret[values["openai"]].path == "train.tar@config:Env"
    groq = by_secret[values["groq"]]
    assert groq.path == "train.tar@config:history[1]"
    hf = by_secret[values["hf"]]
    assert hf.path.startswith("train.tar@layer 2 (sha256:")
    assert hf.path.endswith(":/app/.env")
    assert hf.line == 1
    assert not result.skipped


@pytest.mark.parametrize("build", [docker_save, oci_archive], ids=["docker-save", "oci"])
def test_clean_image_passes(tmp_path: Path, build: object) -> None:
    env, history, layers = clean_parts()
    image = build(tmp_path / "clean.tar", env, history, layers)  # type: ignore[operator]
    result = scan_image(str(image))
    assert result.findings == []
    assert result.files_scanned >= 4  # Env, Cmd, history, layer files


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"LEASELINE_CONFIG": str(cwd / "absent.toml"), "PATH": "/usr/bin:/bin"}
    (cwd / "absent.toml").write_text("")
    return subprocess.run(
        [*LEASELINE, "scan", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_image_findings_name_layer_and_path_without_values(tmp_path: Path) -> None:
    env, history, layers, values = leaky_parts()
    image = docker_save(tmp_path / "train.tar", env, history, layers)
    result = _cli("--image", str(image), "--format", "json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    paths = {f["path"] for f in doc["findings"]}
    assert "train.tar@config:Env" in paths
    assert any(p.endswith(":/app/.env") and "@layer 2 (sha256:" in p for p in paths)
    for value in values.values():
        assert value not in result.stdout and value not in result.stderr
        assert value[:12] not in result.stdout


def test_cli_clean_image_exits_zero(tmp_path: Path) -> None:
    image = docker_save(tmp_path / "clean.tar", *clean_parts())
    result = _cli("--image", str(image), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no credentials found" in result.stdout


def test_not_an_image_is_a_usage_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(_tar({"hello.txt": b"hi\n"}))
    result = _cli("--image", str(bogus), cwd=tmp_path)
    assert result.returncode == 2
    assert "not an image tarball" in result.stderr


def test_an_image_applies_the_confidence_threshold(tmp_path: Path) -> None:
    """A stand-in password in a layer's test file is ``low``: counted as hidden, exit 0; ``--all``
    shows it (before, images reported every finding whatever its confidence)."""
    words = "".join(("CorrectHorse", "Battery42"))  # a password made of words: low
    app = _tar({"app/tests/test_db.py": f'admin_password = "{words}"\n'.encode()})
    image = docker_save(tmp_path / "t.tar", ["PATH=/usr/bin"], [], [app])
    default = _cli("--image", str(image), "--format", "json", cwd=tmp_path)
    assert default.returncode == 0, default.stdout + default.stderr
    doc = json.loads(default.stdout)
    assert doc["findings"] == [] and doc["summary"]["hidden"] == 1
    shown = _cli("--image", str(image), "--format", "json", "--all", cwd=tmp_path)
    assert shown.returncode == 1
    assert [f["confidence"] for f in json.loads(shown.stdout)["findings"]] == ["low"]
    assert words not in default.stdout + shown.stdout
