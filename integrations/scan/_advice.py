"""What to do about a finding: the reference to use instead, and how, per file kind."""

from __future__ import annotations

from collections.abc import Mapping

from ._engine import Finding

__all__ = ["advise", "suggested_reference"]

#: family -> (a reference to store it under, a word to look for in configured aliases)
REFERENCES: dict[str, str] = {
    "openai": "vault://secret/llm/openai#api_key",
    "anthropic": "vault://secret/llm/anthropic#api_key",
    "huggingface": "vault://secret/ml/huggingface#token",
    "google": "vault://secret/llm/google-ai#api_key",
    "cohere": "vault://secret/llm/cohere#api_key",
    "mistral": "vault://secret/llm/mistral#api_key",
    "groq": "vault://secret/llm/groq#api_key",
    "replicate": "vault://secret/ml/replicate#api_token",
    "wandb": "vault://secret/ml/wandb#api_key",
    "langsmith": "vault://secret/llm/langsmith#api_key",
    "pinecone": "vault://secret/ml/pinecone#api_key",
    "aws": "aws-sts://arn:aws:iam::ACCOUNT:role/ROLE (short-lived STS credentials)",
    "database": "vault://database/creds/ROLE#password (dynamic, per-task credentials)",
    "private-key": "vault://secret/keys/NAME#private_key",
    "github": "vault://secret/ci/github#token",
    "slack": "vault://secret/ops/slack#token",
}
_ALIAS_WORDS = {"google": "gemini", "huggingface": "hf", "wandb": "wandb"}

_HOW = {
    "notebook": "clear the output (jupyter nbconvert --clear-output --inplace FILE) and call "
    "leaseline.resolve('{ref}') inside the cell",
    "notebook-source": "call leaseline.resolve('{ref}') in the cell instead of the literal, "
    "and clear outputs that printed it",
    "docker": "remove it from ENV/ARG (they stay in image layers); pass it at run time "
    "(leaseline run, or RUN --mount=type=secret)",
    "env": "write the reference instead of the value ({name}={ref}) and start the process "
    "with leaseline run",
    "yaml": "put the reference in the spec and resolve it inside the task at run time",
}


def suggested_reference(finding: Finding, aliases: Mapping[str, str] | None = None) -> str:
    """An alias from the config that fits the finding's family, else a conventional path."""
    family = finding.family
    if aliases:
        words = {family, _ALIAS_WORDS.get(family, family)}
        for alias, target in sorted(aliases.items()):
            low = (alias + " " + target).lower()
            if any(w in low for w in words):
                return f"{alias} ({target})"
    return REFERENCES.get(family, "vault://secret/PATH#FIELD")


def advise(finding: Finding, aliases: Mapping[str, str] | None = None) -> str:
    """One sentence: rotate if it is a live managed value, then where to keep it and how."""
    ref = suggested_reference(finding, aliases)
    if finding.family == "vault":
        text = (
            "revoke this token (bao/vault token revoke) and authenticate with a short-lived "
            "method (kubernetes, approle, jwt) instead of committing a token"
        )
    else:
        kind = finding.kind
        if kind == "notebook" and "output" not in (finding.location or ""):
            kind = "notebook-source"
        how = _HOW.get(kind, "resolve it at run time (leaseline.resolve, leaseline run)")
        text = f"store it and use {ref}; " + how.format(ref=ref.split(" ")[0], name="NAME")
    if finding.managed_ref:
        return (
            f"rotate `{finding.managed_ref}` now: this is its current value "
            f"(leaseline rotation run {finding.managed_ref}); then {text}"
        )
    return text + "; if it was ever pushed, rotate it: git history keeps it"
