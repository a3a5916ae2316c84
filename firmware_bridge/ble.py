"""Bluetooth LE: standard heart-rate sensors, Polar H10 raw ECG, and Vigil's own GATT service.

Profiles (what :class:`BLETransport` subscribes to):

``"hrs"``
    Heart Rate Service 0x180D, Heart Rate Measurement 0x2A37 notifications, parsed by
    :func:`parse_hrs`. A measurement is not a block of regularly sampled signal, so it is not forced
    into a :class:`~.protocol.Frame`: the transport yields a :class:`HeartRateReceived` (heart rate,
    sensor contact, energy, RR intervals in seconds) beside the usual items. The monitor mostly needs
    the RR intervals, which arrive irregularly (0..n per notification) and would need a fake sample
    rate as frame samples.
``"polar-ecg"``
    Polar Measurement Data (PMD) service: writes :data:`PMD_ECG_START` (ECG, 130 Hz, 14 bit) to the
    control point, parses data notifications with :func:`parse_pmd_ecg` and turns each into a
    1-channel ECG frame in millivolts (:class:`PolarEcgFramer`).
``"vigil"``
    Vigil firmware: encoded Vigil frames split across notifications of :data:`VIGIL_FRAME_CHAR`
    (:mod:`.fragments`), reassembled, then checked by :func:`~.protocol.decode`.

Vigil GATT service (128-bit UUIDs from one random v4 base, last byte of the first field varies)::

    a8200600-47df-46ae-8e0c-eda7b6e41d80  Vigil service
    a8200601-47df-46ae-8e0c-eda7b6e41d80  frame fragments: notify, 1-byte fragment header + data

Every parser raises :class:`BLEParseError` (a ``ValueError``) for malformed input and nothing else;
the transport counts those in its stats and goes on. ``bleak`` is imported only when a real adapter
is used (``pip install 'vigil[ble]'``); parsers and the state machine work without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from .fragments import Reassembler
from .protocol import MAX_SAMPLES, ChannelKind, Frame, FrameError, SampleFormat, decode, make_frame
from .transport import Item, LinkEvent, LinkState, Received, Transport


def uuid16(short: int) -> str:
    """Full 128-bit form of a Bluetooth SIG 16-bit UUID."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


HRS_SERVICE = uuid16(0x180D)
HRM_CHAR = uuid16(0x2A37)
PMD_SERVICE = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
VIGIL_SERVICE = "a8200600-47df-46ae-8e0c-eda7b6e41d80"
VIGIL_FRAME_CHAR = "a8200601-47df-46ae-8e0c-eda7b6e41d80"

PROFILES = ("hrs", "polar-ecg", "vigil")
PROFILE_SERVICE = {"hrs": HRS_SERVICE, "polar-ecg": PMD_SERVICE, "vigil": VIGIL_SERVICE}


