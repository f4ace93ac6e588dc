"""The pipeline side of ``leaseline.kfp``: components that resolve references at run time, and
the helpers that configure their tasks (references and auth settings, never values).

``component``: ``kfp.dsl.component`` whose task resolves its secrets. KFP builds a lightweight
component from the function's source: the command runs ``python3 -m kfp.dsl.executor_main`` on
a generated module made of a few imports and that source. This module appends an epilogue to
that generated module which rebinds the function's name to a wrapper calling
:func:`leaseline.kfp._task.run` (what runs inside the task). The wrapper carries the original
signature, so KFP's executor sees the same inputs and outputs. Only references (and the store
names in them) enter the spec. For containerized components (``target_image=``) the image
imports the module itself, so the component's ``python_func`` is wrapped instead.

``use_secrets``, ``vault_kubernetes_auth``, ``vault_agent_annotations``: set a pipeline task's
environment variables to references, its Vault login settings, its pod's agent annotations.
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
from leaseline._scope import BUILTIN

from . import _task

__all__ = [
    "MARKER",
    "component",
    "leaseline_requirement",
    "use_secrets",
    "vault_agent_annotations",
    "vault_kubernetes_auth",
]

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


# -- configuring a pipeline's tasks ------------------------------------------------------------

AGENT = "vault.hashicorp.com/"


def _task_name(task: Any) -> str:
    return str(getattr(task, "name", None) or "?")


def _is_unwrapped_lightweight(task: Any) -> bool:
    """A lightweight Python component not built by ``leaseline.kfp.component``."""
    spec = getattr(task, "container_spec", None)
    command = list(getattr(spec, "command", None) or [])
    source = "\n".join(str(part) for part in command)
    return "ephemeral_component.py" in source and MARKER not in source


def use_secrets(task: Any, secrets: Mapping[str, str]) -> Any:
    """Set each environment variable of ``task`` to a *reference*; the task resolves it at run time.

    ``use_secrets(task, {"OPENAI_API_KEY": "vault://secret/llm/openai#api_key"})``. Returns the task.

    Raises :class:`leaseline.InvalidReference` (naming the task and the variable, never quoting
    a credential-looking value) when a value is not a reference, and :class:`TypeError` when the
    task's component was built with plain ``kfp.dsl.component`` (its code would see the reference).
    """
    name = _task_name(task)
    if _is_unwrapped_lightweight(task):
        raise TypeError(
            f"task '{name}' was built with kfp.dsl.component, which would hand its code the "
            "reference instead of the value; build it with leaseline.kfp.component"
        )
    checked = {
        check_env_name(var, f"task '{name}'"): check_reference(ref, f"task '{name}', {var}")
        for var, ref in secrets.items()
    }
    for var, ref in checked.items():
        task.set_env_variable(var, ref)
    return task


def _store_env(store: str) -> str:
    return "LEASELINE_STORES__" + store.upper().replace("-", "_")


def vault_kubernetes_auth(
    task: Any,
    *,
    role: str,
    addr: str,
    mount: str = "kubernetes",
    jwt_file: str | None = None,
    namespace: str | None = None,
    cacert: str | None = None,
    store: str = "vault",
) -> Any:
    """Make ``task`` log in to Vault/OpenBao with its pod's service-account token.

    Sets the environment form of ``[stores.vault] addr=..., auth={method="kubernetes", role=...}``;
    only the address and role enter the spec, the token is read from the pod at run time.
    Returns the task.
    """
    if not addr.startswith(("http://", "https://")):
        raise ValueError(f"vault_kubernetes_auth: addr must be http(s)://HOST:PORT, got {addr!r}")
    prefix = _store_env(store)
    settings = {
        f"{prefix}__ADDR": addr,
        f"{prefix}__AUTH__METHOD": "kubernetes",
        f"{prefix}__AUTH__ROLE": role,
    }
    if mount != "kubernetes":
        settings[f"{prefix}__AUTH__MOUNT"] = mount
    if jwt_file:
        settings[f"{prefix}__AUTH__JWT_FILE"] = jwt_file
    if namespace:
        settings[f"{prefix}__NAMESPACE"] = namespace
    if cacert:
        settings[f"{prefix}__CACERT"] = cacert
    for var, value in settings.items():
        task.set_env_variable(var, value)
    return task


def vault_agent_annotations(
    task: Any,
    *,
    role: str,
    secrets: Mapping[str, str],
    templates: Mapping[str, str] | None = None,
    addr: str | None = None,
    pre_populate_only: bool = True,
    extra: Mapping[str, str] | None = None,
) -> Any:
    """Annotate ``task``'s pod for the Vault Agent injector (through kfp-kubernetes).

    ``secrets`` maps a file name to a Vault path: the agent renders ``/vault/secrets/NAME``,
    which the task can read as ``file:///vault/secrets/NAME#field``. ``pre_populate_only``
    defaults to ``True`` because the agent sidecar would otherwise keep the pod running after
    the step ends; with it, nothing renews during the step (use :func:`leaseline.kfp.component`
    for renewal). Returns the task.
    """
    from kfp import kubernetes

    name = _task_name(task)
    annotations: dict[str, str] = {f"{AGENT}agent-inject": "true", f"{AGENT}role": role}
    if addr:
        annotations[f"{AGENT}service"] = addr
    if pre_populate_only:
        annotations[f"{AGENT}agent-pre-populate-only"] = "true"
    for file, path in secrets.items():
        if "/" in file or not file:
            raise ValueError(f"task '{name}': secret file name {file!r} must be a plain name")
        check_reference(f"vault://{path}", f"task '{name}', agent secret {file}")
        annotations[f"{AGENT}agent-inject-secret-{file}"] = path
    for file, template in (templates or {}).items():
        if file not in secrets:
            raise ValueError(f"task '{name}': template for {file!r}, which is not in secrets")
        annotations[f"{AGENT}agent-inject-template-{file}"] = template
    annotations.update(extra or {})
    for key, value in annotations.items():
        kubernetes.add_pod_annotation(task, key, value)
    return task
