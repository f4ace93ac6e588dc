"""Rendering secrets into files: templates, atomic 0600 writes, and the ledger hand-over.

Shared by ``leaseline render`` (an init container: render once, hand the leases over, exit) and
``leaseline agent`` (a sidecar: keep the files fresh, revoke everything when stopped).

Template syntax (deliberately tiny; no Jinja)::

    {{ vault://database/creds/reader#username }}         the value
    {{ db#password | pgpass }}                            an alias, then a filter
    {{ "{{" }}                                            a literal string

Filters: ``json`` (a quoted JSON string), ``pgpass`` (``\\`` and ``:`` escaped, as ``.pgpass``
wants), ``base64``, ``url`` (percent-encoded), ``trim``. Every field of one reference in one
rendering comes from the *same* credential: a username is never paired with the next
credential's password.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import masking
from .._exceptions import ConfigError

if TYPE_CHECKING:
    from .._config import Config
    from .._resolver import Resolver

__all__ = [
    "FILTERS",
    "Output",
    "Renderer",
    "Template",
    "atomic_write",
    "make_private_dirs",
    "parse_template",
]

FILTERS: Mapping[str, Callable[[str], str]] = {
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "json": lambda v: json.dumps(v),
    "pgpass": lambda v: v.replace("\\", "\\\\").replace(":", "\\:"),
    "trim": str.strip,
    "url": lambda v: quote(v, safe=""),
}

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_LITERAL = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)')\s*\Z""")


