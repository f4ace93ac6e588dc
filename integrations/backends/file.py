"""``file:///path#field``: a mounted secret file (Secrets Store CSI, Docker/Kubernetes secrets).

Only files under the configured ``roots`` are read (default: ``/run/secrets``,
``/var/run/secrets``, ``/mnt/secrets-store``). JSON, YAML and ``.env`` files expose their keys as
fields; anything else is one raw value (trailing newline stripped). The resolver re-reads a file
every ``refresh_after`` (default 2 s) and picks up CSI rotations: the version is the file's
(inode, size, mtime).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .._exceptions import AccessDenied, ConfigError, SecretNotFound
from .._refs import SecretRef
from .._secret import Lease
from . import BackendContext, ReadResult, SecretMetadata, options_of

__all__ = ["FileBackend"]

DEFAULT_ROOTS = ("/run/secrets", "/var/run/secrets", "/mnt/secrets-store")


def _parse_dotenv(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, eq, value = line.partition("=")
        if not eq:
            raise ValueError(f"line {number} is not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _fields(path: Path, text: str) -> dict[str, str]:
    suffix = path.suffix.lower()
    data: Any = None
    if suffix == ".json" or (suffix == "" and text.lstrip().startswith("{")):
        data = json.loads(text)
    elif suffix in {".yaml", ".yml"}:
        import yaml  # only for YAML files: pip install pyyaml

        data = yaml.safe_load(text)
    elif suffix == ".env" or path.name == ".env":
        data = _parse_dotenv(text)
    if isinstance(data, dict):
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    return {"value": text[:-1] if text.endswith("\n") else text}


class FileBackend:
    """Reads secret files under an allow-list of roots."""

    type: ClassVar[str] = "file"
    default_refresh_after = 2.0

    def __init__(self, name: str, options: Mapping[str, Any], context: BackendContext) -> None:
        opts = options_of(options, {"roots"}, f"[stores.{name}]")
        self.name = name
        roots = opts.get("roots", DEFAULT_ROOTS)
        if isinstance(roots, str):
            roots = [r for r in roots.split(os.pathsep) if r]
        if not isinstance(roots, list | tuple) or not all(isinstance(r, str) for r in roots):
            raise ConfigError(f"[stores.{name}] roots: expected a list of directories")
        self._roots = tuple(Path(r).resolve() for r in roots)

    def _path(self, ref: SecretRef) -> Path:
        path = Path(ref.locator if ref.locator.startswith("/") else "/" + ref.locator).resolve()
        if not any(path == root or root in path.parents for root in self._roots):
            raise AccessDenied(
                f"{ref.key}: {path} is outside the allowed roots "
                f"({', '.join(map(str, self._roots))}); add its directory to "
                f"[stores.{self.name}] roots",
                ref=ref.key,
            )
        return path

    def read(self, ref: SecretRef) -> ReadResult:
        path = self._path(ref)
        try:
            stat = path.stat()
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SecretNotFound(f"{ref.key}: no file at {path}", ref=ref.key) from None
        except PermissionError:
            raise AccessDenied(f"{ref.key}: no permission to read {path}", ref=ref.key) from None
        except IsADirectoryError:
            raise SecretNotFound(f"{ref.key}: {path} is a directory", ref=ref.key) from None
        try:
            fields = _fields(path, text)
        except ValueError as exc:  # never quote the content
            raise SecretNotFound(
                f"{ref.key}: {path} is not valid {path.suffix or 'JSON'} ({type(exc).__name__})",
                ref=ref.key,
            ) from None
        version = f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}"
        return ReadResult(fields, None, version=version)

    def renew(self, lease: Lease) -> Lease:
        return lease

    def revoke(self, lease: Lease) -> None:
        pass

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        path = self._path(ref)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise SecretNotFound(f"{ref.key}: no file at {path}", ref=ref.key) from None
        return SecretMetadata(ref.key, updated_at=stat.st_mtime)

    def close(self) -> None:
        pass
