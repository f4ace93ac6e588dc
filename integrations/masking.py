"""The process masker: every value handed out, and its encoded forms, replaced by ``***``.

One :class:`Masker` per process (:func:`masker`). The resolver registers each value before it
returns it. :func:`install_logging` makes Python logging mask records from *every* logger: a
record factory rewrites message, arguments and exception text when the record is created, so no
handler or child logger is missed (a filter on the root logger alone would not see records that
propagate from child loggers).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "Masker", "MaskingFilter", "encoded_forms", "install_logging", "masker"]

MASK = "***"
#: values shorter than this are not masked: masking "1" or "on" would shred every line.
MIN_LENGTH = 4


def encoded_forms(value: str) -> set[str]:
    """``value`` and the forms it takes when encoded: base64 (standard, URL-safe, unpadded),
    URL-encoding, JSON string escaping, hex."""
    raw = value.encode()
    forms = {
        value,
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        binascii.hexlify(raw).decode(),
        binascii.hexlify(raw).decode().upper(),
    }
    return {f for f in forms if len(f) >= MIN_LENGTH}


class Masker:
    """A set of secret strings and a fast ``mask(text)``.

    Thread-safe; ``mask`` is lock-free (it reads an immutable compiled pattern).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._forms: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._listeners: list[Callable[[str], None]] = []

    def add(self, value: str) -> bool:
        """Register ``value`` (and its encoded forms). Returns ``True`` when it is new."""
        if not isinstance(value, str) or len(value) < MIN_LENGTH:
            return False
        with self._lock:
            if value in self._values:
                return False
            self._values.add(value)
            forms = set(self._forms) | encoded_forms(value)
            self._forms = frozenset(forms)
            # Longest first, so a value is replaced whole before any shorter value inside it.
            ordered = sorted(forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(f) for f in ordered))
            listeners = list(self._listeners)
        for listener in listeners:
            listener(value)
        return True

    def add_many(self, values: Iterable[str]) -> None:
        for value in values:
            self.add(value)

    def on_add(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(value)`` for every new value (and every value already registered)."""
        with self._lock:
            self._listeners.append(listener)
            current = list(self._values)
        for value in current:
            listener(value)

    @property
    def forms(self) -> frozenset[str]:
        """Every registered string in every encoded form (for streaming maskers)."""
        return self._forms

    def __len__(self) -> int:
        return len(self._values)

    def __bool__(self) -> bool:
        return True

    def mask(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def contains_secret(self, text: str) -> bool:
        pattern = self._pattern
        return pattern is not None and pattern.search(text) is not None

    def clear(self) -> None:
        """Forget every value (tests)."""
        with self._lock:
            self._values.clear()
            self._forms = frozenset()
            self._pattern = None


_masker = Masker()


def masker() -> Masker:
    """The process masker."""
    return _masker


def _mask_record(record: logging.LogRecord, m: Masker) -> None:
    if m._pattern is None:
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: mask what we have
        message = str(record.msg)
    record.msg = m.mask(message)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = m.mask(record.exc_text)
    if record.stack_info:
        record.stack_info = m.mask(record.stack_info)


class MaskingFilter(logging.Filter):
    """A logging filter that masks records; attach it to handlers you create yourself."""

    def __init__(self, m: Masker | None = None) -> None:
        super().__init__()
        self._masker = m or _masker

    def filter(self, record: logging.LogRecord) -> bool:
        _mask_record(record, self._masker)
        return True


_installed = False
_install_lock = threading.Lock()


def install_logging(m: Masker | None = None) -> None:
    """Mask every log record created in this process from now on (idempotent)."""
    global _installed
    target = m or _masker
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _mask_record(record, target)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
