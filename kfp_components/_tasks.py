"""Helpers that configure a pipeline task: references and auth settings, never values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._component import MARKER, check_env_name, check_reference

__all__ = ["use_secrets", "vault_agent_annotations", "vault_kubernetes_auth"]

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
