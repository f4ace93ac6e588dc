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

Why ~570 lines: the masker, its encoded forms and its logging/traceback hooks are the public
surface of masking in one place; the stream masker is ``masking._stream``.
"""

from __future__ import annotations

import base64
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

from .._exceptions import ConfigError

__all__ = [
    "MASK",
    "MAX_FORM",
    "MIN_LENGTH",
    "MaskedError",
    "Masker",
    "MaskingFilter",
    "TooLongToMask",
    "encoded_forms",
    "install_logging",
    "mask_exception",
    "mask_std_streams",
    "masker",
    "scrub_traceback",
    "stream_forms",
]

MASK = "***"
#: values shorter than this are not masked: masking "1" or "on" would shred every line.
MIN_LENGTH = 4
#: no encoded form longer than this (UTF-8 bytes) is registered: matching holds back at most one
#: form, so this bounds what a stream masker may keep in memory. A 2 MB value fits in every form
#: (hex and UTF-16 double it); `leaseline run` refuses a value that does not (:class:`TooLongToMask`).
MAX_FORM = 8 * 1024 * 1024

log = logging.getLogger("leaseline.masking")


class TooLongToMask(ConfigError):
    """A secret value is too long to be masked in every encoded form (:data:`MAX_FORM`)."""


def _b64_cores(raw: bytes, altchars: bytes | None) -> list[str]:
    """Base64 of ``raw`` as it appears inside a longer encoded string, at each of the three
    alignments (``raw`` preceded by 0, 1 or 2 bytes, as a password is in ``user:password``):
    the characters made of ``raw``'s bits alone."""
    cores = []
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw + b"\0\0", altchars=altchars).decode()
        cores.append(enc[-(-8 * pad // 6) : (8 * (pad + len(raw))) // 6])
    return cores


def _lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def _form_size(form: str) -> int:
    return len(form) if form.isascii() else len(form.encode("utf-8", "surrogatepass"))


def _all_forms(value: str) -> set[str]:
    raw = value.encode("utf-8", "surrogatepass")
    b64 = base64.b64encode(raw).decode()
    variants = {value}
    if "\n" in value:  # a pty (and many writers) end lines with \r\n
        variants.add(value.replace("\r\n", "\n").replace("\n", "\r\n"))
        variants.add(value.replace("\r\n", "\n"))
    forms = set(variants)
    forms |= {b64, b64.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    forms |= {*_b64_cores(raw, None), *_b64_cores(raw, b"-_")}
    for encoded in (quote(value, safe=""), quote(value), quote_plus(value)):
        forms |= {encoded, _lower_escapes(encoded)}
    for ascii_only in (True, False):
        once = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        twice = json.dumps(once, ensure_ascii=ascii_only)[1:-1]  # JSON inside a JSON string
        forms |= {once, twice}
    forms |= {raw.hex(), raw.hex().upper()}
    return forms


def _registered(value: str) -> tuple[set[bytes], set[bytes], bool]:
    """``value``'s forms in text and in a program's output (UTF-8 bytes), and whether every form
    fits in :data:`MAX_FORM` bytes."""
    if len(value) > MAX_FORM:
        return set(), set(), False
    forms = {f for f in _all_forms(value) if _form_size(f) >= MIN_LENGTH}
    text = {f.encode("utf-8", "surrogatepass") for f in forms if _form_size(f) <= MAX_FORM}
    variants = {value, value.replace("\r\n", "\n").replace("\n", "\r\n")}
    utf16 = {v.encode("utf-16-le", "surrogatepass") for v in variants}
    stream = text | {f for f in utf16 if len(f) <= MAX_FORM}
    return text, stream, len(text) == len(forms) and len(stream) == len(text | utf16)


def encoded_forms(value: str) -> set[str]:
    """``value`` and the forms it takes when encoded: base64 (standard, URL-safe, unpadded, and
    at each of the three alignments inside longer base64), URL-encoding (upper- and lower-case
    ``%xx``), JSON string escaping (once, and twice: JSON inside a JSON string), hex, and for a
    multi-line value its ``\\r\\n`` and ``\\n`` line ends. Forms shorter than :data:`MIN_LENGTH`
    or longer than :data:`MAX_FORM` bytes are left out."""
    return {f.decode("utf-8", "surrogatepass") for f in _registered(value)[0]}


def stream_forms(value: str) -> set[bytes]:
    """The byte strings a program's output may hold ``value`` as: :func:`encoded_forms` in
    UTF-8, and ``value`` in UTF-16LE (also with ``\\r\\n`` line ends)."""
    return _registered(value)[1]


class Masker:
    """A set of secret strings and a fast ``mask(text)``.

    Thread-safe. ``add`` is O(forms of the new value); the matcher is rebuilt lazily on the next
    ``mask`` (so registering 10,000 leases costs no quadratic recompiles). Matching is the
    stream masker's (:mod:`leaseline.masking._stream`: Aho-Corasick over each form's first bytes, each
    hit checked against the whole form), on the UTF-8 of the text, and also on the
    text without terminal escape sequences; memory stays linear in the registered values.
    Overlapping and adjacent matches are masked as one span.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._text: frozenset[bytes] = frozenset()  # forms in text (UTF-8)
        self._stream: frozenset[bytes] = frozenset()  # ... and in a program's output
        self._pending: set[bytes] = set()
        self._pending_stream: set[bytes] = set()
        self._str_forms: frozenset[str] | None = None
        self._matcher: Any = None
        self._listeners: list[Callable[[str], None]] = []
        self._too_long: list[int] = []
        self._warned_short = False

    def add(self, value: str) -> bool:
        """Register ``value`` (and its encoded forms). Returns ``True`` when it is new.

        A value shorter than :data:`MIN_LENGTH` is not masked (one warning per process says so);
        one with a form longer than :data:`MAX_FORM` bytes is masked in its shorter forms only
        (a warning each time, and :meth:`check_limits` raises)."""
        if not isinstance(value, str) or not value:
            return False
        if len(value) < MIN_LENGTH:
            self._warn_short(len(value))
            return False
        with self._lock:
            if value in self._values:
                return False
            self._values.add(value)
        text, stream, whole = _registered(value)
        with self._lock:
            self._pending |= text
            self._pending_stream |= stream
            self._matcher = None
            self._str_forms = None
            if not whole:
                self._too_long.append(len(value.encode("utf-8", "surrogatepass")))
            listeners = list(self._listeners)
        if not whole:
            log.warning(
                "leaseline: a secret value of %d bytes is too long to mask in every encoded form "
                "(the limit is %d bytes per form): only its shorter forms are masked "
                "(`leaseline run` refuses it unless --no-mask)",
                len(value.encode("utf-8", "surrogatepass")),
                MAX_FORM,
            )
        for listener in listeners:
            listener(value)
        return True

    def _warn_short(self, length: int) -> None:
        with self._lock:
            if self._warned_short:
                return
            self._warned_short = True
        log.warning(
            "leaseline: a secret value of %d character(s) is too short to mask (values under %d "
            "characters are never masked: masking them would shred every line); it can appear "
            "in logs and output as it is. This is said once per process.",
            length,
            MIN_LENGTH,
        )

    def check_limits(self) -> None:
        """Raise :class:`TooLongToMask` if a value registered is not masked in every form."""
        with self._lock:
            sizes = list(self._too_long)
        if sizes:
            raise TooLongToMask(
                f"{len(sizes)} secret value(s) too long to mask (the longest is {max(sizes)} "
                f"bytes; each encoded form must fit in {MAX_FORM} bytes): nothing was started. "
                "Pass such a value as a --file the command reads without printing it, with "
                "--no-mask, or store a smaller value"
            )

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

    def _merge(self) -> None:  # with the lock held
        if self._pending:
            self._text = self._text | self._pending
            self._pending = set()
        if self._pending_stream:
            self._stream = self._stream | self._pending_stream
            self._pending_stream = set()

    @property
    def forms(self) -> frozenset[str]:
        """Every registered string in every encoded form, as text."""
        with self._lock:
            self._merge()
            if self._str_forms is None:
                self._str_forms = frozenset(f.decode("utf-8", "surrogatepass") for f in self._text)
            return self._str_forms

    @property
    def stream_forms(self) -> frozenset[bytes]:
        """Every form a program's output may hold a registered value in (for stream maskers);
        the same object until a value is added."""
        with self._lock:
            self._merge()
            return self._stream

    def __len__(self) -> int:
        return len(self._values)

    def __bool__(self) -> bool:
        return True

    @property
    def active(self) -> bool:
        """True once any value is registered (cheap check for hot paths)."""
        return bool(self._values)

    def _build(self) -> Any:
        from ._stream import Matcher

        with self._lock:
            matcher = self._matcher
            if matcher is None:
                self._merge()
                matcher = self._matcher = Matcher(sorted(self._text), hyperscan=False)
            return matcher

    def mask(self, text: str) -> str:
        if not text or not self._values:
            return text
        from ._stream import mask_block

        matcher = self._matcher or self._build()
        out = mask_block(matcher, text.encode("utf-8", "surrogatepass"))
        return text if out is None else out.decode("utf-8", "surrogatepass")

    def contains_secret(self, text: str) -> bool:
        if not text or not self._values:
            return False
        from ._stream import mask_block

        matcher = self._matcher or self._build()
        return mask_block(matcher, text.encode("utf-8", "surrogatepass")) is not None

    def clear(self) -> None:
        """Forget every value (tests)."""
        with self._lock:
            self._values.clear()
            self._text = self._stream = frozenset()
            self._pending = set()
            self._pending_stream = set()
            self._str_forms = None
            self._matcher = None
            self._too_long = []


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


def scrub_exception(exc: BaseException | None, m: Masker | None = None) -> None:
    """:func:`scrub_traceback` for ``exc`` and the exceptions chained to it.

    leaseline's entry points call it on every exception that leaves them, so a caller that
    hands the exception to an error reporter without logging it (``sentry_sdk.capture_exception``)
    shows no value in locals either."""
    _scrub_exception(exc, m or _masker)


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


class MaskedError(RuntimeError):
    """Stands in for an exception whose text held a secret value that could not be masked in
    place; ``str()`` is the original type and text, masked."""


def _masked_keeping_type(value: Any, m: Masker) -> Any:
    """Like :func:`_masked`, but a value keeps its type (bytes stay bytes, other objects stay
    as they are): an exception's arguments and attributes are pickled with their types."""
    if isinstance(value, str):
        return m.mask(value)
    if isinstance(value, bytes):
        return m.mask(value.decode("utf-8", "replace")).encode()
    if isinstance(value, tuple | list):
        return type(value)(_masked_keeping_type(item, m) for item in value)
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
            link.args = _masked_keeping_type(link.args, m)
            for name, value in list(vars(link).items()):
                masked = _masked_keeping_type(value, m)
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


def mask_std_streams(m: Masker | None = None) -> None:
    """Mask ``sys.stdout`` and ``sys.stderr`` at the source (idempotent): every value ``m`` (by
    default the process masker) holds shows as ``***``, also one split across two writes. They
    stay wrapped for the rest of the process, so a traceback printed at the end is masked too;
    bytes written to ``.buffer`` or the file descriptor are not (``leaseline run`` masks those).
    """
    from ._stream import mask_std_streams as wrap  # the stream masker imports this module

    wrap(m)
