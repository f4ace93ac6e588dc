"""The streaming masker, in-process: every encoded form, and values split across reads.

Every test runs once per matching engine: Hyperscan (the ``fast`` extra; forced for every chunk,
not only for output in bulk), ahocorasick-rs (Hyperscan not importable), and the ``re``
fallback (neither importable).
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from leaseline import _stream
from leaseline._stream import StreamMasker
from leaseline.masking import encoded_forms

from tests.conftest import require

ENGINES = ["hyperscan", "ahocorasick-rs", "re"]


@pytest.fixture(autouse=True, params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Make exactly one engine available to the masker (the others fail to import)."""
    name: str = request.param
    with pytest.MonkeyPatch.context() as mp:
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
    forms = frozenset().union(*(encoded_forms(v) for v in values))
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
