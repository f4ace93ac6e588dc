"""``leaseline scan --image IMAGE.tar``: credentials baked into a container image.

Reads a ``docker save`` tarball (``manifest.json``, a config JSON, one tar per layer) or an OCI
image layout tarball (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``), without Docker:

- the image config: ``config.Env`` (``ENV`` and ``ARG``-derived variables), ``Labels``,
  ``Cmd``/``Entrypoint``, and every ``history[].created_by`` line (where ``ARG`` values and
  ``RUN`` commands with build arguments are recorded);
- every file of every layer (gzip/bzip2/xz layers are decompressed on the fly). A file deleted in
  a later layer is still in the image, so each layer is scanned on its own.

Findings are reported as ``IMAGE@layer N (sha256:abcdef123456):/path/in/layer`` and
``IMAGE@config:Env``, so the layer and the path are named.
"""

from __future__ import annotations

import json
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .._exceptions import ConfigError
from ._engine import Finding, Scanner
from ._sources import BINARY_SUFFIXES, MAX_BYTES, Segment, SourceFile

__all__ = ["ImageScan", "scan_image"]


@dataclass
class ImageScan:
    findings: list[Finding] = field(default_factory=list)
    files_scanned: int = 0
    #: layers that could not be read (e.g. zstd compression), as (layer, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Layout:
    config: str  # member name of the config JSON
    layers: list[tuple[str, str]]  # (member name, digest or name for display)


def _json(tar: tarfile.TarFile, name: str, image: str) -> Any:
    fh = _open(tar, name)
    if fh is None:
        raise ConfigError(f"{image}: {name} is missing; expected a `docker save` or OCI tarball")
    try:
        return json.load(fh)
    except ValueError:
        raise ConfigError(f"{image}: {name} is not valid JSON") from None


def _open(tar: tarfile.TarFile, name: str) -> IO[bytes] | None:
    for candidate in (name, "./" + name):
        try:
            member = tar.getmember(candidate)
        except KeyError:
            continue
        return tar.extractfile(member)
    return None


def _blob(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"blobs/{alg}/{hexpart}"


def _layout(tar: tarfile.TarFile, image: str) -> _Layout:
    names = {m.lstrip("./") for m in tar.getnames()}
    if "manifest.json" in names:  # docker save (newer Docker also adds OCI files: prefer this)
        manifest = _json(tar, "manifest.json", image)
        if not isinstance(manifest, list) or not manifest or "Config" not in manifest[0]:
            raise ConfigError(f"{image}: manifest.json has no image entry")
        first = manifest[0]
        layers = [(str(name), str(name)) for name in first.get("Layers", [])]
        return _Layout(str(first["Config"]), layers)
    if "index.json" in names:
        index = _json(tar, "index.json", image)
        manifests = index.get("manifests", []) if isinstance(index, dict) else []
        if not manifests:
            raise ConfigError(f"{image}: index.json lists no manifests")
        manifest = _json(tar, _blob(manifests[0]["digest"]), image)
        if "manifests" in manifest:  # an image index (multi-platform): take the first image
            manifest = _json(tar, _blob(manifest["manifests"][0]["digest"]), image)
        layers = [(_blob(str(d["digest"])), str(d["digest"])) for d in manifest.get("layers", [])]
        return _Layout(_blob(manifest["config"]["digest"]), layers)
    raise ConfigError(
        f"{image}: not an image tarball (no manifest.json or index.json); "
        "create one with `docker save IMAGE -o image.tar` or `skopeo copy ... oci-archive:`"
    )


def _short(digest: str) -> str:
    """``sha256:`` and 12 hex digits, from a digest or a ``<hex>/layer.tar``/``blobs/...`` name."""
    text = digest.removesuffix("/layer.tar").removesuffix(".tar")
    text = text.replace("blobs/sha256/", "sha256:")
    hexpart = text.removeprefix("sha256:")
    if len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart):
        return "sha256:" + hexpart[:12]
    return text[:40]


