"""The streaming masker, in-process: every encoded form, values split across reads, escape
sequences inside values, and memory that stays linear in the forms.

Every test runs once per matching engine: Hyperscan (the ``fast`` extra; forced for every chunk,
not only for output in bulk), ahocorasick-rs (Hyperscan not importable), and the ``re``
fallback (neither importable).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
import sys
import tracemalloc
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from leaseline.masking import _stream, encoded_forms, stream_forms
from leaseline.masking._stream import StreamMasker

from tests.canary import encodings
from tests.conftest import require

ENGINES = ["hyperscan", "ahocorasick-rs", "re"]


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Make exactly one engine available to the masker (the others fail to import)."""
    name: str = request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_stream, "_shared", {})  # no matcher built under another test's engine
        if name == "hyperscan":
            try:
                import hyperscan  # noqa: F401
            except ImportError as exc:
                require("hyperscan (extra `fast`)", exc)
            mp.setattr(_stream, "BULK_SCAN", 0)
        else:
            mp.setitem(sys.modules, "hyperscan", None)
        if name == "re":
            mp.setitem(sys.modules, "ahocorasick_rs", None)
        yield name


def engine_of(masker: StreamMasker) -> str:
    return masker._matcher.engine


def masker_for(*values: str) -> StreamMasker:
    forms = frozenset().union(*(stream_forms(v) for v in values))
    return StreamMasker(lambda: forms)


def run(masker: StreamMasker, chunks: list[bytes]) -> bytes:
    return b"".join(masker.feed(c) for c in chunks) + masker.flush()


def test_each_encoding_is_masked() -> None:
    value = "v-" + secrets.token_hex(12) + "/+="
    raw = value.encode()
    for form in (
        raw,
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        quote(value, safe="").encode(),
        json.dumps(value).encode()[1:-1],
        raw.hex().encode(),
        raw.hex().upper().encode(),
    ):
        out = run(masker_for(value), [b"before " + form + b" after\n"])
        assert out == b"before *** after\n", form


def test_split_at_every_position() -> None:
    value = "split-" + secrets.token_hex(10)
    text = f"x={value};\n".encode()
    for cut in range(len(text) + 1):
        out = run(masker_for(value), [text[:cut], text[cut:]])
        assert out == b"x=***;\n", cut


def test_the_engine_asked_for_is_the_one_used(engine: str) -> None:
    m = masker_for("eng-" + secrets.token_hex(8))
    assert m.feed(b"nothing here\n") == b"nothing here\n"
    assert engine_of(m) == engine


def test_overlapping_and_nested_values_are_one_span() -> None:
    a = "ovl-" + secrets.token_hex(8)
    b = a[-6:] + secrets.token_hex(8)  # starts inside a
    inner = a[4:14]  # a value inside another
    m = masker_for(a, b, inner)
    assert run(m, [f"[{a}{b[6:]}]\n[{a}]\n".encode()]) == b"[***]\n[***]\n"


def test_bulk_chunks_with_values_at_the_edges(engine: str) -> None:
    """Output in bulk (1 MiB reads): values at the start, the end, and across every boundary."""
    values = [f"bulk-{secrets.token_hex(10)}" for _ in range(100)]
    m = masker_for(*values)
    filler = secrets.token_hex(1 << 19).encode()  # 1 MiB of noise
    size = len(filler)
    text = bytearray(filler * 3)
    spots = [0, size - 10, size * 2 - 1, len(text) - len(values[3])]
    for i, at in enumerate(spots):
        v = values[i].encode()
        text[at : at + len(v)] = v
    chunks = [bytes(text[i : i + size]) for i in range(0, len(text), size)]
    out = run(m, chunks)
    assert not any(v.encode() in out for v in values)
    assert out.count(b"***") == len(spots)
    assert len(out) == len(text) - sum(len(values[i]) - 3 for i in range(len(spots)))
    if engine == "ahocorasick-rs":
        assert engine_of(m) == "ahocorasick-rs"
    elif engine == "hyperscan":
        assert engine_of(m) == "hyperscan"


