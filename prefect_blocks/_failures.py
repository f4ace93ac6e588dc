"""A failed run's exception, masked before Prefect records it.

Prefect turns the exception of a failed (or crashed) task run or flow run into the state's
``message`` (which the API stores and the UI shows) and pickles the exception itself into result
storage. leaseline's logging masker never sees either. So once a value has been handed out in
this process, Prefect's ``exception_to_failed_state`` / ``exception_to_crashed_state`` (the
functions both engines call, sync and async) mask the exception first: its arguments and string
attributes, along its ``__cause__``/``__context__`` chain, in place; an exception whose text
still holds a value after that (a custom ``__str__``) is replaced by a :class:`MaskedError`
carrying the masked text.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

from leaseline.masking import Masker, masker

__all__ = ["MaskedError", "install", "mask_exception"]

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


class MaskedError(RuntimeError):
    """Stands in for an exception whose text held a secret value that could not be masked in
    place; ``str()`` is the original type and text, masked."""


def _masked(value: Any, m: Masker) -> Any:
    if isinstance(value, str):
        return m.mask(value)
    if isinstance(value, bytes):
        return m.mask(value.decode("utf-8", "replace")).encode()
    if isinstance(value, tuple | list):
        return type(value)(_masked(item, m) for item in value)
    return value


def mask_exception(exc: BaseException, m: Masker | None = None) -> BaseException:
    """``exc`` with every registered value masked (in place), or a :class:`MaskedError`.

    >>> from leaseline.masking import Masker
    >>> m = Masker(); _ = m.add("s3cr3t-value")
    >>> str(mask_exception(ValueError("rejected s3cr3t-value"), m))
    'rejected ***'
    """
    m = m or masker()
    if not m.active:
        return exc
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        try:
            link.args = _masked(link.args, m)
            for name, value in list(vars(link).items()):
                masked = _masked(value, m)
                if masked is not value:
                    setattr(link, name, masked)
        except Exception:  # an exception type that refuses new attributes: checked below
            pass
        link = link.__cause__ or link.__context__
    try:
        text = str(exc)
    except Exception:
        text = ""
    if not m.contains_secret(text):
        return exc
    stand_in = MaskedError(f"{type(exc).__name__}: {m.mask(text)}")
    stand_in.__cause__ = None
    stand_in.__suppress_context__ = True
    return stand_in


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
