"""The Vigil frame: one block of multichannel samples from one device stream, checked end to end.

Wire layout, version 1, little-endian (``firmware_bridge/c/vigil_frame.h`` is the C encoder)::

    offset  size  field
    0       2     magic "VG" (0x56 0x47)
    2       1     version (1)
    3       1     flags (0; reserved)
    4       2     header length H = 32 + 9 * channels (bytes before the payload, u16)
    6       4     device id (u32)
    10      1     stream id (u8)
    11      1     sample format: 0 int16, 1 int24, 2 float32
    12      1     channels C (1..64)
    13      1     reserved (0)
    14      2     samples per channel N (1..4096)
    16      4     sequence number (u32, +1 per frame of the stream, wraps)
    20      8     device timestamp of the first sample, microseconds (u64)
    28      4     sample rate, Hz (f32, 0 < fs <= 1e6)
    32      9*C   per channel: kind (u8), scale (f32), offset (f32); physical = raw * scale + offset
    H       ...   payload: N * C samples, sample-major (s0c0 s0c1 ... s1c0 ...), little-endian
    end-4   4     CRC-32C of every byte before it (see :mod:`vigil.firmware_bridge.crc`)

A frame is self-describing, so any frame can be decoded after any loss. Byte streams carry frames
COBS-encoded and 0x00-delimited (:mod:`~vigil.firmware_bridge.cobs`); UDP carries one frame per
datagram; BLE splits a frame across notifications (:mod:`~vigil.firmware_bridge.fragments`).

:func:`decode` raises :class:`FrameError` (a ``ValueError``) for every malformed input, and nothing
else: bad magic, unknown version, inconsistent lengths, out-of-range fields, CRC mismatch.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numba import njit

from .crc import TABLES, _crc32c, crc32c_update

MAGIC = b"VG"
VERSION = 1
FIXED_HEADER = 32
PER_CHANNEL = 9
MAX_CHANNELS = 64
MAX_SAMPLES = 4096
MAX_RATE_HZ = 1e6
_HEAD = struct.Struct("<2sBBHIBBBBHIQf")
_CHAN = struct.Struct("<Bff")
assert _HEAD.size == FIXED_HEADER and _CHAN.size == PER_CHANNEL


class FrameError(ValueError):
    """A byte sequence that is not a valid Vigil frame."""


class SampleFormat(IntEnum):
    INT16 = 0
    INT24 = 1
    FLOAT32 = 2

    @property
    def width(self) -> int:
        """Bytes per sample on the wire."""
        return (2, 3, 4)[self]


class ChannelKind(IntEnum):
    OTHER = 0
    ECG = 1
    EEG = 2
    EMG = 3
    IMU_ACC = 4
    IMU_GYRO = 5
    PPG = 6
    RESP = 7
    TEMP = 8


_MAX_KIND = max(ChannelKind).value


@dataclass(eq=False, slots=True)
class Frame:
    """Decoded frame. ``raw`` is [samples, channels] in wire units (int16, int32 for int24, or
    float32); :meth:`physical` applies the per-channel ``scale`` and ``offset``."""

    device_id: int
    stream_id: int
    sequence: int
    timestamp_us: int
    sample_rate: float
    sample_format: SampleFormat
    kinds: tuple[ChannelKind, ...]
    scale: np.ndarray
    offset: np.ndarray
    raw: np.ndarray
    version: int = VERSION

    @property
    def n_samples(self) -> int:
        return self.raw.shape[0]

    @property
    def n_channels(self) -> int:
        return self.raw.shape[1]

    @property
    def duration_us(self) -> float:
        """Time spanned by the block's samples, microseconds."""
        return self.n_samples * 1e6 / self.sample_rate

    def physical(self) -> np.ndarray:
        """Samples in physical units, float64 [samples, channels]."""
        return self.raw * self.scale.astype(np.float64) + self.offset.astype(np.float64)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        head = ("device_id", "stream_id", "sequence", "timestamp_us", "sample_format", "kinds", "version")
        return (
            all(getattr(self, k) == getattr(other, k) for k in head)
            and np.float32(self.sample_rate) == np.float32(other.sample_rate)
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.offset, other.offset)
            and self.raw.dtype == other.raw.dtype
            and np.array_equal(self.raw, other.raw)
        )

    __hash__ = None  # type: ignore[assignment]


