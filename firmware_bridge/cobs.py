"""COBS framing for byte streams (serial, TCP): each frame is COBS-encoded and ends with 0x00.

Consistent Overhead Byte Stuffing (Cheshire & Baker, IEEE/ACM ToN 7(2), 1999) removes every zero
byte from a message at a cost of at most one byte in 254, so 0x00 can delimit frames: after line
noise or a lost byte the receiver resynchronises at the next delimiter and loses one frame at most.

:class:`CobsStream` is the receiving side: ``feed(bytes)`` returns the complete frames (decoded) and
counts the malformed ones and the oversized ones it dropped. State is the partial frame only.
"""

from __future__ import annotations

import numpy as np
from numba import njit


class CobsError(ValueError):
    """A COBS block that does not decode (a zero inside, or a code past the end)."""


@njit(nogil=True, cache=True)
def _encode(src, dst):
    """COBS-encode ``src`` into ``dst`` (len(src) + len(src)//254 + 1 bytes); returns length."""
    code_pos = 0
    code = 1
    o = 1
    for i in range(src.shape[0]):
        b = src[i]
        if b != 0:
            dst[o] = b
            o += 1
            code += 1
        if b == 0 or code == 0xFF:
            dst[code_pos] = code
            code_pos = o
            o += 1
            code = 1
    dst[code_pos] = code
    return o


@njit(nogil=True, cache=True)
def _decode(src, dst):
    """COBS-decode ``src`` (no delimiter) into ``dst``; returns length, or -1 if malformed."""
    i = 0
    o = 0
    n = src.shape[0]
    while i < n:
        code = src[i]
        if code == 0 or i + code > n:
            return -1
        i += 1
        for _ in range(code - 1):
            b = src[i]
            if b == 0:
                return -1
            dst[o] = b
            o += 1
            i += 1
        if code != 0xFF and i < n:
            dst[o] = 0
            o += 1
    return o


def encode(data: bytes) -> bytes:
    """COBS-encode ``data`` and append the 0x00 delimiter."""
    src = np.frombuffer(data, dtype=np.uint8)
    dst = np.empty(len(src) + len(src) // 254 + 2, dtype=np.uint8)
    n = _encode(src, dst)
    dst[n] = 0
    return dst[: n + 1].tobytes()


def decode(block: bytes) -> bytes:
    """Decode one COBS block (without its delimiter); raises :class:`CobsError` if malformed."""
    src = np.frombuffer(block, dtype=np.uint8)
    dst = np.empty(max(len(src), 1), dtype=np.uint8)
    n = _decode(src, dst)
    if n < 0:
        raise CobsError("malformed COBS block")
    return dst[:n].tobytes()


class CobsStream:
    """Split a byte stream at 0x00 delimiters and decode each block.

    Blocks longer than ``max_block`` are dropped without buffering them whole (a stream of garbage
    with no zero byte cannot grow memory); ``n_malformed`` and ``n_oversized`` count rejections.
    """

    def __init__(self, max_block: int = 65_536):
        self.max_block = int(max_block)
        self._buf = bytearray()
        self._skipping = False
        self.n_malformed = 0
        self.n_oversized = 0
        self.n_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the frames they completed, in order."""
        self.n_bytes += len(data)
        out: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._skipping:
                self._buf += piece
                if len(self._buf) > self.max_block:
                    self._buf.clear()
                    self._skipping = True
                    self.n_oversized += 1
            if end < 0:
                return out
            if not self._skipping and self._buf:
                try:
                    out.append(decode(bytes(self._buf)))
                except CobsError:
                    self.n_malformed += 1
            self._buf.clear()
            self._skipping = False
            start = end + 1
