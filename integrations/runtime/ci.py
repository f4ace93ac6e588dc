"""CI-native masking and CI identity tokens.

- :func:`announce_masks`: under GitHub Actions (``GITHUB_ACTIONS=true``), every value the
  process masker learns is first printed as ``::add-mask::VALUE`` (and once per encoded form),
  so the runner masks it in this step's log and in every later step - before leaseline, or the
  program it starts, can print it.
- :func:`identity_token`: the CI job's OIDC identity token, for a Vault/OpenBao ``jwt`` login
  with no stored Vault secret: GitHub Actions (``ACTIONS_ID_TOKEN_REQUEST_URL`` +
  ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``, needs ``permissions: id-token: write``) or GitLab CI
  ``id_tokens`` (``VAULT_ID_TOKEN``, or any variable named with ``token_env``; the deprecated
  ``CI_JOB_JWT_V2``/``CI_JOB_JWT`` too).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TextIO

from .._exceptions import AccessDenied, BackendUnavailable
from .._logins import remember
from ..masking import encoded_forms, masker

__all__ = ["GITLAB_TOKEN_VARS", "announce_masks", "github_actions", "identity_token", "mask_lines"]

#: GitLab CI variables tried, in order, when no ``token_env`` is configured
GITLAB_TOKEN_VARS = ("VAULT_ID_TOKEN", "CI_JOB_JWT_V2", "CI_JOB_JWT")

_installed = False
_install_lock = threading.Lock()
_write_lock = threading.Lock()


def github_actions(environ: Mapping[str, str] | None = None) -> bool:
    """True inside a GitHub Actions job."""
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS", "").strip().lower() == "true"


def _escape(text: str) -> str:
    # the runner's command-data escaping (actions/toolkit `escapeData`)
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def mask_lines(value: str) -> list[str]:
    """The ``::add-mask::`` lines for ``value``: each encoded form, and for a multi-line value
    each of its lines too (the runner matches masks line by line)."""
    forms = set(encoded_forms(value))
    if "\n" in value or "\r" in value:
        forms |= {line.strip("\r") for line in value.splitlines() if len(line.strip()) >= 4}
    return [f"::add-mask::{_escape(form)}" for form in sorted(forms, key=lambda f: (-len(f), f))]


def announce_masks(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Under GitHub Actions, print ``::add-mask::`` for every value the masker learns from now
    on (and every value it already holds). Idempotent; returns True when announcing.

    The lines go to stdout (the runner reads workflow commands there) and are flushed before the
    value is returned to whoever asked for it.
    """
    global _installed
    if not github_actions(environ):
        return False
    with _install_lock:
        if _installed:
            return True
        _installed = True
    out: Callable[[], TextIO] = (lambda: stream) if stream is not None else (lambda: sys.stdout)

    def listener(value: str) -> None:
        text = "".join(line + "\n" for line in mask_lines(value))
        with _write_lock:
            target = out()
            target.write(text)
            target.flush()

    masker().on_add(listener)
    return True


def _github_token(env: Mapping[str, str], audience: str | None, timeout: float) -> str:
    # imported here: `run` imports this module for announce_masks on every start
    import urllib.error
    import urllib.parse
    import urllib.request

    url = env["ACTIONS_ID_TOKEN_REQUEST_URL"]
    bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    if not bearer:
        raise AccessDenied(
            "GitHub Actions: ACTIONS_ID_TOKEN_REQUEST_URL is set but ACTIONS_ID_TOKEN_REQUEST_TOKEN "
            "is not; give the job `permissions: id-token: write`"
        )
    remember(bearer)  # it mints identity tokens: masked, and kept from `leaseline run`'s child
    if audience:
        url += ("&" if "?" in url else "?") + "audience=" + urllib.parse.quote(audience, safe="")
    request = urllib.request.Request(
        url, headers={"Authorization": f"bearer {bearer}", "Accept": "application/json"}
    )
    where = urllib.parse.urlsplit(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise AccessDenied(
            f"GitHub Actions refused the OIDC token request ({exc.code} from {where}); "
            "does the job have `permissions: id-token: write`?"
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendUnavailable(
            f"GitHub Actions OIDC token endpoint {where} unreachable ({type(reason).__name__})"
        ) from None
    except ValueError:
        raise AccessDenied(f"GitHub Actions OIDC token endpoint {where} sent no JSON") from None
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise AccessDenied(f"GitHub Actions OIDC token endpoint {where} sent no 'value'")
    return value


def identity_token(
    audience: str | None = None,
    *,
    token_env: str | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> str:
    """The CI job's OIDC identity token (a JWT), registered with the masker before it returns.

    Raises :class:`AccessDenied` naming what to configure when no CI identity is available.
    """
    env = os.environ if environ is None else environ
    token: str | None = None
    if token_env:
        token = env.get(token_env) or None
        if token is None:
            raise AccessDenied(
                f"CI identity token: ${token_env} is not set (GitLab: declare it under "
                f"`id_tokens: {token_env}: aud: ...` in the job)"
            )
    elif env.get("ACTIONS_ID_TOKEN_REQUEST_URL"):
        token = _github_token(env, audience, timeout)
    else:
        for name in GITLAB_TOKEN_VARS:
            if env.get(name):
                token = env[name]
                break
    if not token:
        raise AccessDenied(
            "no CI identity token found: on GitHub Actions give the job `permissions: id-token: "
            "write`; on GitLab CI declare `id_tokens: VAULT_ID_TOKEN: aud: ...` (or set token_env)"
        )
    token = token.strip()
    # as actions/core getIDToken does, the token is masked (a credential too), and a variable
    # holding it is kept from `leaseline run`'s child
    remember(token)
    return token