def _as_float32(value: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def make_frame(
    device_id: int,
    sequence: int,
    timestamp_us: int,
    sample_rate: float,
    raw: np.ndarray,
    kinds: tuple[ChannelKind, ...] | None = None,
    sample_format: SampleFormat | None = None,
    scale: np.ndarray | float = 1.0,
    offset: np.ndarray | float = 0.0,
    stream_id: int = 0,
) -> Frame:
    """Build a :class:`Frame` with checked fields.

    The format defaults from ``raw``'s dtype: int16 -> INT16, other integers -> INT24, floats ->
    FLOAT32. Integer formats refuse non-integral samples rather than truncate them.
    """
    raw = np.asarray(raw)
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.dtype.kind not in "iuf" or raw.ndim != 2:
        raise FrameError(f"samples must be a real [samples, channels] array, got {raw.dtype} {raw.shape}")
    if sample_format is None:
        if raw.dtype == np.int16:
            sample_format = SampleFormat.INT16
        else:
            sample_format = SampleFormat.FLOAT32 if raw.dtype.kind == "f" else SampleFormat.INT24
    fmt = SampleFormat(sample_format)
    dtype = (np.int16, np.int32, np.float32)[fmt]
    if fmt != SampleFormat.FLOAT32 and raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
        raise FrameError("integer sample formats need integral samples; round or use FLOAT32")
    if fmt == SampleFormat.INT24 and raw.size and (raw.min() < -(1 << 23) or raw.max() >= 1 << 23):
        raise FrameError("int24 samples must lie in [-2**23, 2**23)")
    nch = raw.shape[1]
    kinds = tuple(ChannelKind(k) for k in (kinds or (ChannelKind.OTHER,) * nch))
    frame = Frame(
        device_id=int(device_id),
        stream_id=int(stream_id),
        sequence=int(sequence),
        timestamp_us=int(timestamp_us),
        sample_rate=_as_float32(sample_rate),  # as it travels
        sample_format=fmt,
        kinds=kinds,
        scale=np.broadcast_to(np.asarray(scale, dtype=np.float32), (nch,)).copy(),
        offset=np.broadcast_to(np.asarray(offset, dtype=np.float32), (nch,)).copy(),
        raw=np.ascontiguousarray(raw, dtype=dtype),
    )
    _check_fields(frame)
    return frame


def _check_fields(f: Frame) -> None:
    nch, ns = f.n_channels, f.n_samples
    if not 1 <= nch <= MAX_CHANNELS:
        raise FrameError(f"channels must be 1..{MAX_CHANNELS}, got {nch}")
    if not 1 <= ns <= MAX_SAMPLES:
        raise FrameError(f"samples per frame must be 1..{MAX_SAMPLES}, got {ns}")
    if len(f.kinds) != nch:
        raise FrameError(f"{len(f.kinds)} channel kinds for {nch} channels")
    if not 0 <= f.device_id < 1 << 32 or not 0 <= f.stream_id < 256 or not 0 <= f.sequence < 1 << 32:
        raise FrameError("device id, stream id or sequence out of range")
    if not 0 <= f.timestamp_us < 1 << 64:
        raise FrameError("timestamp out of range")
    if not (math.isfinite(f.sample_rate) and 0 < f.sample_rate <= MAX_RATE_HZ):
        raise FrameError(f"sample rate must be in (0, {MAX_RATE_HZ:g}] Hz, got {f.sample_rate!r}")
    if not (np.all(np.isfinite(f.scale)) and np.all(np.isfinite(f.offset))):
        raise FrameError("scale and offset must be finite")


def encoded_size(n_channels: int, n_samples: int, sample_format: SampleFormat) -> int:
    """Bytes of an encoded frame."""
    fmt = SampleFormat(sample_format)
    return FIXED_HEADER + PER_CHANNEL * n_channels + n_samples * n_channels * fmt.width + 4


def encode(frame: Frame) -> bytes:
    """The wire bytes of ``frame`` (header, channel table, payload, CRC-32C)."""
    _check_fields(frame)
    nch, ns, fmt = frame.n_channels, frame.n_samples, frame.sample_format
    head = _HEAD.pack(
        MAGIC,
        VERSION,
        0,
        FIXED_HEADER + PER_CHANNEL * nch,
        frame.device_id,
        frame.stream_id,
        fmt,
        nch,
        0,
        ns,
        frame.sequence,
        frame.timestamp_us,
        frame.sample_rate,
    )
    table = b"".join(
        _CHAN.pack(k, s, o)
        for k, s, o in zip(frame.kinds, frame.scale.tolist(), frame.offset.tolist(), strict=True)
    )
    if fmt == SampleFormat.INT24:
        v = frame.raw.astype("<i4").reshape(-1).view(np.uint8).reshape(-1, 4)[:, :3]
        payload = np.ascontiguousarray(v).tobytes()
    else:
        payload = frame.raw.astype(frame.raw.dtype.newbyteorder("<"), copy=False).tobytes()
    body = np.frombuffer(head + table + payload, dtype=np.uint8)
    crc = int(_crc32c(body, 0, len(body), TABLES))
    return body.tobytes() + crc.to_bytes(4, "little")


_KINDS = tuple(ChannelKind)
_FORMATS = tuple(SampleFormat)
_kinds_cache: dict[bytes, tuple[ChannelKind, ...]] = {}

# _body error codes
_OK, _BAD_CRC, _BAD_KIND, _BAD_SCALE = 0, 1, 2, 3


@njit(nogil=True, cache=True)
def _body(buf, nch, ns, fmt, tables, scale, offset, raw):
    """Check the CRC and the channel table, then unpack the payload of a frame whose header was
    checked. Fills ``scale``, ``offset`` (float32 [nch]) and ``raw`` ([ns * nch], the format's
    dtype); returns an error code."""
    n = buf.shape[0]
    crc = np.uint32(buf[n - 4]) | (np.uint32(buf[n - 3]) << 8) | (np.uint32(buf[n - 2]) << 16)
    crc |= np.uint32(buf[n - 1]) << 24
    if crc32c_update(np.uint32(0xFFFFFFFF), buf, 0, n - 4, tables) ^ np.uint32(0xFFFFFFFF) != crc:
        return _BAD_CRC
    tab = buf[FIXED_HEADER : FIXED_HEADER + PER_CHANNEL * nch]
    for c in range(nch):
        if tab[PER_CHANNEL * c] > _MAX_KIND:
            return _BAD_KIND
    s4 = np.empty(4, dtype=np.uint8)
    for c in range(nch):
        for j in range(4):
            s4[j] = tab[PER_CHANNEL * c + 1 + j]
        scale[c] = s4.view(np.float32)[0]
        for j in range(4):
            s4[j] = tab[PER_CHANNEL * c + 5 + j]
        offset[c] = s4.view(np.float32)[0]
        if not (np.isfinite(scale[c]) and np.isfinite(offset[c])):
            return _BAD_SCALE
    start = FIXED_HEADER + PER_CHANNEL * nch
    m = ns * nch
    if fmt == 1:
        for i in range(m):
            j = start + 3 * i
            v = np.int32(buf[j]) | (np.int32(buf[j + 1]) << 8) | (np.int32(buf[j + 2]) << 16)
            raw[i] = v - (np.int32(buf[j + 2] >> 7) << 24)
    else:
        w = 2 if fmt == 0 else 4
        raw.view(np.uint8)[:] = buf[start : start + m * w]
    return _OK


_BODY_ERRORS = {
    _BAD_CRC: "CRC mismatch",
    _BAD_KIND: "unknown channel kind",
    _BAD_SCALE: "non-finite scale or offset",
}
_DTYPES = (np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.float32))


