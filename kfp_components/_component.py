"""``leaseline.kfp.component``: ``kfp.dsl.component`` whose task resolves references at run time.

KFP builds a lightweight component from the function's source: the command runs
``python3 -m kfp.dsl.executor_main`` on a generated module made of a few imports and that source.
This module appends an epilogue to that generated module which rebinds the function's name to a
wrapper calling :func:`leaseline.kfp._task.run`. The wrapper carries the original signature, so
KFP's executor sees the same inputs and outputs. Only references (and the store names in them)
enter the spec. For containerized components (``target_image=``) the image imports the module
itself, so the component's ``python_func`` is wrapped instead.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

import leaseline
from kfp import dsl
from leaseline import InvalidReference, parse
from leaseline._registry import BUILTIN

from . import _task

__all__ = ["MARKER", "component", "leaseline_requirement"]

#: first line of the generated epilogue; also how helpers recognise a leaseline component
MARKER = "# --- leaseline: resolve secret references inside this task (leaseline.kfp.component)"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REQUIREMENT_NAME = re.compile(r"\s*leaseline\b", re.IGNORECASE)

_EPILOGUE = """

{marker}
import inspect as _leaseline_inspect
import leaseline.kfp._task as _leaseline_task
_leaseline_inner_{name} = {name}
def {name}(*args, **kwargs):
    return _leaseline_task.run(_leaseline_inner_{name}, args, kwargs, secrets={secrets!r})
{name}.__signature__ = _leaseline_inspect.signature(_leaseline_inner_{name})
{name}.__doc__ = _leaseline_inner_{name}.__doc__
{name}.__annotations__ = _leaseline_inner_{name}.__annotations__
"""


def check_reference(ref: object, where: str) -> str:
    """Return ``ref`` when it is a full reference (``store://...``); raise otherwise.

    Raises :class:`InvalidReference` naming ``where``; a value that looks like a credential is
    not quoted.
    """
    if not isinstance(ref, str):
        raise InvalidReference(f"{where}: expected a reference string, got {type(ref).__name__}")
    try:
        parsed = parse(ref)
    except InvalidReference as exc:
        raise InvalidReference(f"{where}: {exc}") from None
    if parsed.store in {"http", "https"}:
        raise InvalidReference(f"{where}: '{ref}' is a URL, not a secret reference")
    return ref


def check_env_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise ValueError(f"{where}: {name!r} is not a valid environment variable name")
    return name


def _check_secrets(secrets: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, ref in (secrets or {}).items():
        check_env_name(name, "secrets=")
        checked[name] = check_reference(ref, f"secrets={{{name!r}: ...}}")
    return checked


def _installed_version() -> str:
    try:
        return metadata.version("leaseline")
    except metadata.PackageNotFoundError:  # running from a source tree
        return str(leaseline.__version__)


def leaseline_requirement(install: bool | str, refs: Iterable[str] = ()) -> str | None:
    """The requirement ``install_leaseline=`` adds to ``packages_to_install``.

    ``True``: the installed version, with the extras of the store types named in ``refs``
    (``vault`` when none is named); a string: exactly that requirement; ``False``: nothing.

    >>> leaseline_requirement("leaseline[vault]==1.2.3")
    'leaseline[vault]==1.2.3'
    >>> leaseline_requirement(False) is None
    True
    """
    if install is False:
        return None
    if isinstance(install, str):
        if not install.strip():
            raise ValueError("install_leaseline: an empty requirement; pass False to add none")
        return install.strip()
    if install is not True:
        raise TypeError("install_leaseline must be True, False or a requirement string")
    stores = {parse(ref).store for ref in refs}
    extras = {spec.extra for store, spec in BUILTIN.items() if store in stores and spec.extra}
    if not stores:
        extras = {"vault"}
    suffix = f"[{','.join(sorted(extras))}]" if extras else ""
    return f"leaseline{suffix}=={_installed_version()}"


def _wrap_callable(func: Callable[..., Any], secrets: Mapping[str, str]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _task.run(func, args, kwargs, secrets=secrets)

    wrapper.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
    return wrapper


def component(
    func: Callable[..., Any] | None = None,
    *,
    secrets: Mapping[str, str] | None = None,
    install_leaseline: bool | str = True,
    **kwargs: Any,
) -> Any:
    """A drop-in for ``kfp.dsl.component`` (same arguments) whose task resolves its secrets.

    At the start of the task, inside its container, every environment variable whose value is a
    reference and every entry of ``secrets`` (variable name -> reference) is resolved and set;
    leases are renewed during the step and revoked at its end; a return value or output file
    holding a resolved value is refused. ``install_leaseline``: ``True`` adds the installed
    leaseline version to ``packages_to_install``, a string is the exact requirement to add
    (a pin, or a URL for a private index), ``False`` adds nothing (the image has it).

    Raises :class:`InvalidReference` when a ``secrets`` value is not a reference (a value that
    looks like a credential is refused without being quoted).

    >>> @leaseline.kfp.component(base_image="python:3.11",  # doctest: +SKIP
    ...                          secrets={"OPENAI_API_KEY": "vault://secret/llm/openai#api_key"})
    ... def train(prompt: str) -> str: ...
    """
    if func is None:
        return functools.partial(
            component, secrets=secrets, install_leaseline=install_leaseline, **kwargs
        )
    refs = _check_secrets(secrets)
    packages = list(kwargs.pop("packages_to_install", None) or [])
    requirement = leaseline_requirement(install_leaseline, refs.values())
    if requirement and not any(_REQUIREMENT_NAME.match(p) for p in packages):
        packages.append(requirement)
    comp = dsl.component(func, packages_to_install=packages or None, **kwargs)
    if kwargs.get("target_image"):
        comp.python_func = _wrap_callable(func, refs)
        return comp
    container = comp.component_spec.implementation.container
    command = list(container.command or [])
    if len(command) < 2 or "ephemeral_component.py" not in command[-2]:
        raise RuntimeError(
            "leaseline.kfp.component: this kfp version builds lightweight components in a way "
            "leaseline does not recognise (no generated module in the command); "
            f"kfp {getattr(dsl, '__version__', '')} is not supported"
        )
    command[-1] = command[-1].rstrip("\n") + _EPILOGUE.format(
        marker=MARKER, name=func.__name__, secrets=refs
    )
    container.command = command
    return comp
