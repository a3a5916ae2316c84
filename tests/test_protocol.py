"""Vigil frame v1 codec, COBS framing and CRC-32C: round trips, every rejection path, fuzzing.

The decoder's contract is that it raises :class:`FrameError` for every malformed input and nothing
else, and that a frame with any 1..5 flipped bits (frames under 655 bytes; CRC-32C's Hamming distance
is 6 there) never decodes. Hypothesis checks both on random inputs.
"""

from __future__ import annotations

import struct

import crc32c as crc32c_pkg
import numpy as np
import pytest
from cobs import cobs as cobs_pkg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.firmware_bridge import cobs
from vigil.firmware_bridge.crc import TABLES, crc32c, crc32c_update
from vigil.firmware_bridge.protocol import (
    FIXED_HEADER,
    MAX_CHANNELS,
    MAX_SAMPLES,
    PER_CHANNEL,
    ChannelKind,
    Frame,
    FrameError,
    SampleFormat,
    decode,
    encode,
    encoded_size,
    make_frame,
)

USABLE_CHANNELS = MAX_CHANNELS
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- helpers ------------------------------------------------------------------------------------


def _raw(rng: np.random.Generator, fmt: SampleFormat, ns: int, nch: int) -> np.ndarray:
    if fmt == SampleFormat.INT16:
        return rng.integers(-(1 << 15), 1 << 15, (ns, nch)).astype(np.int16)
    if fmt == SampleFormat.INT24:
        return rng.integers(-(1 << 23), 1 << 23, (ns, nch)).astype(np.int32)
    return (rng.standard_normal((ns, nch)) * 10.0 ** rng.integers(-6, 7)).astype(np.float32)


def _frame(
    fmt: SampleFormat = SampleFormat.INT24, nch: int = 8, ns: int = 32, seed: int = 0, **kw: object
) -> Frame:
    rng = np.random.default_rng(seed)
    args: dict = dict(
        device_id=0xA1B2C3D4,
        sequence=7,
        timestamp_us=1_700_000_000_000_000,
        sample_rate=500.0,
        raw=_raw(rng, fmt, ns, nch),
        kinds=tuple(ChannelKind(int(k)) for k in rng.integers(0, len(ChannelKind), nch)),
        sample_format=fmt,
        scale=rng.uniform(-1, 1, nch).astype(np.float32),
        offset=rng.uniform(-100, 100, nch).astype(np.float32),
        stream_id=3,
    )
    args.update(kw)
    return make_frame(**args)


@st.composite
def frames(draw: st.DrawFn, max_channels: int = USABLE_CHANNELS, max_samples: int = 48) -> Frame:
    """Valid frames of every format, header integers anywhere in their ranges."""
    fmt = draw(st.sampled_from(list(SampleFormat)))
    return _frame(
        fmt,
        nch=draw(st.integers(1, max_channels)),
        ns=draw(st.integers(1, max_samples)),
        seed=draw(st.integers(0, 2**32 - 1)),
        device_id=draw(st.integers(0, 2**32 - 1)),
        stream_id=draw(st.integers(0, 255)),
        sequence=draw(st.integers(0, 2**32 - 1)),
        timestamp_us=draw(st.integers(0, 2**64 - 1)),
        sample_rate=draw(st.floats(1e-3, 1e6)),
    )


def _recrc(data: bytes | bytearray) -> bytes:
    """``data`` with its last four bytes replaced by the CRC-32C of the rest."""
    body = bytes(data[:-4])
    return body + crc32c(body).to_bytes(4, "little")


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    """Overwrite bytes at ``offset`` and fix the CRC, so a field check (not the CRC) must catch it."""
    b = bytearray(data)
    b[offset : offset + len(new)] = new
    return _recrc(b)


def _decode_or_frame_error(data: bytes | bytearray) -> Frame | None:
    """Decode; None on FrameError. Anything else propagates and fails the test."""
    try:
        return decode(data)
    except FrameError:
        return None


def _assert_rejected(data: bytes | bytearray, match: str | None = None) -> None:
    with pytest.raises(FrameError, match=match) as info:
        decode(data)
    assert type(info.value) is FrameError