def _kinds(data: bytes | bytearray | memoryview, hlen: int) -> tuple[ChannelKind, ...]:
    codes = bytes(data[FIXED_HEADER:hlen:PER_CHANNEL])
    kinds = _kinds_cache.get(codes)
    if kinds is None:
        if len(_kinds_cache) > 1024:
            _kinds_cache.clear()
        kinds = _kinds_cache[codes] = tuple(_KINDS[k] for k in codes)
    return kinds


def decode(data: bytes | bytearray | memoryview) -> Frame:
    """Decode and check one frame; raises :class:`FrameError` for anything malformed."""
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        raise FrameError(f"frame must be contiguous bytes-like, got {type(data).__name__}") from None
    n = len(buf)
    if n < FIXED_HEADER + PER_CHANNEL + 4:
        raise FrameError(f"truncated: {n} bytes is shorter than any frame")
    magic, version, _flags, hlen, dev, stream, fmt, nch, _reserved, ns, seq, ts, fs = _HEAD.unpack_from(buf)
    if magic != MAGIC:
        raise FrameError("bad magic")
    if version != VERSION:
        raise FrameError(f"unknown version {version}")
    if not 1 <= nch <= MAX_CHANNELS or hlen != FIXED_HEADER + PER_CHANNEL * nch:
        raise FrameError(f"bad header length {hlen} for {nch} channels")
    if fmt > 2:
        raise FrameError(f"unknown sample format {fmt}")
    if not 1 <= ns <= MAX_SAMPLES:
        raise FrameError(f"bad sample count {ns}")
    want = hlen + ns * nch * (2, 3, 4)[fmt] + 4
    if n != want:
        raise FrameError(f"length {n} bytes, header says {want}")
    if not (0 < fs <= MAX_RATE_HZ):  # False for NaN
        raise FrameError(f"bad sample rate {fs!r}")
    scale = np.empty(nch, dtype=np.float32)
    offset = np.empty(nch, dtype=np.float32)
    raw = np.empty(ns * nch, dtype=_DTYPES[fmt])
    err = _body(buf, nch, ns, fmt, TABLES, scale, offset, raw)
    if err:
        raise FrameError(_BODY_ERRORS[err])
    kinds = _kinds(data, hlen)
    return Frame(dev, stream, seq, ts, fs, _FORMATS[fmt], kinds, scale, offset, raw.reshape(ns, nch))