def _alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


@pytest.mark.parametrize("common_prefix", [True, False])
def test_forms_found_through_keys_that_start_inside_them(engine: str, common_prefix: bool) -> None:
    """Aho-Corasick searches for a part of each form that starts with one of at most 3 bytes
    (its ``memchr`` prefilter; a few automata when one does not cover every form) and checks
    the bytes before it: every form is still masked whole, after a false start, next to a
    look-alike, and split at any read."""
    if common_prefix:
        values = [f"key-{secrets.token_hex(12)}" for _ in range(20)]
    else:  # as real credentials: nothing in common; and tokens of another alphabet
        values = [secrets.token_hex(15) for _ in range(40)] + ["s." + _alnum(24), _alnum(37)]
    forms = sorted(frozenset().union(*(stream_forms(v) for v in values)))
    m = masker_for(*values)
    pieces = []
    for i, form in enumerate(forms):
        decoy = form[: 1 + i % 20] + secrets.token_hex(2).encode()  # starts like the form
        decoy += b"#" + b"#" * (i % 3) + form[1 + i % 3 :]  # ends like it
        pieces.append(b"<" + decoy + b"|" + form[: i % 9] + form + b">")
    text = b"\n".join(pieces)
    want = b"\n".join(p[: p.index(b"|") + 1 + i % 9] + b"***>" for i, p in enumerate(pieces))
    assert run(m, [text]) == want
    assert run(m, [text[i : i + 7] for i in range(0, len(text), 7)]) == want
    if engine == "ahocorasick-rs":
        anchors = m._matcher._anchors
        groups = _stream._key_groups(anchors)
        assert len({a[0] for a in anchors}) > _stream.START_BYTES
        assert sorted(i for group in groups for i, _ in group) == list(range(len(anchors)))
        # with nothing in common, more than MAX_AUTOMATA automata may be needed: then one
        if common_prefix or len(groups) > 1 or any(k for _, k in groups[0]):
            assert any(k for group in groups for _, k in group)
            for group in groups:
                assert len({anchors[i][k] for i, k in group}) <= _stream.START_BYTES


def test_ordinary_output_is_not_held_back() -> None:
    m = masker_for("zz-" + secrets.token_hex(8))
    assert m.feed(b"epoch 1 loss 0.5\n") == b"epoch 1 loss 0.5\n"
    assert m.pending == 0


def test_unfinished_secret_at_end_of_stream_is_masked() -> None:
    value = "tail-" + secrets.token_hex(10)
    out = run(masker_for(value), [b"key: " + value[:12].encode()])
    assert out == b"key: ***"


def test_values_registered_mid_stream() -> None:
    forms: set[str] = set()
    m = StreamMasker(lambda: frozenset(forms))
    value = "late-" + secrets.token_hex(8)
    assert m.feed(b"a\n") == b"a\n"
    forms |= encoded_forms(value)
    assert run(m, [value.encode() + b"\n"]) == b"***\n"


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.binary(max_size=40),
    suffix=st.binary(max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=4),
)
def test_no_value_survives_any_chunking(prefix: bytes, suffix: bytes, cuts: list[int]) -> None:
    value = "hyp-" + secrets.token_hex(8)
    text = prefix + value.encode() + suffix
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    out = run(masker_for(value), chunks)
    assert value.encode() not in out
    assert b"***" in out


def _b64_inside(prefix: bytes, value: bytes, suffix: bytes, *, urlsafe: bool = False) -> bytes:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(prefix + value + suffix)


@pytest.mark.parametrize("lead", [0, 1, 2])
def test_base64_at_every_alignment(lead: int) -> None:
    """``Basic base64(user:password)``: the password starts 0, 1 or 2 bytes into a base64 group;
    none of the runs of characters made of its bits alone survives (the canary plugin's forms)."""
    value = "pw-" + secrets.token_hex(12)
    for urlsafe in (False, True):
        header = b"Authorization: Basic " + _b64_inside(
            b"u:"[:lead], value.encode(), b"@host", urlsafe=urlsafe
        )
        out = run(masker_for(value), [header + b"\n"])
        assert out.startswith(b"Authorization: Basic ") and b"***" in out, (lead, urlsafe)
        assert not [name for form, name in encodings(value) if form in out], (lead, urlsafe)