# ---- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(SampleFormat), ids=lambda f: f.name)
@pytest.mark.parametrize(("nch", "ns"), [(1, 1), (8, 32), (3, 100), (USABLE_CHANNELS, 7), (1, MAX_SAMPLES)])
def test_round_trip_every_format(fmt: SampleFormat, nch: int, ns: int) -> None:
    f = _frame(fmt, nch, ns, seed=nch * ns)
    data = encode(f)
    assert len(data) == encoded_size(nch, ns, fmt)
    g = decode(data)
    assert g == f
    assert g.raw.dtype == (np.int16, np.int32, np.float32)[fmt] and g.raw.shape == (ns, nch)
    assert encode(g) == data
    assert decode(bytearray(data)) == f and decode(memoryview(data)) == f
    np.testing.assert_allclose(g.physical(), f.raw * f.scale.astype(float) + f.offset.astype(float))


def test_round_trip_int24_extremes_and_header_limits() -> None:
    raw = np.array([[-(1 << 23)], [(1 << 23) - 1], [-1], [0], [1]], dtype=np.int32)
    f = make_frame(2**32 - 1, 2**32 - 1, 2**64 - 1, 1e6, raw, sample_format=SampleFormat.INT24, stream_id=255)
    g = decode(encode(f))
    assert g == f and g.raw[:, 0].tolist() == [-(1 << 23), (1 << 23) - 1, -1, 0, 1]
    assert (g.device_id, g.sequence, g.timestamp_us, g.stream_id) == (2**32 - 1, 2**32 - 1, 2**64 - 1, 255)


def test_float32_payload_bits_survive() -> None:
    """NaN payloads, infinities and -0.0 in float32 samples are carried, not checked."""
    bits = np.array([0x7FC00001, 0xFF800000, 0x80000000, 0x00000001, 0x7F7FFFFF], dtype=np.uint32)
    f = make_frame(1, 0, 0, 100.0, bits.view(np.float32)[:, None])
    g = decode(encode(f))
    assert g.raw.view(np.uint32)[:, 0].tolist() == bits.tolist()


@FAST
@given(frames())
def test_round_trip_hypothesis(f: Frame) -> None:
    data = encode(f)
    g = decode(data)
    assert g == f
    assert encode(g) == data


@pytest.mark.parametrize("nch", [26, 64])
def test_wide_devices_round_trip(nch: int) -> None:
    """The u16 header length carries up to MAX_CHANNELS channels (a 64-channel EEG cap)."""
    assert decode(encode(_frame(SampleFormat.INT16, nch=nch, ns=2))).n_channels == nch


def test_encoded_rate_always_decodes() -> None:
    """A rate that is positive as float64 but 0 as float32 is refused when the frame is built."""
    try:
        data = encode(_frame(sample_rate=1e-46))
    except FrameError:
        return
    decode(data)


# ---- rejection paths ----------------------------------------------------------------------------

GOOD = encode(_frame(SampleFormat.INT24, nch=4, ns=10))
HLEN = FIXED_HEADER + PER_CHANNEL * 4


def test_good_frame_decodes() -> None:
    assert decode(GOOD).n_channels == 4


