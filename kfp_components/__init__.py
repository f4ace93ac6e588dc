"""Kubeflow Pipelines: components that resolve secrets inside the task; specs that hold references.

>>> import leaseline.kfp
>>> @leaseline.kfp.component(base_image="python:3.11",  # doctest: +SKIP
...                          secrets={"OPENAI_API_KEY": "vault://secret/llm/openai#api_key"})
... def train(prompt: str) -> str: ...
>>> leaseline.kfp.compile(pipeline, "pipeline.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

from ._component import component, use_secrets, vault_agent_annotations, vault_kubernetes_auth
from ._spec import Finding, UnsafeSpec, check_spec, compile
from ._task import SecretOutputRefused

__all__ = [
    "Finding",
    "SecretOutputRefused",
    "UnsafeSpec",
    "check_spec",
    "compile",
    "component",
    "use_secrets",
    "vault_agent_annotations",
    "vault_kubernetes_auth",
]