def _config_segments(config: dict[str, Any]) -> Iterator[tuple[str, str, list[Segment]]]:
    """(kind, label, segments) for the parts of an image config that hold text.

    Each ``Env`` and ``Labels`` entry is its own segment named after its variable
    (``ENV OPENAI_API_KEY``): a finding says which variable holds the credential.
    """
    inner = config.get("config") or config.get("container_config") or {}
    env = inner.get("Env") or []
    if env:
        yield "env", "Env", [_entry("ENV", i, str(e)) for i, e in enumerate(env)]
    labels = inner.get("Labels") or {}
    if labels:
        entries = [f"{k}={v}" for k, v in labels.items()]
        yield "env", "Labels", [_entry("LABEL", i, e) for i, e in enumerate(entries)]
    for key in ("Entrypoint", "Cmd"):
        value = inner.get(key)
        if value:
            text = " ".join(value) if isinstance(value, list) else str(value)
            yield "shell", key, [Segment(text, key)]
    for i, step in enumerate(config.get("history") or []):
        created = str(step.get("created_by", "") or "")
        if created:
            # "RUN |2 HF_TOKEN=... /bin/sh -c ..." and "ARG X=..." as a Dockerfile would hold them
            text = created.replace("/bin/sh -c #(nop) ", "").strip()
            yield "docker", f"history[{i}]", [Segment(text + "\n", f"history[{i}]")]


def _entry(word: str, index: int, entry: str) -> Segment:
    """One ``NAME=value`` of Env/Labels, as line ``index + 1``, located by its name only."""
    name = entry.partition("=")[0]
    return Segment(entry + "\n", f"{word} {name}", first_line=index + 1)


def _scan_segments(scanner: Scanner, path: str, kind: str, segs: list[Segment]) -> list[Finding]:
    scanner.files_scanned += 1
    found: list[Finding] = []
    for seg in segs:
        scanner.bytes_scanned += len(seg.text)
        found += scanner._scan_segment(path, kind, seg)
    return found


def _layer_files(fh: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(fileobj=fh, mode="r|*") as layer:
        for member in layer:
            if not member.isfile() or member.size > MAX_BYTES:
                continue
            name = "/" + member.name.lstrip("./")
            base = posixpath.basename(name)
            if base.startswith(".wh."):
                continue
            if os.path.splitext(base)[1].lower() in BINARY_SUFFIXES:
                continue
            data_fh = layer.extractfile(member)
            if data_fh is None:
                continue
            data = data_fh.read()
            if b"\0" in data[:8192]:
                continue
            yield name, data


def scan_image(path: str, scanner: Scanner | None = None) -> ImageScan:
    """Scan one image tarball. Raises :class:`ConfigError` when it is not an image tarball."""
    engine = scanner or Scanner()
    image = os.path.basename(path)
    out = ImageScan()
    before = engine.files_scanned
    try:
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 - closed by the `with` below
    except (OSError, tarfile.TarError) as exc:
        raise ConfigError(f"{path}: cannot be read as a tarball ({type(exc).__name__})") from None
    with tar:
        layout = _layout(tar, image)
        config = _json(tar, layout.config, image)
        for kind, label, segs in _config_segments(config if isinstance(config, dict) else {}):
            out.findings += _scan_segments(engine, f"{image}@config:{label}", kind, segs)
        rootfs = config.get("rootfs") if isinstance(config, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        for n, (member, digest) in enumerate(layout.layers, 1):
            # the uncompressed layer digest, as `docker inspect` shows it, when the config has it
            if isinstance(diff_ids, list) and len(diff_ids) == len(layout.layers):
                digest = str(diff_ids[n - 1])
            where = f"layer {n} ({_short(digest)})"
            fh = _open(tar, member)
            if fh is None:
                out.skipped.append((where, "missing from the tarball"))
                continue
            try:
                for name, data in _layer_files(fh):
                    src = SourceFile(f"{image}@{where}:{name}", data)
                    out.findings += engine.scan_source(src)
            except (tarfile.TarError, OSError, EOFError) as exc:
                out.skipped.append((where, f"unreadable ({type(exc).__name__}; zstd?)"))
    out.files_scanned = engine.files_scanned - before
    return out


def scan_images(
    images: list[str],
    *,
    baseline: str | None = None,
    config: Any = None,
    managed: bool = True,
    confidence: str | None = None,
) -> tuple[Any, list[tuple[str, str, str]]]:
    """Scan image tarballs as :func:`leaseline.scan.scan` scans paths: baseline, managed values,
    the confidence threshold and advice applied. Returns the ``ScanResult`` and the skipped
    layers (image, layer, why)."""
    from .._config import load_config
    from . import report

    cfg = config if config is not None else load_config()
    engine = Scanner()
    found: list[Finding] = []
    skipped: list[tuple[str, str, str]] = []
    for path in images:
        one = scan_image(path, engine)
        found += one.findings
        skipped += [(path, layer, why) for layer, why in one.skipped]
    result = report(
        found,
        engine.files_scanned,
        cfg,
        baseline=baseline,
        confidence=confidence,
        managed=managed,
    )
    result.engine = engine.engine
    return result, skipped
