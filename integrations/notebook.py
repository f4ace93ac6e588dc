"""The IPython / Jupyter extension: ``%load_ext leaseline``.

Once loaded, every value the kernel resolves (and each of its encoded forms: base64, URL, JSON,
hex...; :func:`leaseline.masking.encoded_forms`) is masked in every message the kernel sends to
the notebook, so it never reaches the saved ``.ipynb``: stream output, ``execute_result`` and
``display_data`` in every MIME type (``text/plain``, ``text/html``, ``text/markdown``,
``application/json``...), error names, values and tracebacks, and widgets' comm messages.

How: in a Jupyter kernel, everything sent to the frontend goes through the kernel's
``jupyter_client.session.Session.send`` (ipykernel's ``OutStream`` for ``print``, the display
hook and publisher for results and ``display()``, ``showtraceback`` for errors, comms for
widgets); the extension wraps that one method on the kernel's session objects and masks every
string in the message content with the process masker. Binary buffers (images) are left as they
are. In terminal IPython (no kernel), ``sys.stdout`` and ``sys.stderr`` are wrapped instead.

Magics::

    %leaseline env OPENAI_API_KEY=vault://secret/llm/openai#api_key   # sets os.environ, no echo
    %leaseline leases                                                # the leases the kernel holds

Leases are revoked when the kernel shuts down or restarts: both end the kernel's process through
a ``shutdown_request``, and :mod:`leaseline._lifetime` closes the resolvers at exit as in any
program (a kernel killed outright, ``kill -9``, cannot: its leases expire at their TTL).

Automatic form, in ``~/.ipython/profile_default/ipython_kernel_config.py`` (or
``ipython_config.py`` for terminal IPython)::

    c.InteractiveShellApp.extensions = ["leaseline"]

Limits: text a cell prints in several writes far apart in time (one character per second)
reaches the frontend in several messages and each is masked alone; a value is masked only once
it is resolved in this kernel (or added with ``leaseline.masking.masker().add``).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
import time
from typing import Any, TextIO

from ._exceptions import LeaselineError
from .masking import _masked, masker

__all__ = ["load_ipython_extension", "unload_ipython_extension"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WRAPPED = "_leaseline_unmasked_send"
USAGE = (
    "usage: %leaseline env NAME=REFERENCE [NAME=REFERENCE ...]  |  %leaseline leases\n"
    "  env     resolve each reference and put its value into os.environ[NAME] (never printed)\n"
    "  leases  the leases this kernel holds (reference, renewable, expiry; never values)"
)


def _mask_message(msg: Any) -> Any:
    """``msg`` (a message dict or its content) with every registered value masked."""
    m = masker()
    if not m.active or not isinstance(msg, dict):
        return msg
    return _masked(msg, m)


def _wrap_session(session: Any) -> bool:
    """Mask what ``session.send`` sends; ``False`` if it was wrapped already."""
    if getattr(session, _WRAPPED, None) is not None:
        return False
    original = session.send

    @functools.wraps(original)
    def send(stream: Any, msg_or_type: Any, content: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(msg_or_type, dict) and "content" in msg_or_type:
            msg_or_type = dict(msg_or_type)
            msg_or_type["content"] = _mask_message(msg_or_type.get("content"))
        if content is not None:
            content = _mask_message(content)
        if "metadata" in kwargs:
            kwargs["metadata"] = _mask_message(kwargs["metadata"])
        return original(stream, msg_or_type, content, *args, **kwargs)

    session.send = send
    setattr(session, _WRAPPED, original)
    return True


def _sessions(shell: Any) -> list[Any]:
    """The distinct session objects the kernel sends through."""
    kernel = getattr(shell, "kernel", None)
    owners = [
        kernel,
        getattr(kernel, "iopub_thread", None),
        shell.displayhook,
        shell.display_pub,
        sys.stdout,
        sys.stderr,
    ]
    found: dict[int, Any] = {}
    for owner in owners:
        session = getattr(owner, "session", None)
        if session is not None and callable(getattr(session, "send", None)):
            found.setdefault(id(session), session)
    return list(found.values())


class _MaskedStream:
    """A text stream whose writes are masked (terminal IPython's stdout and stderr)."""

    def __init__(self, inner: TextIO) -> None:
        self._leaseline_inner = inner

    def write(self, text: str) -> int:
        self._leaseline_inner.write(masker().mask(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._leaseline_inner, name)


def _env(args: list[str]) -> None:
    from ._api import resolve

    if not args:
        raise _usage("`%leaseline env` needs NAME=REFERENCE")
    pairs = []
    for position, arg in enumerate(args, 1):
        name, sep, ref = arg.partition("=")
        if not sep or not _NAME.match(name) or not ref:  # never quoted: it may be a value
            raise _usage(f"argument {position}: expected NAME=REFERENCE (NAME a variable name)")
        pairs.append((name, ref))
    for name, ref in pairs:
        try:
            os.environ[name] = resolve(ref)
        except LeaselineError as exc:
            raise _usage(f"{name}: {masker().mask(str(exc))}") from None
        print(f"leaseline: {name} set from {ref}")


def _leases() -> None:
    from ._api import default_resolver

    held = default_resolver().leases()
    if not held:
        print("leaseline: this kernel holds no leases")
        return
    now = time.time()
    for ref, lease in held:
        left = int(lease.expires_at - now)
        renew = "renewable" if lease.renewable else "not renewable"
        print(f"{ref}  {renew}  expires in {left}s")


def _usage(message: str) -> Exception:
    from IPython.core.error import UsageError

    return UsageError(f"leaseline: {message}\n{USAGE}")


def leaseline_magic(line: str) -> None:
    """``%leaseline env NAME=REF ...`` or ``%leaseline leases``."""
    args = shlex.split(line)
    if not args:
        raise _usage("a subcommand is needed")
    command, rest = args[0], args[1:]
    if command == "env":
        _env(rest)
    elif command == "leases":
        _leases()
    else:
        raise _usage("unknown subcommand (not quoted: it may be a value); expected env or leases")


def load_ipython_extension(shell: Any) -> None:
    """Mask resolved values in what the kernel (or terminal IPython) shows; add ``%leaseline``."""
    if getattr(shell, "kernel", None) is not None:
        for session in _sessions(shell):
            _wrap_session(session)
    else:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _MaskedStream):
                setattr(sys, name, _MaskedStream(stream))
    shell.register_magic_function(leaseline_magic, "line", "leaseline")


def unload_ipython_extension(shell: Any) -> None:
    """Stop masking (the values stay registered with the process masker)."""
    for session in _sessions(shell):
        original = getattr(session, _WRAPPED, None)
        if original is not None:
            session.send = original
            delattr(session, _WRAPPED)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _MaskedStream):
            setattr(sys, name, stream._leaseline_inner)
