"""A failed run's exception, masked before Prefect records it.

Prefect turns the exception of a failed (or crashed) task run or flow run into the state's
``message`` (which the API stores and the UI shows) and pickles the exception itself into result
storage. leaseline's logging masker never sees either. So once a value has been handed out in
this process, Prefect's ``exception_to_failed_state`` / ``exception_to_crashed_state`` (the
functions both engines call, sync and async) mask the exception first: its arguments and string
attributes, along its ``__cause__``/``__context__`` chain, in place; an exception whose text
still holds a value after that (a custom ``__str__``) is replaced by a :class:`MaskedError`
carrying the masked text (both from the core: :func:`leaseline.masking.mask_exception`).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

from leaseline.masking import MaskedError, mask_exception, masker

__all__ = ["MaskedError", "install", "mask_exception"]  # the first two from leaseline.masking

#: (module, function name) pairs Prefect's engines call to turn an exception into a state
_TARGETS = (
    ("prefect.states", "exception_to_failed_state"),
    ("prefect.states", "exception_to_crashed_state"),
    ("prefect._internal.states", "exception_to_failed_state_sync"),
    ("prefect._internal.states", "exception_to_crashed_state_sync"),
    ("prefect.task_engine", "exception_to_failed_state"),
    ("prefect.task_engine", "exception_to_crashed_state"),
    ("prefect.task_engine", "exception_to_failed_state_sync"),
    ("prefect.task_engine", "exception_to_crashed_state_sync"),
    ("prefect.flow_engine", "exception_to_failed_state"),
    ("prefect.flow_engine", "exception_to_crashed_state"),
)

_installed = False
_lock = threading.Lock()


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(fn, "__leaseline_masks__", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        exc = kwargs.get("exc", args[0] if args else None)
        if exc is None:
            exc = sys.exc_info()[1]
        if isinstance(exc, BaseException):
            masked = mask_exception(exc)
            if args:
                args = (masked, *args[1:])
            else:
                kwargs["exc"] = masked
        return fn(*args, **kwargs)

    wrapper.__leaseline_masks__ = True  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Mask exceptions before Prefect records them (idempotent; imports Prefect's engines)."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        import importlib

        for module_name, name in _TARGETS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            fn = vars(module).get(name)
            if callable(fn):
                setattr(module, name, _wrap(fn))
        _installed = True


_listening = False


def install_when_values_exist() -> None:
    """Install on the first value the process's masker registers (no value: nothing to hide)."""
    global _listening
    if _listening:
        return
    with _lock:
        if _listening:
            return
        _listening = True
    masker().on_add(lambda _value: install())