@dataclass(frozen=True)
class Slot:
    """One ``{{ ref | filter }}``: the reference as written, and its filters."""

    ref: str
    filters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and :class:`Slot` pieces, in order."""

    pieces: tuple[str | Slot, ...]
    source: str = "<template>"

    @property
    def refs(self) -> list[str]:
        """The references used, in order of first use."""
        return list(dict.fromkeys(p.ref for p in self.pieces if isinstance(p, Slot)))


def parse_template(text: str, source: str = "<template>") -> Template:
    """Parse ``text``; raises :class:`ConfigError` naming ``source:line`` for a bad placeholder.

    >>> parse_template("{{ env://USER | trim }}@host").refs
    ['env://USER']
    """
    pieces: list[str | Slot] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            pieces.append(text[pos : m.start()])
        pos = m.end()
        inner = m.group(1)
        line = text.count("\n", 0, m.start()) + 1
        literal = _LITERAL.match(inner)
        if literal:
            pieces.append(literal.group(1) if literal.group(1) is not None else literal.group(2))
            continue
        parts = [p.strip() for p in inner.split("|")]
        ref, filters = parts[0], tuple(parts[1:])
        if not ref or any(c.isspace() for c in ref):
            raise ConfigError(
                f"{source}:{line}: expected {{{{ REFERENCE }}}} or {{{{ REFERENCE | FILTER }}}}, "
                f"got {{{{{inner.strip()[:60]}}}}}"
            )
        unknown = [f for f in filters if f not in FILTERS]
        if unknown:
            raise ConfigError(
                f"{source}:{line}: unknown filter '{unknown[0]}'; known: {', '.join(sorted(FILTERS))}"
            )
        pieces.append(Slot(ref, filters))
    if "{{" in text[pos:] or "}}" in text[pos:]:
        line = text.count("\n", 0, pos) + 1
        raise ConfigError(
            f"{source}:{line}: unbalanced '{{{{' or '}}}}' (write {{{{ \"{{{{\" }}}})"
        )
    if pos < len(text):
        pieces.append(text[pos:])
    return Template(tuple(pieces), source)


@dataclass
class Output:
    """A file to keep rendered: ``dest`` from ``template``.

    ``whole`` marks a ``--file PATH=REF`` output: the value itself, or, for a multi-field secret
    referenced without ``#field``, a JSON object of every field.
    """

    dest: Path
    template: Template
    mode: int = 0o600
    whole: bool = False
    digest: str | None = field(default=None, repr=False)

    @classmethod
    def file(cls, dest: str | os.PathLike[str], ref: str, mode: int = 0o600) -> Output:
        return cls(Path(dest), Template((Slot(ref),), f"--file {dest}"), mode, whole=True)

    @classmethod
    def from_template(
        cls, src: str | os.PathLike[str], dest: str | os.PathLike[str], mode: int = 0o600
    ) -> Output:
        try:
            text = Path(src).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"template {src}: cannot be read ({exc.strerror})") from None
        return cls(Path(dest), parse_template(text, str(src)), mode)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never a mix.

    The one writer of secret files (``render``, ``agent``, ``run --file``). The temporary file
    gets an unpredictable name in the same directory (``os.replace`` is atomic only within one
    file system) and is created with ``O_EXCL | O_NOFOLLOW`` (a file or symlink planted there
    is never written through) and ``mode`` from the start (``fchmod``: the umask neither
    narrows nor widens it), fsync'd, renamed, and the directory fsync'd. Missing parent
    directories are created 0700.
    """
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed or widened it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents with mode 0700 (whatever the umask)."""
    missing = []
    for d in (directory, *directory.parents):
        if d.exists():
            break
        missing.append(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, leave its mode alone
        os.chmod(d, 0o700)


class Renderer:
    """Renders :class:`Output` files from a resolver; writes only what changed.

    >>> r = Renderer(resolver, [Output.file("/run/secrets/key", "openai")])  # doctest: +SKIP
    >>> r.render()  # doctest: +SKIP
    [PosixPath('/run/secrets/key')]
    """

    def __init__(self, resolver: Resolver, outputs: Iterable[Output]) -> None:
        self.resolver = resolver
        self.outputs = list(outputs)
        dests = [o.dest for o in self.outputs]
        dupes = sorted({str(d) for d in dests if dests.count(d) > 1})
        if dupes:
            raise ConfigError(f"{dupes[0]} is rendered twice; give each file once")
        # parse every reference now: a typo fails before any lease is taken
        self.parsed = {
            ref: resolver.parse(ref) for out in self.outputs for ref in out.template.refs
        }

    @property
    def keys(self) -> list[str]:
        """Reference keys (without ``#field``): one lease each."""
        return list(dict.fromkeys(p.key for p in self.parsed.values()))

    def _content(self, out: Output, secrets: Mapping[str, Any]) -> str:
        parts: list[str] = []
        for piece in out.template.pieces:
            if isinstance(piece, str):
                parts.append(piece)
                continue
            parsed = self.parsed[piece.ref]
            secret = secrets[parsed.key]
            if parsed.field is None and out.whole and len(secret.fields) > 1:
                value = json.dumps({f: secret.reveal(f) for f in secret.fields}, indent=2) + "\n"
            else:
                value = secret.reveal(parsed.field)
            for name in piece.filters:
                value = FILTERS[name](value)
            parts.append(value)
        return "".join(parts)

    def render(self, *, force: bool = False) -> list[Path]:
        """Write every output whose content changed (all with ``force``); returns those written."""
        try:
            return self._render(force)
        except BaseException as exc:
            masking.scrub_exception(exc)  # the rendered bytes stay out of a reporter's locals
            raise

    def _render(self, force: bool) -> list[Path]:
        # one Secret per key for the whole pass: fields of one credential never mix with the next
        secrets = {key: self.resolver.get(key) for key in self.keys}
        written = []
        for out in self.outputs:
            data = self._content(out, secrets).encode("utf-8")
            digest = hashlib.sha256(data).hexdigest()
            if force or digest != out.digest:
                atomic_write(out.dest, data, out.mode)
                out.digest = digest
                written.append(out.dest)
        return written


def handover_config(config: Config) -> Config:
    """``config`` with the per-task child token turned off for every Vault store.

    Leases handed over to another process must not be issued under a token that this process
    revokes when it exits (``auth/token/revoke-self`` revokes every lease under it).
    """
    import dataclasses
    from types import MappingProxyType

    from .._registry import BUILTIN

    stores = {name: dict(table) for name, table in config.stores.items()}
    for name, table in stores.items():
        if str(table.get("type", name if name in BUILTIN else "")) == "vault":
            table["child_token"] = False
    if "vault" not in stores:
        stores["vault"] = {"child_token": False}
    return dataclasses.replace(config, stores=MappingProxyType(stores))


def detach(resolver: Resolver) -> None:
    """Hand ``resolver``'s leases over: this process exits without revoking them.

    The leases stay valid until their TTL ends (or a sidecar/cleanup revokes them through the
    ledger); the resolver is taken off the exit-time close list.
    """
    resolver.detach()