@pytest.mark.parametrize(
    ("offset", "new", "match"),
    [
        (0, b"XG", "magic"),
        (0, b"GV", "magic"),
        (2, b"\x00", "version"),
        (2, b"\x02", "version"),
        (4, struct.pack("<H", HLEN + 1), "header length"),
        (4, struct.pack("<H", HLEN - PER_CHANNEL), "header length"),
        (12, b"\x00", "header length"),  # 0 channels
        (12, b"\x41", "header length"),  # 65 channels
        (12, b"\x05", "header length"),  # channel count disagrees with the header length
        (11, b"\x03", "sample format"),
        (11, b"\xff", "sample format"),
        (14, struct.pack("<H", 0), "sample count"),
        (14, struct.pack("<H", MAX_SAMPLES + 1), "sample count"),
        (14, struct.pack("<H", 11), "length"),  # one sample more than the payload holds
        (11, b"\x00", "length"),  # int16 with an int24-sized payload
        (28, struct.pack("<f", float("nan")), "sample rate"),
        (28, struct.pack("<f", float("inf")), "sample rate"),
        (28, struct.pack("<f", 0.0), "sample rate"),
        (28, struct.pack("<f", -500.0), "sample rate"),
        (28, struct.pack("<f", 1.0000001e6), "sample rate"),
        (FIXED_HEADER, b"\x09", "kind"),
        (FIXED_HEADER + 2 * PER_CHANNEL, b"\xff", "kind"),
        (FIXED_HEADER + 1, struct.pack("<f", float("inf")), "non-finite"),
        (FIXED_HEADER + 5, struct.pack("<f", float("nan")), "non-finite"),
        (FIXED_HEADER + 3 * PER_CHANNEL + 5, struct.pack("<f", float("-inf")), "non-finite"),
    ],
)
def test_field_rejections(offset: int, new: bytes, match: str) -> None:
    _assert_rejected(_patch(GOOD, offset, new), match)


def test_crc_mismatch() -> None:
    for i in range(len(GOOD)):
        b = bytearray(GOOD)
        b[i] ^= 0x01
        with pytest.raises(FrameError) as info:
            decode(b)
        assert type(info.value) is FrameError
    b = bytearray(GOOD)
    b[HLEN + 5] ^= 0x80  # payload: only the CRC can catch it
    _assert_rejected(b, "CRC")


@pytest.mark.parametrize("n", [0, 1, FIXED_HEADER, FIXED_HEADER + PER_CHANNEL + 3, len(GOOD) - 1])
def test_truncated(n: int) -> None:
    _assert_rejected(GOOD[:n])
    _assert_rejected(_recrc(GOOD[: max(n, 4)]) if n >= 4 else GOOD[:n])


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 3, b"junk" * 100])
def test_extended(extra: bytes) -> None:
    _assert_rejected(GOOD + extra, "length")
    _assert_rejected(_recrc(GOOD[:-4] + extra + b"\0\0\0\0"), "length")


@pytest.mark.parametrize("bad", [None, 123, "VG", 1.5, [0x56, 0x47], np.zeros(8, np.int64)])
def test_not_bytes(bad: object) -> None:
    _assert_rejected(bad)  # type: ignore[arg-type]


def test_non_contiguous_buffer() -> None:
    _assert_rejected(memoryview(GOOD * 2)[::2])


@pytest.mark.parametrize(
    "kw",
    [
        dict(raw=np.zeros((0, 2), np.int16)),
        dict(raw=np.zeros((MAX_SAMPLES + 1, 1), np.int16)),
        dict(raw=np.zeros((2, 65), np.int16)),
        dict(raw=np.full((2, 1), 1 << 23), sample_format=SampleFormat.INT24),
        dict(raw=np.full((2, 1), -(1 << 23) - 1), sample_format=SampleFormat.INT24),
        dict(sample_rate=float("nan")),
        dict(sample_rate=0.0),
        dict(sample_rate=2e6),
        dict(scale=float("inf")),
        dict(offset=float("nan")),
        dict(kinds=(ChannelKind.ECG,) * 3),
        dict(device_id=2**32),
        dict(sequence=-1),
        dict(stream_id=256),
        dict(timestamp_us=2**64),
    ],
    ids=lambda kw: ",".join(kw),
)
def test_make_frame_rejections(kw: dict) -> None:
    args: dict = dict(
        device_id=1, sequence=0, timestamp_us=0, sample_rate=100.0, raw=np.zeros((2, 1), np.int16)
    )
    args.update(kw)
    if "kinds" in kw:
        args["raw"] = np.zeros((2, 2), np.int16)
    with pytest.raises(FrameError) as info, np.errstate(all="ignore"):
        make_frame(**args)
    assert type(info.value) is FrameError


def test_unknown_kind_in_make_frame_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        make_frame(1, 0, 0, 100.0, np.zeros((2, 1), np.int16), kinds=(9,))


