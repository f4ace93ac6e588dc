"""The process masker (log records, exception text): long values in linear memory, colour codes
inside values, the encoded forms, and values too short or too long to mask."""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import tracemalloc
from urllib.parse import quote

import pytest
from leaseline import masking
from leaseline.masking import Masker, MaskingFilter, TooLongToMask

from tests.canary import encodings


def _logged(m: Masker, message: str, *args: object) -> str:
    """What a handler with :class:`MaskingFilter` prints for one record."""
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, message, args, None)
    MaskingFilter(m).filter(record)
    return record.getMessage()


def test_first_log_call_after_a_long_value_stays_linear() -> None:
    """A 200 KB value: the first masked record costs memory in proportion to the value's forms
    (the whole-form regular expression used to take ~850 bytes a character: 8.5 GB for 10 MB)."""
    size = 200_000
    value = secrets.token_urlsafe(size)[:size]
    m = Masker()
    tracemalloc.start()
    try:
        m.add(value)
        out = _logged(m, "connecting with %s now", value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out == "connecting with *** now"
    assert peak < 60 * size, peak


def test_colour_codes_inside_a_value_are_seen_through() -> None:
    value = "sk-proj-" + secrets.token_hex(16)
    m = Masker()
    m.add(value)
    coloured = f"key \x1b[32m{value[:8]}\x1b[1;93m{value[8:]}\x1b[0m done"
    assert m.mask(coloured) == "key \x1b[32m***\x1b[1;93m\x1b[0m done"
    assert m.contains_secret(coloured)
    assert _logged(m, "%s", coloured) == "key \x1b[32m***\x1b[1;93m\x1b[0m done"


@pytest.mark.parametrize("user", ["u", "us", "usr"])
def test_encoded_forms_in_text(user: str) -> None:
    """``Basic base64(user:password)`` at each alignment, lower-case ``%xx``, JSON in JSON."""
    value = "pw/" + secrets.token_hex(10) + '"+'
    m = Masker()
    m.add(value)
    header = "Basic " + base64.b64encode(f"{user}:{value}".encode()).decode()
    low = re.sub("%[0-9A-F]{2}", lambda g: g.group().lower(), quote(value, safe=""))
    nested = json.dumps({"body": json.dumps({"password": value})})
    for text in (header, f"url ?p={low}&x=1", nested):
        out = m.mask(text)
        assert "***" in out
        assert not [name for form, name in encodings(value) if form.decode() in out]
    assert json.dumps(json.dumps(value)[1:-1])[1:-1] not in m.mask(nested)


def test_a_value_too_short_to_mask_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    m = Masker()
    with caplog.at_level(logging.WARNING, logger="leaseline.masking"):
        assert not m.add("abc")
        assert not m.add("xy")
    warned = [r for r in caplog.records if "too short to mask" in r.getMessage()]
    assert len(warned) == 1
    assert "abc" not in caplog.text and "xy" not in warned[0].getMessage()


def test_a_value_with_forms_over_the_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Forms over :data:`MAX_FORM` are not registered: a warning, the shorter forms still
    masked, and ``check_limits`` (what `leaseline run` calls before starting) refuses."""
    monkeypatch.setattr(masking, "MAX_FORM", 1000)
    value = "big-" + secrets.token_hex(300)  # 604 characters: its hex form is 1208
    m = Masker()
    with caplog.at_level(logging.WARNING, logger="leaseline.masking"):
        m.add(value)
    assert "too long to mask" in caplog.text
    assert m.mask(f"a {value} b") == "a *** b"
    assert value.encode().hex() not in {f for f in m.forms}
    with pytest.raises(TooLongToMask) as raised:
        m.check_limits()
    assert "--no-mask" in str(raised.value) and value[:12] not in str(raised.value)
    assert raised.value.exit_code == 2
    Masker().check_limits()  # nothing registered: nothing to refuse
