"""The process masker: every value handed out, and its encoded forms, replaced by ``***``.

One :class:`Masker` per process (:func:`masker`). The resolver registers each value before it
returns it. :func:`install_logging` makes Python logging mask records from *every* logger: a
record factory rewrites message, arguments and exception text when the record is created, so no
handler or child logger is missed (a filter on the root logger alone would not see records that
propagate from child loggers); ``Logger.makeRecord`` masks the ``extra=`` fields it adds after
the factory ran (a JSON formatter prints them). It also masks warnings as they are shown
(``warnings.formatwarning``, which the default display and ``logging.captureWarnings`` both
use), and clears the locals of leaseline's own frames that hold a value from tracebacks that are
logged or reach ``sys.excepthook``/``threading.excepthook`` (:func:`scrub_traceback`: Sentry,
``--showlocals`` and rich print frame locals).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = [
    "MASK",
    "Masker",
    "MaskingFilter",
    "encoded_forms",
    "install_logging",
    "masker",
    "scrub_traceback",
]

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

    Thread-safe. ``add`` is O(forms of the new value); the matcher is rebuilt lazily on the next
    ``mask`` (so registering 10,000 leases costs no quadratic recompiles). With many forms the
    matcher is Aho-Corasick (``ahocorasick-rs``), else a compiled ``re`` alternation.
    """

    #: above this many forms, use Aho-Corasick when it is installed
    AC_THRESHOLD = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._forms: frozenset[str] = frozenset()
        self._pending: set[str] = set()
        self._matcher: Callable[[str], str] | None = None
        self._finder: Callable[[str], bool] | None = None
        self._listeners: list[Callable[[str], None]] = []

    def add(self, value: str) -> bool:
        """Register ``value`` (and its encoded forms). Returns ``True`` when it is new."""
        if not isinstance(value, str) or len(value) < MIN_LENGTH:
            return False
        with self._lock:
            if value in self._values:
                return False
            self._values.add(value)
            self._pending |= encoded_forms(value)
            self._matcher = None
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
        with self._lock:
            if self._pending:
                self._forms = self._forms | self._pending
                self._pending = set()
            return self._forms

    def __len__(self) -> int:
        return len(self._values)

    def __bool__(self) -> bool:
        return True

    @property
    def active(self) -> bool:
        """True once any value is registered (cheap check for hot paths)."""
        return bool(self._values)

    def _build(self) -> tuple[Callable[[str], str], Callable[[str], bool]]:
        with self._lock:
            matcher, finder = self._matcher, self._finder
            if matcher is not None and finder is not None:
                return matcher, finder
            if self._pending:
                self._forms = self._forms | self._pending
                self._pending = set()
            ordered = sorted(self._forms, key=len, reverse=True)
            matcher, finder = _compile(ordered)
            self._matcher, self._finder = matcher, finder
            return matcher, finder

    def mask(self, text: str) -> str:
        if not text or not self._values:
            return text
        matcher = self._matcher
        if matcher is None:
            matcher = self._build()[0]
        return matcher(text)

    def contains_secret(self, text: str) -> bool:
        if not text or not self._values:
            return False
        finder = self._finder if self._matcher is not None else None
        if finder is None:
            finder = self._build()[1]
        return finder(text)

    def clear(self) -> None:
        """Forget every value (tests)."""
        with self._lock:
            self._values.clear()
            self._forms = frozenset()
            self._pending = set()
            self._matcher = None
            self._finder = None


def _compile(ordered: list[str]) -> tuple[Callable[[str], str], Callable[[str], bool]]:
    """A masking function and a search function for ``ordered`` (longest first)."""
    if len(ordered) > Masker.AC_THRESHOLD:
        try:
            import ahocorasick_rs
        except ImportError:
            pass
        else:
            automaton = ahocorasick_rs.AhoCorasick(
                ordered, matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST
            )

            def ac_mask(text: str) -> str:
                found = automaton.find_matches_as_indexes(text)
                if not found:
                    return text
                parts, pos = [], 0
                for _, start, end in found:
                    parts.append(text[pos:start])
                    parts.append(MASK)
                    pos = end
                parts.append(text[pos:])
                return "".join(parts)

            return ac_mask, lambda text: bool(automaton.find_matches_as_indexes(text))
    pattern = re.compile("|".join(re.escape(f) for f in ordered))
    return (lambda text: pattern.sub(MASK, text)), (lambda text: pattern.search(text) is not None)


_masker = Masker()


def masker() -> Masker:
    """The process masker."""
    return _masker