# ---- fuzzing ------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=1200) | st.binary(max_size=600).map(lambda b: b"VG\x01" + b))
def test_random_bytes_only_frame_error(data: bytes) -> None:
    _decode_or_frame_error(data)


@FAST
@given(frames(max_channels=8, max_samples=16), st.data())
def test_bit_flips_always_detected(f: Frame, data: st.DataObject) -> None:
    frame = encode(f)
    assert len(frame) - 4 < 655  # CRC-32C's Hamming distance is 6 up to 655 data bytes
    nbits = 8 * len(frame)
    flips = data.draw(st.sets(st.integers(0, nbits - 1), min_size=1, max_size=5))
    b = bytearray(frame)
    for bit in flips:
        b[bit // 8] ^= 1 << (bit % 8)
    assert _decode_or_frame_error(b) is None


@FAST
@given(frames(max_samples=200), st.data())
def test_bursts_and_triple_flips_detected_in_any_frame(f: Frame, data: st.DataObject) -> None:
    frame = bytearray(encode(f))
    nbits = 8 * len(frame)
    b = frame.copy()
    if data.draw(st.booleans()):  # a burst of up to 32 bits (first and last flipped)
        start = data.draw(st.integers(0, nbits - 1))
        length = data.draw(st.integers(1, min(32, nbits - start)))
        pattern = data.draw(st.integers(0, (1 << length) - 1)) | 1 | (1 << (length - 1))
        flips = {start + i for i in range(length) if pattern >> i & 1}
    else:  # up to three bits anywhere: Hamming distance >= 4 up to 2**31 bits
        flips = data.draw(st.sets(st.integers(0, nbits - 1), min_size=1, max_size=3))
    for bit in flips:
        b[bit // 8] ^= 1 << (bit % 8)
    assert _decode_or_frame_error(b) is None


@FAST
@given(frames(max_samples=16), st.data())
def test_truncations_and_extensions(f: Frame, data: st.DataObject) -> None:
    frame = encode(f)
    n = data.draw(st.integers(0, len(frame) - 1))
    assert _decode_or_frame_error(frame[:n]) is None
    assert _decode_or_frame_error(_recrc(frame[:n]) if n >= 4 else frame[:n]) is None
    extra = data.draw(st.binary(min_size=1, max_size=64))
    assert _decode_or_frame_error(frame + extra) is None
    assert _decode_or_frame_error(_recrc(frame[:-4] + extra + bytes(4))) is None


@FAST
@given(frames(max_samples=8), st.data())
def test_mutated_header_with_valid_crc(f: Frame, data: st.DataObject) -> None:
    """Any header or channel-table byte, CRC fixed: FrameError, or a frame that re-encodes the same."""
    frame = encode(f)
    hlen = int.from_bytes(frame[4:6], "little")
    b = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 3))):
        b[data.draw(st.integers(0, hlen - 1))] = data.draw(st.integers(0, 255))
    b = bytearray(_recrc(b))
    g = _decode_or_frame_error(b)
    if g is not None:
        again = encode(g)
        b[3] = b[13] = 0  # reserved flags and byte: accepted on decode, written as 0
        assert again[:-4] == bytes(b[:-4])


# ---- COBS ---------------------------------------------------------------------------------------

# Byte strings made of runs of nonzero bytes (often 254 long, COBS's block size) and zeros.
runs = st.lists(
    st.one_of(
        st.just(b"\x00"),
        st.integers(1, 600).map(lambda n: bytes((i % 255) + 1 for i in range(n))),
        st.sampled_from([253, 254, 255, 508]).map(lambda n: b"\x07" * n),
        st.binary(max_size=64),
    ),
    max_size=6,
).map(b"".join)


def _trailing_run(data: bytes) -> int:
    return len(data) - (data.rfind(b"\x00") + 1)


