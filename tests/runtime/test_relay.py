"""The output relay of ``leaseline run``, in-process over real pipes and threads."""

from __future__ import annotations

import os
import random
import secrets
import threading
from collections.abc import Iterator

import pytest
from leaseline.masking import encoded_forms
from leaseline.masking._stream import StreamMasker
from leaseline.runtime.relay import Relay, big_pipe


def _reader(fd: int, into: bytearray, stop_after: int | None = None) -> threading.Thread:
    def run() -> None:
        while data := os.read(fd, 1 << 16):
            into.extend(data)
            if stop_after is not None and len(into) >= stop_after:
                break
        os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _writes(text: bytes, seed: int) -> Iterator[bytes]:
    """``text`` in writes of uneven sizes: a few bytes to 300 KiB."""
    rnd, pos = random.Random(seed), 0
    while pos < len(text):
        size = rnd.choice([1, 7, 100, 4096, 65536, 300_000])
        yield text[pos : pos + size]
        pos += size


def _relay(forms: frozenset[str]) -> tuple[Relay, int, int]:
    """A relay from a fresh pipe (returns its write end) to another (returns its read end)."""
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    big_pipe(src_r)
    relay = Relay(src_r, dst_w, StreamMasker(lambda: forms))
    return relay, src_w, dst_r


@pytest.mark.parametrize("seed", [1, 2])
def test_bulk_output_in_uneven_writes_is_masked_exactly(seed: int) -> None:
    values = [f"relay-{secrets.token_hex(12)}" for _ in range(100)]
    forms = frozenset().union(*(encoded_forms(v) for v in values))
    rnd = random.Random(seed)
    lines, expected = [], []
    for i in range(40_000):  # ~5 MB of log lines, one in 400 carrying a value
        line = f"step {i} loss {rnd.random():.6f} " + "." * rnd.randrange(80)
        if i % 400 == 0:
            v = rnd.choice(values)
            lines.append(f"{line} token={v}\n")
            expected.append(f"{line} token=***\n")
        else:
            lines.append(line + "\n")
            expected.append(line + "\n")
    text = "".join(lines).encode()

    relay, src_w, dst_r = _relay(forms)
    dst_w = relay.dst
    got = bytearray()
    reader = _reader(dst_r, got)
    relay.start()
    for chunk in _writes(text, seed):
        os.write(src_w, chunk)
    os.close(src_w)
    relay.join(30)
    os.close(dst_w)
    reader.join(30)
    assert not relay.is_alive()
    assert bytes(got) == "".join(expected).encode()


def test_a_reader_that_goes_away_does_not_block_the_writer() -> None:
    value = f"gone-{secrets.token_hex(12)}"
    relay, src_w, dst_r = _relay(frozenset(encoded_forms(value)))
    got = bytearray()
    reader = _reader(dst_r, got, stop_after=1)  # reads once, then closes its end
    relay.start()
    payload = (f"{value} " + "x" * 1000 + "\n").encode() * 8000  # 8 MB: far more than pipes hold
    os.write(src_w, payload[:100])
    reader.join(10)
    for i in range(0, len(payload), 1 << 16):
        os.write(src_w, payload[i : i + (1 << 16)])  # would block forever if the relay stopped
    os.close(src_w)
    relay.join(30)
    os.close(relay.dst)
    assert not relay.is_alive()
    assert relay.broken
    assert value.encode() not in got


def test_a_value_registered_mid_stream_is_masked_from_then_on() -> None:
    """A rotation: a new (longer) value arrives after output in bulk has started."""
    forms: set[str] = set()
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    relay = Relay(src_r, dst_w, StreamMasker(lambda: frozenset(forms)))
    got = bytearray()
    reader = _reader(dst_r, got)
    relay.start()
    os.write(src_w, b"." * (1 << 20))
    late = f"rotated-{secrets.token_hex(30)}"
    forms.update(encoded_forms(late))
    os.write(src_w, f"\nnew={late}\n".encode())
    os.close(src_w)
    relay.join(30)
    os.close(dst_w)
    reader.join(30)
    assert late.encode() not in got
    assert got.endswith(b"\nnew=***\n")


def test_coloured_values_in_uneven_writes_are_masked() -> None:
    """Colour codes inside values, through the relay's own buffer (it tells the masker where
    escape bytes are): every value masked, every colour code kept."""
    values = [f"sk-proj-{secrets.token_hex(16)}" for _ in range(20)]
    forms = frozenset().union(*(encoded_forms(v) for v in values))
    lines, expected = [], []
    for i in range(20_000):
        v = values[i % 20]
        if i % 50 == 0:
            lines.append(f"\x1b[2m{i}\x1b[0m key \x1b[33m{v[:8]}\x1b[1;93m{v[8:]}\x1b[0m\n")
            expected.append(f"\x1b[2m{i}\x1b[0m key \x1b[33m***\x1b[1;93m\x1b[0m\n")
        else:
            lines.append(f"\x1b[2m{i}\x1b[0m step {i}\n")
            expected.append(lines[-1])
    text = "".join(lines).encode()
    relay, src_w, dst_r = _relay(forms)
    dst_w = relay.dst
    got = bytearray()
    reader = _reader(dst_r, got)
    relay.start()
    for chunk in _writes(text, 3):
        os.write(src_w, chunk)
    os.close(src_w)
    relay.join(30)
    os.close(dst_w)
    reader.join(30)
    assert bytes(got) == "".join(expected).encode()


def test_the_engines_are_built_before_the_first_byte() -> None:
    """The relay builds its masker's engines while the child starts (Hyperscan's compile of
    a hundred values' forms takes ~20 ms): none is left for the first read to build, and a
    child's stdout and stderr share them."""
    values = [f"early-{secrets.token_hex(12)}" for _ in range(100)]
    forms = frozenset().union(*(encoded_forms(v) for v in values))
    relay, src_w, dst_r = _relay(forms)
    other = StreamMasker(lambda: forms)  # the other stream of the same child
    relay.start()
    for _ in range(500):  # nothing written yet
        if relay.masker._matcher.engine:
            break
        threading.Event().wait(0.01)
    assert relay.masker._matcher.engine in ("hyperscan", "ahocorasick-rs")
    assert other._matcher is relay.masker._matcher
    out = bytearray()
    reader = _reader(dst_r, out)
    os.write(src_w, f"a {values[7]} b\n".encode())
    os.close(src_w)
    relay.join(10)
    os.close(relay.dst)
    reader.join(10)
    assert not relay.is_alive()
    assert bytes(out) == b"a *** b\n"
