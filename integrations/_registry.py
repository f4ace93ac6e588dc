"""Store types -> backend classes, imported lazily on first use.

The table maps a store type to ``"module:Class"`` plus the pip extra that brings its SDK. Third
parties add types through the ``leaseline.backends`` entry-point group (value ``"module:Class"``)
or :func:`register_backend`. Nothing is imported until a store of that type is used.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from ._exceptions import BackendNotInstalled, LeaselineError

if TYPE_CHECKING:
    from .backends import BackendClass

__all__ = ["BUILTIN", "BackendSpec", "backend_class", "known_types", "register_backend"]

ENTRY_POINT_GROUP = "leaseline.backends"


class BackendSpec(NamedTuple):
    target: str  # "module:Class"
    extra: str | None  # pip extra that installs the SDK


BUILTIN: Mapping[str, BackendSpec] = MappingProxyType(
    {
        "aws-sm": BackendSpec("leaseline.backends.aws:SecretsManagerBackend", "aws"),
        "aws-ssm": BackendSpec("leaseline.backends.aws:ParameterStoreBackend", "aws"),
        "aws-sts": BackendSpec("leaseline.backends.aws:AssumeRoleBackend", "aws"),
        "azure-kv": BackendSpec("leaseline.backends.azure:KeyVaultBackend", "azure"),
        "env": BackendSpec("leaseline.backends.env:EnvBackend", None),
        "file": BackendSpec("leaseline.backends.file:FileBackend", None),
        "memory": BackendSpec("leaseline.backends.memory:MemoryBackend", None),
        "vault": BackendSpec("leaseline.backends.vault:VaultBackend", "vault"),
    }
)

_lock = threading.Lock()
_registered: dict[str, BackendSpec | BackendClass] = {}
_entry_points_loaded = False
_classes: dict[str, BackendClass] = {}


def register_backend(type_: str, target: str | BackendClass, *, extra: str | None = None) -> None:
    """Make store type ``type_`` available, from a class or a ``"module:Class"`` string.

    >>> register_backend("acme", "acme_leaseline:AcmeBackend")  # doctest: +SKIP
    """
    with _lock:
        _registered[type_] = BackendSpec(target, extra) if isinstance(target, str) else target
        _classes.pop(type_, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    from importlib.metadata import entry_points  # ~12 ms: only when a type is not built in

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _registered.setdefault(ep.name, BackendSpec(ep.value, None))
    _entry_points_loaded = True


def known_types() -> list[str]:
    """Every store type that can be used: built in, registered, or from entry points."""
    with _lock:
        _load_entry_points()
        return sorted(set(BUILTIN) | set(_registered))


def backend_class(type_: str) -> BackendClass:
    """The backend class for ``type_``, importing its module on first use.

    Raises :class:`BackendNotInstalled` naming the pip extra when the SDK is missing, and
    :class:`LookupError` (caught by the caller) for an unknown type.
    """
    cls = _classes.get(type_)
    if cls is not None:
        return cls
    with _lock:
        spec: BackendSpec | BackendClass | None = _registered.get(type_) or BUILTIN.get(type_)
        if spec is None:
            _load_entry_points()
            spec = _registered.get(type_)
        if spec is None:
            raise LookupError(type_)
        if not isinstance(spec, BackendSpec):
            cls = spec
        else:
            module_name, _, attr = spec.target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                if spec.extra:
                    raise BackendNotInstalled(
                        f"store type '{type_}' needs a package that is not installed "
                        f"({exc.name or exc}); install it with: pip install 'leaseline[{spec.extra}]'",
                        store=type_,
                    ) from exc
                raise
            try:
                cls = getattr(module, attr)
            except AttributeError:
                raise LeaselineError(
                    f"backend {spec.target} for '{type_}' has no class {attr}"
                ) from None
        _classes[type_] = cls
        return cls