@settings(max_examples=300, deadline=None)
@given(runs)
def test_cobs_matches_cobs_package(data: bytes) -> None:
    ours = cobs.encode(data)
    theirs = cobs_pkg.encode(data)
    assert ours.endswith(b"\x00") and b"\x00" not in ours[:-1]
    assert len(ours) <= len(data) + len(data) // 254 + 2
    # Identical, except that the cobs package omits the final 0x01 code after a full 254-byte run.
    full_run_at_end = _trailing_run(data) > 0 and _trailing_run(data) % 254 == 0
    assert ours[:-1] == theirs + (b"\x01" if full_run_at_end else b"")
    assert cobs.decode(ours[:-1]) == data == cobs_pkg.decode(ours[:-1])
    assert cobs.decode(theirs) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_cobs_decode_rejects_only_with_cobs_error(block: bytes) -> None:
    try:
        out = cobs.decode(block)
    except cobs.CobsError:
        with pytest.raises(cobs_pkg.DecodeError):
            cobs_pkg.decode(block)
        return
    assert out == cobs_pkg.decode(block)


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i = [], 0
    for s in sizes:
        out.append(data[i : i + s])
        i += s
    return [*out, data[i:]]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.lists(st.binary(min_size=1, max_size=200), max_size=4), st.data())
def test_cobs_stream_resynchronises_after_garbage(
    garbage: bytes, msgs: list[bytes], data: st.DataObject
) -> None:
    wire = garbage + b"\x00" + b"".join(cobs.encode(m) for m in msgs)
    sizes = data.draw(st.lists(st.integers(0, 64), max_size=20))
    whole, chunked = cobs.CobsStream(), cobs.CobsStream()
    got_whole = whole.feed(wire)
    got_chunked = [m for c in _chunks(wire, sizes) for m in chunked.feed(c)]
    assert got_chunked == got_whole
    assert got_whole[len(got_whole) - len(msgs) :] == msgs
    assert (chunked.n_malformed, chunked.n_bytes) == (whole.n_malformed, len(wire))


def test_cobs_stream_counts_malformed_and_skips_empty_blocks() -> None:
    s = cobs.CobsStream()
    assert s.feed(b"\x00\x00\x05\x01\x00" + cobs.encode(b"ok")) == [b"ok"]
    assert (s.n_malformed, s.n_oversized) == (1, 0)


def test_cobs_stream_drops_oversized_blocks_in_bounded_memory() -> None:
    s = cobs.CobsStream(max_block=100)
    rng = np.random.default_rng(1)
    for _ in range(2000):  # 1 MB without a delimiter
        assert s.feed(rng.integers(1, 256, 500, dtype=np.uint8).tobytes()) == []
        assert len(s._buf) <= s.max_block
    assert s.n_oversized == 1
    msg = bytes(range(1, 99))  # COBS block of exactly 99 bytes: kept
    assert s.feed(b"\x00" + cobs.encode(msg)) == [msg]
    exact = b"\x01" * 99  # 100-byte block: the limit, kept
    assert len(cobs.encode(exact)) - 1 == 100
    assert s.feed(cobs.encode(exact)) == [exact]
    assert s.feed(cobs.encode(b"\x01" * 100) + cobs.encode(b"after")) == [b"after"]
    assert s.n_oversized == 2


# ---- CRC-32C ------------------------------------------------------------------------------------


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283 == crc32c_pkg.crc32c(b"123456789")
    assert crc32c(b"") == 0


@pytest.mark.parametrize("n", range(18))
def test_crc32c_every_tail_length(n: int) -> None:
    data = bytes(range(200, 200 + n))
    assert crc32c(data) == crc32c_pkg.crc32c(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.data())
def test_crc32c_matches_package_and_chains(data: bytes, d: st.DataObject) -> None:
    assert crc32c(data) == crc32c_pkg.crc32c(data)
    assert crc32c(bytearray(data)) == crc32c(memoryview(data)) == crc32c(np.frombuffer(data, np.uint8))
    cut = d.draw(st.integers(0, len(data)))
    buf = np.frombuffer(data, dtype=np.uint8)
    reg = crc32c_update(np.uint32(0xFFFFFFFF), buf, 0, cut, TABLES)
    reg = crc32c_update(reg, buf, cut, len(buf), TABLES)
    assert int(reg ^ np.uint32(0xFFFFFFFF)) == crc32c(data)
