"""``file:///path#field``: a mounted secret file (Secrets Store CSI, Docker/Kubernetes secrets).

Only files under the configured ``roots`` are read (default: ``/run/secrets``,
``/var/run/secrets``, ``/mnt/secrets-store``). JSON, YAML and ``.env`` files expose their keys as
fields; anything else is one raw value (trailing newline stripped). The resolver re-reads a file
every ``refresh_after`` (default 2 s) and picks up CSI rotations: the version is the file's
(inode, size, mtime).

The file is opened by walking from the root's directory, one component at a time, each opened
relative to its parent's descriptor with ``O_NOFOLLOW``: a symlink is read and followed only
while it stays beneath the root (as ``openat2(RESOLVE_BENEATH)`` does; the ``..data`` links of a
Kubernetes secret volume qualify), and the checks apply to the descriptor that is then read, so
swapping a path component for a symlink between check and use gains nothing. A file that is not
valid JSON/YAML/.env/UTF-8 is reported with its path and line, never with its content.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from .._exceptions import AccessDenied, ConfigError, LeaselineError, SecretNotFound
from .._refs import SecretRef
from .._secret import Lease
from . import BackendContext, ReadResult, SecretMetadata, options_of

__all__ = ["FileBackend"]

DEFAULT_ROOTS = ("/run/secrets", "/var/run/secrets", "/mnt/secrets-store")


class _BadContent(ValueError):
    """A secret file that does not parse; ``where`` is a position, never content."""

    def __init__(self, kind: str, where: str) -> None:
        super().__init__(kind, where)
        self.kind, self.where = kind, where


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
            raise _BadContent(".env", f"line {number}: not KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _load_yaml(text: str) -> Any:
    import yaml  # only for YAML files: pip install pyyaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # its str() quotes the offending content
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise _BadContent("YAML", where) from None


def _fields(path: Path, data: bytes) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _BadContent("UTF-8 text", f"line {line}, byte offset {exc.start}") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as text mode
    suffix = path.suffix.lower()
    parsed: Any = None
    if suffix == ".json" or (suffix == "" and text.lstrip().startswith("{")):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:  # its str() is safe, but say it the same way
            raise _BadContent("JSON", f"line {exc.lineno}, column {exc.colno}") from None
    elif suffix in {".yaml", ".yml"}:
        parsed = _load_yaml(text)
    elif suffix == ".env" or path.name == ".env":
        parsed = _parse_dotenv(text)
    if isinstance(parsed, dict):
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()}
    return {"value": text[:-1] if text.endswith("\n") else text}


_MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


class _Outside(Exception):
    """Resolution would leave the root."""


def open_beneath(root: str, parts: list[str]) -> int:
    """A descriptor of ``root/parts...`` opened without leaving ``root``.

    Every component is opened relative to its parent's descriptor with ``O_NOFOLLOW``; a
    symlink is read and its target walked the same way (``..`` pops a level, never above the
    root; an absolute target restarts at the root when it names a path beneath it). Raises
    :class:`_Outside`, or ``OSError`` (``ENOENT``, ``EACCES``, ``ENOTDIR``, ``ELOOP``).
    """
    stack = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))]
    todo = list(reversed(parts))
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name in {"", "."}:
                continue
            if name == "..":
                if len(stack) == 1:
                    raise _Outside(root)
                os.close(stack.pop())
                continue
            last = not todo
            try:
                fd = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=stack[-1])
            except OSError as exc:
                if exc.errno not in {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}:
                    raise
                try:
                    target = os.readlink(name, dir_fd=stack[-1])
                except OSError:
                    raise exc from None  # not a symlink: a file where a directory was expected
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many symlinks") from None
                if target.startswith("/"):
                    rel = posixpath.relpath(posixpath.normpath(target), root)
                    if rel == ".." or rel.startswith("../"):
                        raise _Outside(target) from None
                    while len(stack) > 1:
                        os.close(stack.pop())
                    target = rel
                todo.extend(reversed(target.split("/")))
                continue
            if last:
                return fd
            stack.append(fd)
        # the path named the root itself (or ended in '.'/'..'): not a file
        return os.dup(stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


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
        # (as written, as resolved): /var/run/secrets/x names /run/secrets/x
        self._roots = tuple(
            (posixpath.normpath(os.path.abspath(r)), os.path.realpath(r)) for r in roots
        )

    def _locate(self, ref: SecretRef) -> tuple[str, str, list[str]]:
        """``(shown path, resolved root, components beneath it)``, lexically; nothing is opened."""
        path = posixpath.normpath("/" + ref.locator.lstrip("/"))
        for given, real in self._roots:
            for root in (given, real):
                rel = posixpath.relpath(path, root)
                if rel != ".." and not rel.startswith("../"):
                    return path, real, [] if rel == "." else rel.split("/")
        raise self._outside(ref, path)

    def _outside(self, ref: SecretRef, path: str) -> AccessDenied:
        return AccessDenied(
            f"{ref.key}: {path} is outside the allowed roots "
            f"({', '.join(real for _, real in self._roots)}); add its directory to "
            f"[stores.{self.name}] roots",
            ref=ref.key,
        )

    def _open(self, ref: SecretRef) -> tuple[str, int, os.stat_result]:
        """Open the file beneath its root and check the descriptor: never by name twice."""
        path, root, parts = self._locate(ref)
        try:
            fd = open_beneath(root, parts)
        except _Outside:
            raise AccessDenied(
                f"{ref.key}: {path} leads through a symlink outside the allowed roots "
                f"({', '.join(real for _, real in self._roots)})",
                ref=ref.key,
            ) from None
        except FileNotFoundError:
            raise SecretNotFound(f"{ref.key}: no file at {path}", ref=ref.key) from None
        except PermissionError:
            raise AccessDenied(f"{ref.key}: no permission to read {path}", ref=ref.key) from None
        except OSError as exc:
            raise SecretNotFound(
                f"{ref.key}: cannot open {path} ({exc.strerror or exc})", ref=ref.key
            ) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise SecretNotFound(f"{ref.key}: {path} is {kind}", ref=ref.key)
        return path, fd, info

    def read(self, ref: SecretRef) -> ReadResult:
        path, fd, info = self._open(ref)
        with os.fdopen(fd, "rb") as fh:
            try:
                data = fh.read()
            except OSError as exc:
                raise SecretNotFound(
                    f"{ref.key}: cannot read {path} ({exc.strerror})", ref=ref.key
                ) from None
        try:
            fields = _fields(Path(path), data)
        except _BadContent as exc:  # never quote the content
            raise LeaselineError(
                f"{ref.key}: {path} is not valid {exc.kind} ({exc.where}); fix the file "
                "(its content is not shown)",
                ref=ref.key,
            ) from None
        version = f"{info.st_ino}-{info.st_size}-{info.st_mtime_ns}"
        return ReadResult(fields, None, version=version)

    def renew(self, lease: Lease) -> Lease:
        return lease

    def revoke(self, lease: Lease) -> None:
        pass

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        _, fd, info = self._open(ref)
        os.close(fd)
        return SecretMetadata(ref.key, updated_at=info.st_mtime)

    def close(self) -> None:
        pass