def lower_escapes(text: str) -> str:
    """``%2F`` as ``%2f`` (as some clients write it), the rest as it is."""
    return re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def test_utf16_lower_case_percent_double_json_and_crlf() -> None:
    value = "Zq/" + secrets.token_hex(10) + ' "x"+y'
    pem = "\n".join(["-----BEGIN TEST-----", secrets.token_hex(30), "-----END TEST-----"])
    once = json.dumps({"v": value})
    for form in (
        value.encode("utf-16-le"),
        lower_escapes(quote(value, safe="")).encode(),
        lower_escapes(quote_plus(value)).encode(),
        json.dumps({"body": once}).encode(),
    ):
        out = run(masker_for(value), [b"<" + form + b">\n"])
        assert value.encode() not in out and b"***" in out, form[:12]
        assert form not in out
    for form in (pem.replace("\n", "\r\n").encode(), pem.encode()):
        out = run(masker_for(pem), [b"key:\r\n" + form + b"\r\n"])
        assert out == b"key:\r\n***\r\n"


def test_escape_sequences_inside_a_value_are_seen_through() -> None:
    """Rich's highlighter colours the digits of ``sk-proj-...``: the value is masked, the colour
    codes around and inside it are kept (after ``***``), in every chunking."""
    value = "sk-proj-" + secrets.token_hex(16)
    coloured = (
        f"key \x1b[33m{value[:8]}\x1b[0m\x1b[1;93m{value[8:20]}\x1b[0m"
        f"\x1b]8;;http://x\x1b\\{value[20:]}\x1b]8;;\x1b\\ end\n"
    ).encode()
    expected = b"key \x1b[33m***\x1b[0m\x1b[1;93m\x1b[0m\x1b]8;;http://x\x1b\\\x1b]8;;\x1b\\ end\n"
    for cut in range(len(coloured) + 1):
        out = run(masker_for(value), [coloured[:cut], coloured[cut:]])
        assert out == expected, cut


def test_a_value_holding_an_escape_byte_is_masked() -> None:
    value = "esc\x1b[7m" + secrets.token_hex(8)
    assert run(masker_for(value), [f"a {value} b\n".encode()]) == b"a *** b\n"


def test_long_value_split_anywhere_and_near_misses() -> None:
    """A form longer than the automaton's anchor is checked whole: split at any point it is
    masked; the same text with one byte changed passes exactly as it is."""
    value = "long-" + secrets.token_hex(100)
    text = f"v={value};\n".encode()
    near = text.replace(value[-3:].encode(), b"???")
    for cut in range(0, len(text) + 1, 7):
        assert run(masker_for(value), [text[:cut], text[cut:]]) == b"v=***;\n", cut
        assert run(masker_for(value), [near[:cut], near[cut:]]) == near, cut


@pytest.mark.parametrize("size", [4096, 20_000])
def test_memory_is_linear_in_the_forms(size: int) -> None:
    """A 4 KB and a 20 KB value, fed in pty-sized reads: masked exactly, and the masker never
    holds more than a few times its forms (every prefix of every form used to be kept: ~130 MB
    for 4 KB, gigabytes for 20 KB)."""
    value = secrets.token_urlsafe(size)[:size]
    forms = frozenset(stream_forms(value))
    total = sum(len(f) for f in forms)
    text = b"before " + value.encode() + b" after\n"
    tracemalloc.start()
    try:
        m = StreamMasker(lambda: forms)
        out = b"".join(m.feed(text[i : i + 4095]) for i in range(0, len(text), 4095)) + m.flush()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out == b"before *** after\n"
    assert peak < 4 * total + (1 << 20), (peak, total)