class BLEParseError(ValueError):
    """Bytes that are not a valid measurement; ``reason`` is a short, fixed key for counting."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def _as_bytes(data: Any) -> bytes:
    try:
        return bytes(data)
    except (TypeError, ValueError):
        raise BLEParseError(f"expected bytes, got {type(data).__name__}", "not_bytes") from None


# ------------------------------------------------------------------------- Heart Rate Measurement


@dataclass(frozen=True, slots=True)
class HeartRate:
    """One Heart Rate Measurement (0x2A37). ``contact`` is ``None`` when the sensor does not report
    contact; ``rr_s`` are RR intervals in seconds, oldest first."""

    hr_bpm: int
    contact: bool | None
    energy_kj: int | None
    rr_s: tuple[float, ...]


HRS_UINT16 = 0x01
HRS_CONTACT_DETECTED = 0x02
HRS_CONTACT_SUPPORTED = 0x04
HRS_ENERGY = 0x08
HRS_RR = 0x10
RR_UNIT_S = 1 / 1024


def parse_hrs(data: bytes | bytearray | memoryview) -> HeartRate:
    """Parse a Heart Rate Measurement: flags, HR (uint8 or uint16), energy expended (uint16 kJ) if
    flag bit 3, RR intervals (uint16, 1/1024 s) if flag bit 4; all little-endian. Strict: a missing
    field, an odd RR byte, bytes past the declared fields or an RR flag with no RR raise."""
    b = _as_bytes(data)
    if not b:
        raise BLEParseError("empty heart rate measurement", "truncated")
    flags, pos = b[0], 1
    width = 2 if flags & HRS_UINT16 else 1
    if len(b) < pos + width:
        raise BLEParseError(f"{len(b)} bytes: heart rate value missing", "truncated")
    hr = int.from_bytes(b[pos : pos + width], "little")
    pos += width
    energy = None
    if flags & HRS_ENERGY:
        if len(b) < pos + 2:
            raise BLEParseError("energy expended flagged but missing", "truncated")
        energy = int.from_bytes(b[pos : pos + 2], "little")
        pos += 2
    rest = b[pos:]
    if not flags & HRS_RR:
        if rest:
            raise BLEParseError(f"{len(rest)} bytes after the declared fields", "trailing")
        rr: tuple[float, ...] = ()
    else:
        if not rest or len(rest) % 2:
            raise BLEParseError(f"RR intervals flagged but {len(rest)} bytes follow", "bad_rr")
        rr = tuple(v * RR_UNIT_S for (v,) in struct.iter_unpack("<H", rest))
    contact = bool(flags & HRS_CONTACT_DETECTED) if flags & HRS_CONTACT_SUPPORTED else None
    return HeartRate(hr_bpm=hr, contact=contact, energy_kj=energy, rr_s=rr)


# ---------------------------------------------------------------------- Polar Measurement Data


PMD_ECG = 0x00
PMD_FRAME_COMPRESSED = 0x80
PMD_HEADER = 10  # measurement type (1), timestamp ns u64 (8), frame type (1)
PMD_RESPONSE = 0xF0
PMD_OP_START = 0x02
PMD_OP_STOP = 0x03
PMD_STATUS_OK = 0
PMD_STATUS_ALREADY_IN_STATE = 6
PMD_SETTING_SAMPLE_RATE = 0
PMD_SETTING_RESOLUTION = 1
POLAR_H10_ECG_HZ = 130
ECG_SCALE_MV = 1e-3  # samples are microvolts


def pmd_start_command(measurement: int, sample_rate: int, resolution: int) -> bytes:
    """PMD control-point "request measurement start": op 0x02, measurement type, then settings as
    (type, count=1, uint16 LE value) for sample rate and resolution."""
    return struct.pack(
        "<BBBBHBBH",
        PMD_OP_START,
        measurement,
        PMD_SETTING_SAMPLE_RATE,
        1,
        sample_rate,
        PMD_SETTING_RESOLUTION,
        1,
        resolution,
    )


PMD_ECG_START = pmd_start_command(PMD_ECG, POLAR_H10_ECG_HZ, 14)  # 02 00 00 01 82 00 01 01 0e 00
PMD_ECG_STOP = bytes((PMD_OP_STOP, PMD_ECG))


@dataclass(frozen=True, slots=True)
class PmdResponse:
    """PMD control-point response: 0xF0, op code, measurement type, status, [more, parameters]."""

    op: int
    measurement: int
    status: int
    params: bytes


def parse_pmd_response(data: bytes | bytearray | memoryview) -> PmdResponse:
    b = _as_bytes(data)
    if len(b) < 4 or b[0] != PMD_RESPONSE:
        raise BLEParseError("not a PMD control-point response", "bad_response")
    return PmdResponse(op=b[1], measurement=b[2], status=b[3], params=b[5:])


@dataclass(frozen=True, slots=True)
class PmdEcgPacket:
    """Raw ECG samples of one PMD notification. ``timestamp_ns`` is the device time of the **last**
    sample, ns since 2000-01-01 (Polar's epoch)."""

    timestamp_ns: int
    microvolts: np.ndarray  # int32 [n]


def parse_pmd_ecg(data: bytes | bytearray | memoryview) -> PmdEcgPacket:
    """Parse a PMD data notification of measurement type 0 (ECG), frame type 0: a 10-byte header
    (type, u64 LE timestamp, frame type) then signed 24-bit LE microvolt samples."""
    b = _as_bytes(data)
    if len(b) < PMD_HEADER:
        raise BLEParseError(f"{len(b)} bytes is shorter than a PMD header", "truncated")
    if b[0] != PMD_ECG:
        raise BLEParseError(f"measurement type {b[0]:#04x} is not ECG", "not_ecg")
    frame_type = b[9]
    if frame_type & PMD_FRAME_COMPRESSED:
        raise BLEParseError("compressed (delta) ECG frames are not supported", "compressed")
    if frame_type != 0:
        raise BLEParseError(f"ECG frame type {frame_type} is not supported", "frame_type")
    body = b[PMD_HEADER:]
    n = len(body) // 3
    if not body or len(body) % 3 or n > MAX_SAMPLES:
        raise BLEParseError(f"{len(body)} sample bytes is not 1..{MAX_SAMPLES} 3-byte samples", "length")
    u = np.frombuffer(body, dtype=np.uint8).reshape(n, 3).astype(np.int32)
    uv = u[:, 0] | (u[:, 1] << 8) | (u[:, 2] << 16)
    uv -= (u[:, 2] >> 7) << 24
    return PmdEcgPacket(timestamp_ns=int.from_bytes(b[1:9], "little"), microvolts=uv)


class PolarEcgFramer:
    """PMD ECG packets of one device as Vigil frames: 1 channel, ECG, int24 raw microvolts with scale
    1e-3 (physical unit mV), timestamp of the first sample in µs of the device clock.

    Sequence numbers are assigned here, +1 per packet. A gap in device time longer than half a packet
    skips as many numbers as packets fit in it (so a stream checker reports the loss); time going
    backwards (sensor restarted) restarts the sequence at 0.
    """

    def __init__(self, device_id: int, sample_rate: float = POLAR_H10_ECG_HZ, stream_id: int = 0) -> None:
        self.device_id = device_id
        self.sample_rate = float(sample_rate)
        self.stream_id = stream_id
        self.sequence = 0
        self._next_ns: float | None = None  # expected time of the next packet's first sample

    def frame(self, packet: PmdEcgPacket) -> Frame:
        n = len(packet.microvolts)
        period = 1e9 / self.sample_rate
        first_ns = packet.timestamp_ns - (n - 1) * period
        if first_ns < 0:
            raise BLEParseError("timestamp earlier than the packet's own duration", "timestamp")
        seq = self._sequence_for(first_ns, n * period)
        try:
            frame = make_frame(
                self.device_id,
                seq,
                round(first_ns / 1000),
                self.sample_rate,
                packet.microvolts,
                kinds=(ChannelKind.ECG,),
                sample_format=SampleFormat.INT24,
                scale=ECG_SCALE_MV,
                stream_id=self.stream_id,
            )
        except FrameError as e:
            raise BLEParseError(str(e), "frame") from None
        self.sequence = (seq + 1) & 0xFFFFFFFF
        self._next_ns = packet.timestamp_ns + period
        return frame

    def feed(self, data: bytes | bytearray | memoryview) -> Frame:
        """Parse one PMD notification and frame it."""
        return self.frame(parse_pmd_ecg(data))

    def _sequence_for(self, first_ns: float, duration_ns: float) -> int:
        if self._next_ns is None:
            return self.sequence
        gap = first_ns - self._next_ns
        if gap < -duration_ns / 2:
            return 0
        if gap > duration_ns / 2:
            return (self.sequence + max(1, round(gap / duration_ns))) & 0xFFFFFFFF
        return self.sequence


# -------------------------------------------------------------------------------- transport


@dataclass(frozen=True)
class HeartRateReceived:
    """A Heart Rate Measurement, where it came from and when it arrived (``time.monotonic()``)."""

    measurement: HeartRate
    source: str
    arrival: float


BLEItem = Item | HeartRateReceived


class ScanResult(NamedTuple):
    address: str
    name: str | None
    rssi: int
    services: tuple[str, ...]


class BLEClient(Protocol):
    """The part of ``bleak.BleakClient`` the transport uses (so tests can inject a fake)."""

    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def start_notify(self, char: str, callback: Callable[[Any, bytearray], None]) -> None: ...
    async def write_gatt_char(self, char: str, data: bytes, response: bool = ...) -> None: ...

    @property
    def mtu_size(self) -> int: ...


ClientFactory = Callable[[str, Callable[[Any], None]], BLEClient]
Scanner = Callable[[float], Awaitable[list[ScanResult]]]

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_CB_UUID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


def check_address(address: str) -> str:
    """``address`` if it is a MAC (``AA:BB:CC:DD:EE:FF``) or a CoreBluetooth UUID (macOS), else
    ``ValueError``."""
    if not isinstance(address, str) or not (_MAC.match(address) or _CB_UUID.match(address)):
        raise ValueError(
            f"malformed BLE address {address!r}: expected AA:BB:CC:DD:EE:FF or, on macOS, a UUID"
        )
    return address.upper()


def device_id_for(address: str) -> int:
    """Stable u32 device id for a BLE address (CRC-32 of its upper-case text)."""
    return zlib.crc32(address.upper().encode())


def _require_bleak() -> Any:
    try:
        import bleak
    except ImportError as e:
        raise ImportError("BLE support needs bleak: pip install 'vigil[ble]'") from e
    return bleak


async def scan(timeout: float = 5.0) -> list[ScanResult]:
    """Advertising devices seen in ``timeout`` seconds, strongest first (needs bleak)."""
    bleak = _require_bleak()
    found = await bleak.BleakScanner.discover(timeout=timeout, return_adv=True)
    out = [
        ScanResult(dev.address, adv.local_name or dev.name, adv.rssi, tuple(adv.service_uuids))
        for dev, adv in found.values()
    ]
    return sorted(out, key=lambda r: -r.rssi)


def bleak_client(timeout: float = 20.0) -> ClientFactory:
    """Default factory: a ``bleak.BleakClient`` for an address, with a disconnect callback."""

    def make(address: str, on_disconnect: Callable[[Any], None]) -> BLEClient:
        return _require_bleak().BleakClient(address, disconnected_callback=on_disconnect, timeout=timeout)

    return make


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial * factor**attempt`` capped at ``cap``, times a uniform jitter in
    ``[1 - jitter, 1 + jitter]``, capped again."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.cap and self.factor >= 1 and 0 <= self.jitter < 1):
            raise ValueError(f"bad backoff {self}")

    def delay(self, attempt: int, u: float) -> float:
        """Delay before retry number ``attempt`` (0-based); ``u`` uniform in [0, 1)."""
        base = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        return min(self.cap, base * (1 + self.jitter * (2 * u - 1)))


class _End:
    pass


class BLETransport(Transport):
    """One BLE device as a :class:`~.transport.Transport`: connect, subscribe, reconnect.

    Give ``address`` or ``name`` (resolved by scanning when iteration starts; ``ValueError`` if
    absent). Yields :class:`~.transport.Received`, :class:`HeartRateReceived` (profile ``"hrs"``)
    and :class:`~.transport.LinkEvent`: CONNECTING before each attempt, CONNECTED, DISCONNECTED,
    RECONNECTING (detail carries the delay) before each backoff wait, FAILED when ``max_attempts``
    consecutive attempts failed (iteration then ends), CLOSED on :meth:`close`. Malformed
    notifications are counted in ``stats.rejected`` by reason, never raised.

    ``client_factory(address, on_disconnect)``, ``scanner(timeout)``, ``sleep`` and ``rng`` are
    injectable so the state machine runs without a radio.
    """

    name = "ble"

    def __init__(
        self,
        profile: str,
        *,
        address: str | None = None,
        device_name: str | None = None,
        client_factory: ClientFactory | None = None,
        scanner: Scanner | None = None,
        scan_timeout: float = 5.0,
        connect_timeout: float = 20.0,
        control_timeout: float = 5.0,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        device_id: int | None = None,
        max_queue: int = 4096,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        if profile not in PROFILES:
            raise ValueError(f"unknown BLE profile {profile!r}; expected one of {', '.join(PROFILES)}")
        if (address is None) == (device_name is None):
            raise ValueError("give exactly one of address= or device_name=")
        if device_name is not None and not device_name.strip():
            raise ValueError("device_name must not be empty")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {max_attempts}")
        self.profile = profile
        self.address = check_address(address) if address is not None else None
        self.device_name = device_name
        self.client_factory = client_factory or bleak_client(connect_timeout)
        self.scanner = scanner or scan
        self.scan_timeout = scan_timeout
        self.connect_timeout = connect_timeout
        self.control_timeout = control_timeout
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.heart_rates = 0
        self._device_id = device_id
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[BLEItem | _End] = asyncio.Queue(max_queue)
        self._task: asyncio.Task | None = None
        self._client: BLEClient | None = None
        self.reassembler = Reassembler()
        self._ecg: PolarEcgFramer | None = None
        self._cp_reply: asyncio.Future[PmdResponse] | None = None

    @property
    def source(self) -> str:
        return f"ble:{self.address or self.device_name}"

    async def scan(self, timeout: float | None = None) -> list[ScanResult]:
        """Advertising devices: (address, name, rssi, services)."""
        return list(await self.scanner(self.scan_timeout if timeout is None else timeout))

    async def resolve(self) -> str:
        """The device address, scanning for ``device_name`` if needed (strongest RSSI wins)."""
        if self.address is None:
            seen = await self.scan()
            hits = sorted((r for r in seen if r.name == self.device_name), key=lambda r: -r.rssi)
            if not hits:
                names = sorted({r.name for r in seen if r.name})
                raise ValueError(
                    f"no BLE device named {self.device_name!r} in a {self.scan_timeout:g} s scan"
                    f" (seen: {', '.join(names) or 'none'})"
                )
            self.address = check_address(hits[0].address)
        return self.address

    async def items(self) -> AsyncIterator[BLEItem]:
        await self.resolve()
        if self._task is None and not self.closed:
            dev = device_id_for(self.address) if self._device_id is None else self._device_id
            self._ecg = PolarEcgFramer(dev)
            self._task = asyncio.create_task(self._run())
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # later iterators end too
                return
            yield item

    async def close(self) -> None:
        if self.closed:
            return
        await super().close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._drop_client()
        self._emit(self._event(LinkState.CLOSED))
        self._finish()

    # ------------------------------------------------------------------------ state machine

    async def _run(self) -> None:
        failures = retry = 0  # consecutive failed attempts; index into the backoff schedule
        while not self.closed:
            self._emit(self._event(LinkState.CONNECTING, f"attempt {failures + 1}"))
            lost = asyncio.Event()
            try:
                await self._connect(lost)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any adapter/device error is one failed attempt
                await self._drop_client()
                failures += 1
                if self.max_attempts is not None and failures >= self.max_attempts:
                    self._emit(self._event(LinkState.FAILED, f"{failures} attempts; last: {_describe(e)}"))
                    self._finish()
                    return
                await self._wait_retry(retry, _describe(e))
                retry += 1
                continue
            failures = 0
            self._emit(self._event(LinkState.CONNECTED, f"mtu {_mtu(self._client)}"))
            await lost.wait()
            await self._drop_client()
            self._emit(self._event(LinkState.DISCONNECTED))
            await self._wait_retry(0, "link lost")
            retry = 1

    async def _wait_retry(self, attempt: int, why: str) -> None:
        delay = self.backoff.delay(attempt, self._rng.random())
        self._emit(self._event(LinkState.RECONNECTING, f"{why}; retry in {delay:.3f} s"))
        await self._sleep(delay)

    async def _connect(self, lost: asyncio.Event) -> None:
        client = self.client_factory(self.address, lambda _c: lost.set())
        self._client = client
        await asyncio.wait_for(client.connect(), self.connect_timeout)
        self.reassembler.reset()
        if self.profile == "hrs":
            await client.start_notify(HRM_CHAR, self._on_hrs)
        elif self.profile == "vigil":
            await client.start_notify(VIGIL_FRAME_CHAR, self._on_vigil)
        else:
            await self._start_ecg(client)

    async def _start_ecg(self, client: BLEClient) -> None:
        self._cp_reply = asyncio.get_running_loop().create_future()
        await client.start_notify(PMD_CONTROL, self._on_pmd_control)
        await client.start_notify(PMD_DATA, self._on_pmd_data)
        await client.write_gatt_char(PMD_CONTROL, PMD_ECG_START, response=True)
        try:
            reply = await asyncio.wait_for(self._cp_reply, self.control_timeout)
        except TimeoutError:
            self._reject("pmd_no_start_response")  # data may still flow; go on
            return
        if reply.status not in (PMD_STATUS_OK, PMD_STATUS_ALREADY_IN_STATE):
            raise RuntimeError(f"PMD start refused, status {reply.status}")

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self.connect_timeout)

    # ------------------------------------------------------------------------ notifications

    def _on_hrs(self, _sender: Any, data: bytearray) -> None:
        self.stats.bytes += len(data)
        try:
            hr = parse_hrs(data)
        except BLEParseError as e:
            self._reject(f"hrs_{e.reason}")
            return
        self.heart_rates += 1
        self._emit(HeartRateReceived(hr, self.source, time.monotonic()))

    def _on_pmd_data(self, _sender: Any, data: bytearray) -> None:
        self.stats.bytes += len(data)
        if self._ecg is None:  # notification before iteration started
            return
        try:
            frame = self._ecg.feed(data)
        except BLEParseError as e:
            self._reject(f"pmd_{e.reason}")
            return
        self._emit_frame(frame)

    def _on_pmd_control(self, _sender: Any, data: bytearray) -> None:
        try:
            reply = parse_pmd_response(data)
        except BLEParseError as e:
            self._reject(f"pmd_{e.reason}")
            return
        if reply.op == PMD_OP_START and self._cp_reply is not None and not self._cp_reply.done():
            self._cp_reply.set_result(reply)

    def _on_vigil(self, _sender: Any, data: bytearray) -> None:
        self.stats.bytes += len(data)
        before = self.reassembler.dropped.copy()
        encoded = self.reassembler.feed(data)
        for reason, n in (self.reassembler.dropped - before).items():
            self._reject(f"fragment_{reason}", n)
        if encoded is None:
            return
        try:
            frame = decode(encoded)
        except FrameError:
            self._reject("frame_invalid")
            return
        self._emit_frame(frame)

    # ------------------------------------------------------------------------ output

    def _emit_frame(self, frame: Frame) -> None:
        self.stats.frames += 1
        self._emit(Received(frame, self.source, time.monotonic()))

    def _emit(self, item: BLEItem) -> None:
        if self._queue.full():
            if not isinstance(item, LinkEvent):
                self._reject("queue_full")
                return
            self._queue.get_nowait()  # link events displace the oldest item
            self._reject("queue_full")
        self._queue.put_nowait(item)

    def _finish(self) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(_End())
        self._closed = True

    def _reject(self, reason: str, n: int = 1) -> None:
        self.stats.reject(reason, n, source=self.source)

    def _event(self, state: LinkState, detail: str = "") -> LinkEvent:
        return LinkEvent(self.source, state, detail)


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _mtu(client: BLEClient | None) -> int | str:
    try:
        return int(client.mtu_size)  # type: ignore[union-attr]
    except Exception:
        return "?"