#: what every ``LogRecord`` has; anything else came from ``extra=`` or a filter
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _masked(value: object, m: Masker, depth: int = 0) -> object:
    """``value`` with every secret masked: strings, and strings inside dicts, lists and
    tuples; any other object whose ``repr`` shows a secret becomes that ``repr``, masked."""
    if isinstance(value, str):
        return m.mask(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < 8:
        if isinstance(value, dict):
            return {_masked(k, m, depth + 1): _masked(v, m, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [_masked(v, m, depth + 1) for v in value]
            return items if isinstance(value, list) else tuple(items)
    try:
        text = repr(value)
    except Exception:
        return value
    return m.mask(text) if m.contains_secret(text) else value


def _mask_extra(record: logging.LogRecord, names: Iterable[str], m: Masker) -> None:
    for name in names:
        if name in _RECORD_ATTRS:
            continue
        value = record.__dict__.get(name)
        masked = _masked(value, m)
        try:
            changed = masked is not value and masked != value
        except Exception:  # an odd __eq__: keep the masked copy
            changed = True
        if changed:
            record.__dict__[name] = masked


def _mask_record(record: logging.LogRecord, m: Masker) -> None:
    if not m.active:
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: mask what we have
        message = str(record.msg)
    record.msg = m.mask(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        _scrub_exception(record.exc_info[1], m)
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        masked = m.mask(record.exc_text)
        if masked != record.exc_text:
            # Some formatters (structlog's ProcessorFormatter...) render ``exc_info`` themselves
            # and would print the unmasked exception: hand them the masked text in the message.
            record.msg = f"{record.msg}\n{masked}"
            record.exc_info = None
            record.exc_text = None
        else:
            record.exc_text = masked
    if record.stack_info:
        record.stack_info = m.mask(record.stack_info)


def _holds_secret(value: object, m: Masker) -> bool:
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:
        return False
    return m.contains_secret(text)


def scrub_traceback(tb: TracebackType | None, m: Masker | None = None) -> None:
    """Clear the locals of leaseline's own frames in ``tb`` that hold a registered value, so a
    traceback formatter that prints locals (pytest ``--showlocals``, Sentry, rich) shows none
    of them. Frames still running (the one handling the exception) are left alone."""
    target = m or _masker
    if tb is None or not target.active:
        return
    # the first frame is where the exception was caught: it may still run (or be a suspended
    # generator, which clear() would close); every later one was left by the exception
    tb = tb.tb_next
    while tb is not None:
        frame = tb.tb_frame
        module = frame.f_globals.get("__name__", "")
        if (module == "leaseline" or module.startswith("leaseline.")) and any(
            _holds_secret(v, target) for v in frame.f_locals.values()
        ):
            try:
                frame.clear()
            except RuntimeError:  # still executing
                pass
        tb = tb.tb_next


def _scrub_exception(exc: BaseException | None, m: Masker) -> None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # the chain a traceback shows
        seen.add(id(exc))
        scrub_traceback(exc.__traceback__, m)
        exc = exc.__cause__ or exc.__context__


class MaskingFilter(logging.Filter):
    """A logging filter that masks records; attach it to handlers you create yourself."""

    def __init__(self, m: Masker | None = None) -> None:
        super().__init__()
        self._masker = m or _masker

    def filter(self, record: logging.LogRecord) -> bool:
        _mask_record(record, self._masker)
        if self._masker.active:
            _mask_extra(record, list(record.__dict__), self._masker)
        return True


_installed = False
_install_lock = threading.Lock()


def install_logging(m: Masker | None = None) -> None:
    """Mask every log record created in this process from now on, their ``extra`` fields and
    every warning shown; scrub leaseline's frames from tracebacks (idempotent)."""
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
        _install_extra(target)
        _install_warnings(target)
        _install_excepthooks(target)
        _installed = True


def _install_extra(target: Masker) -> None:
    """``extra=`` fields are set on the record after the factory made it: mask them there."""
    make_record = logging.Logger.makeRecord

    def masked_make_record(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(self, *args, **kwargs)
        extra = kwargs.get("extra", args[8] if len(args) > 8 else None)
        if extra and target.active:
            _mask_extra(record, list(extra), target)
        return record

    logging.Logger.makeRecord = masked_make_record  # type: ignore[method-assign]


def _install_warnings(target: Masker) -> None:
    """Every display of a warning formats it with ``warnings.formatwarning``: mask its text."""
    formatwarning = warnings.formatwarning

    def masked_formatwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        return target.mask(formatwarning(message, category, filename, lineno, line))

    warnings.formatwarning = masked_formatwarning


def _install_excepthooks(target: Masker) -> None:
    """An uncaught exception's frames are scrubbed before any hook (Sentry's...) reads them."""
    excepthook = sys.excepthook
    thread_hook = threading.excepthook

    def masked_excepthook(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        _scrub_exception(exc, target)
        excepthook(kind, exc, tb)

    def masked_thread_hook(args: threading.ExceptHookArgs) -> None:
        _scrub_exception(args.exc_value, target)
        thread_hook(args)

    sys.excepthook = masked_excepthook
    threading.excepthook = masked_thread_hook
