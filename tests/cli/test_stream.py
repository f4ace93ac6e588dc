"""The streaming masker, in-process: every encoded form, and values split across reads."""

from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st
from leaseline._stream import StreamMasker
from leaseline.masking import encoded_forms


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
