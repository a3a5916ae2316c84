"""Vigil frames over BLE notifications: split by ATT MTU, reassemble on the receiver.

One notification carries at most ``MTU - 3`` bytes (the ATT notification header takes 3). Each starts
with a 1-byte fragment header, the rest is a slice of one encoded frame (:mod:`.protocol`)::

    bit 7     1 on the first fragment of a frame, 0 on a continuation
    bits 0-6  rolling fragment counter: +1 (mod 128) per notification, across frames

The receiver needs no length field: once the first 16 bytes of a frame (through "samples per
channel") are in, :func:`~.protocol.encoded_size` of the header's channels, samples and format says
how many bytes complete it. :class:`Reassembler` drops a partial frame on a counter gap, a new start
before completion, a continuation without a start, a bad or oversized header, or bytes past the
computed length, counts the drop by reason, and never raises. The CRC is checked later, by
:func:`~.protocol.decode`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from .protocol import MAGIC, MAX_CHANNELS, MAX_SAMPLES, VERSION, SampleFormat, encoded_size

ATT_HEADER = 3
MIN_MTU = 23  # ATT_MTU default for LE
MAX_MTU = 517  # largest ATT_MTU a client can negotiate (512-byte attribute + 5)
FIRST = 0x80
COUNTER_MASK = 0x7F
HEADER_NEEDED = 16  # magic..samples-per-channel: enough for encoded_size()
DEFAULT_MAX_FRAME = 64 * 1024


def fragment_payload(mtu: int) -> int:
    """Frame bytes per notification at ATT MTU ``mtu`` (MTU - 3 - the 1-byte fragment header)."""
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise ValueError(f"ATT MTU must be in [{MIN_MTU}, {MAX_MTU}], got {mtu}")
    return mtu - ATT_HEADER - 1


def split(frame: bytes | bytearray | memoryview, mtu: int, counter: int = 0) -> list[bytes]:
    """Notifications carrying one encoded frame; the first fragment gets counter ``counter``."""
    data = bytes(frame)
    if not data:
        raise ValueError("cannot fragment an empty frame")
    step = fragment_payload(mtu)
    out = []
    for i, start in enumerate(range(0, len(data), step)):
        head = ((counter + i) & COUNTER_MASK) | (FIRST if i == 0 else 0)
        out.append(bytes((head,)) + data[start : start + step])
    return out


def expected_length(head: bytes | bytearray) -> int | None:
    """Encoded size of the frame whose first :data:`HEADER_NEEDED` bytes are ``head``; ``None`` when
    the magic, version, channel count, sample count or sample format is invalid."""
    if len(head) < HEADER_NEEDED or bytes(head[:2]) != MAGIC or head[2] != VERSION:
        return None
    fmt, nch = head[11], head[12]
    ns = int.from_bytes(head[14:16], "little")
    if fmt > max(SampleFormat) or not 1 <= nch <= MAX_CHANNELS or not 1 <= ns <= MAX_SAMPLES:
        return None
    return encoded_size(nch, ns, SampleFormat(fmt))


class Fragmenter:
    """Sender side: :func:`split` with the rolling counter kept between frames."""

    def __init__(self, mtu: int = MIN_MTU, counter: int = 0) -> None:
        fragment_payload(mtu)
        self.mtu = mtu
        self.counter = counter & COUNTER_MASK

    def split(self, frame: bytes | bytearray | memoryview) -> list[bytes]:
        out = split(frame, self.mtu, self.counter)
        self.counter = (self.counter + len(out)) & COUNTER_MASK
        return out


class Reassembler:
    """Receiver side: :meth:`feed` one notification at a time, get a complete frame or ``None``.

    ``dropped`` counts abandoned frames by reason: ``no_start`` (a continuation with no frame in
    progress), ``out_of_order`` (counter gap: a fragment lost or reordered), ``truncated`` (a new
    start before the frame completed), ``bad_header``, ``oversized`` (header says more than
    ``max_frame`` bytes), ``overrun`` (bytes past the computed length), ``empty`` (a zero-length or
    non-bytes notification). ``skipped`` counts continuations discarded after a drop, until the next
    start. Memory is bounded by ``max_frame``.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if max_frame < HEADER_NEEDED:
            raise ValueError(f"max_frame must be >= {HEADER_NEEDED}, got {max_frame}")
        self.max_frame = max_frame
        self.dropped: Counter[str] = Counter()
        self.skipped = 0
        self.frames = 0
        self._buf = bytearray()
        self._want: int | None = None
        self._counter = 0
        self._active = False  # a frame is in progress
        self._skipping = False  # discard continuations until the next start

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def pending(self) -> int:
        """Bytes of the frame in progress."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial frame (e.g. after a reconnect) without counting a drop."""
        self._clear()
        self._skipping = False

    def feed(self, notification: bytes | bytearray | memoryview) -> bytes | None:
        """Take one notification; return the encoded frame it completes, else ``None``."""
        try:
            data = bytes(notification)
        except (TypeError, ValueError):
            data = b""
        if not data:
            return self._drop("empty") if self._active else self._count("empty")
        head, body = data[0], data[1:]
        counter = head & COUNTER_MASK
        if head & FIRST:
            if self._active:
                self._drop("truncated")
            self._clear()
            self._active, self._skipping = True, False
        elif not self._active:
            if self._skipping:
                self.skipped += 1
                return None
            return self._drop("no_start")
        elif counter != (self._counter + 1) & COUNTER_MASK:
            return self._drop("out_of_order")
        self._counter = counter
        return self._append(body)

    def _append(self, body: bytes) -> bytes | None:
        room = (self._want or self.max_frame) - len(self._buf)
        if len(body) > room:
            return self._drop("overrun" if self._want else "oversized")
        self._buf += body
        if self._want is None and len(self._buf) >= HEADER_NEEDED:
            want = expected_length(self._buf)
            if want is None:
                return self._drop("bad_header")
            if want > self.max_frame:
                return self._drop("oversized")
            if len(self._buf) > want:
                return self._drop("overrun")
            self._want = want
        if self._want is not None and len(self._buf) == self._want:
            frame = bytes(self._buf)
            self._clear()
            self.frames += 1
            return frame
        return None

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self._clear()
        self._skipping = True
        return None

    def _count(self, reason: str) -> None:
        self.dropped[reason] += 1
        return None

    def _clear(self) -> None:
        self._buf = bytearray()
        self._want = None
        self._active = False


def iter_frames(reassembler: Reassembler, notifications: Iterable[bytes]) -> Iterator[bytes]:
    """Complete frames out of a sequence of notifications."""
    for n in notifications:
        frame = reassembler.feed(n)
        if frame is not None:
            yield frame
