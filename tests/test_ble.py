"""BLE: Heart Rate Measurement and Polar PMD ECG parsers, Vigil frame fragmentation, BLETransport.

Parser vectors are byte sequences from public specifications and vendor test suites (cited at each).
The transport tests drive BLETransport's connection/reconnection state machine with a fake client
injected through ``client_factory``: they test our logic (events, backoff, subscriptions, resuming
frames), not bleak and not a radio. No Bluetooth hardware is needed or used.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.firmware_bridge import ble
from vigil.firmware_bridge.ble import (
    HRM_CHAR,
    PMD_CONTROL,
    PMD_DATA,
    PMD_ECG_START,
    PMD_ECG_STOP,
    VIGIL_FRAME_CHAR,
    Backoff,
    BLEParseError,
    BLETransport,
    HeartRate,
    HeartRateReceived,
    PolarEcgFramer,
    ScanResult,
    parse_hrs,
    parse_pmd_ecg,
    parse_pmd_response,
)
from vigil.firmware_bridge.fragments import (
    MAX_MTU,
    MIN_MTU,
    Fragmenter,
    Reassembler,
    fragment_payload,
    split,
)
from vigil.firmware_bridge.protocol import ChannelKind, SampleFormat, decode, encode, make_frame
from vigil.firmware_bridge.transport import LinkEvent, LinkState, Received

# ------------------------------------------------------------------ Heart Rate Measurement 0x2A37

# (bytes, hr_bpm, contact, energy_kj, rr in 1/1024 s). Source: Polar BLE SDK, Android
# BleHrClientTest.kt (github.com/polarofficial/polar-ble-sdk, sources/Android/android-communications/
# library/src/test/.../gatt/client/BleHrClientTest.kt): "hr format uint8/uint16", "sensor contact
# (not) supported", "energy expended", "rr interval" cases, with the SDK's expected values.
POLAR_SDK_HRS = [
    (bytes.fromhex("00FF"), 255, None, None, ()),
    (bytes.fromhex("007F"), 127, None, None, ()),
    (bytes.fromhex("018080"), 32896, None, None, ()),
    (bytes.fromhex("017F7F"), 32639, None, None, ()),
    (bytes.fromhex("0600"), 0, True, None, ()),
    (bytes.fromhex("0400"), 0, False, None, ()),
    (bytes.fromhex("0200"), 0, None, None, ()),  # contact bit without the "supported" bit
    (bytes.fromhex("0000"), 0, None, None, ()),
    (bytes.fromhex("090000FFFF"), 0, None, 65535, ()),
    (bytes.fromhex("08007F80"), 0, None, 32895, ()),
    (bytes.fromhex("1000FFFF"), 0, None, None, (65535,)),
    (bytes.fromhex("110000FFFF7F80"), 0, None, None, (65535, 32895)),
    (bytes.fromhex("1100000000"), 0, None, None, (0,)),  # SDK comment says "10 00 00 00"; bytes are these
]


@pytest.mark.parametrize(("data", "hr", "contact", "energy", "rr"), POLAR_SDK_HRS)
def test_hrs_polar_sdk_vectors(data, hr, contact, energy, rr):
    m = parse_hrs(data)
    assert (m.hr_bpm, m.contact, m.energy_kj) == (hr, contact, energy)
    assert m.rr_s == tuple(v / 1024 for v in rr)


def test_hrs_rr_in_seconds_and_ms():
    # Polar SDK "rr interval" case: 0xFFFF and 0x807F in 1/1024 s are 63999 ms and 32124 ms (floor).
    m = parse_hrs(bytes.fromhex("110000FFFF7F80"))
    assert [int(r * 1000) for r in m.rr_s] == [63999, 32124]


def _encode_hrs(flags: int, hr: int, energy: int, rr: list[int]) -> bytes:
    """Test-side encoder following the Bluetooth SIG HRS 0x2A37 field layout (GATT Specification
    Supplement, Heart Rate Measurement: flags, HR uint8|uint16, energy uint16, RR uint16 x n)."""
    out = bytes([flags]) + hr.to_bytes(2 if flags & 1 else 1, "little")
    if flags & 0x08:
        out += energy.to_bytes(2, "little")
    if flags & 0x10:
        out += b"".join(v.to_bytes(2, "little") for v in rr)
    return out


@pytest.mark.parametrize("flags", range(32))
def test_hrs_every_flag_combination(flags):
    hr = 300 if flags & 1 else 72
    data = _encode_hrs(flags, hr, 1234, [845, 870, 1023])
    m = parse_hrs(data)
    assert m.hr_bpm == hr
    assert m.contact == ((flags & 2 == 2) if flags & 4 else None)
    assert m.energy_kj == (1234 if flags & 8 else None)
    assert m.rr_s == ((845 / 1024, 870 / 1024, 1023 / 1024) if flags & 16 else ())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (bytes.fromhex("01"), "truncated"),  # uint16 HR, no value
        (bytes.fromhex("0148"), "truncated"),  # uint16 HR, one byte
        (bytes.fromhex("0848"), "truncated"),  # energy flagged, missing
        (bytes.fromhex("104803"), "bad_rr"),  # odd RR byte
        (bytes.fromhex("1048"), "bad_rr"),  # RR flagged, none present
        (bytes.fromhex("004800"), "trailing"),  # bytes past the declared fields
        ("0048", "not_bytes"),
    ],
)
def test_hrs_malformed(data, reason):
    with pytest.raises(BLEParseError) as e:
        parse_hrs(data)
    assert e.value.reason == reason


# ---------------------------------------------------------------- Polar PMD ECG (H10 raw ECG)

# Source: Polar BLE SDK, Android EcgDataTest.kt "process raw ecg data type 0"
# (sources/Android/android-communications/library/src/test/.../pmd/model/EcgDataTest.kt; the iOS
# EcgDataTest.swift has the same bytes): header 00 | 00 94 35 77 00 00 00 00 | 00 (ECG, timestamp
# 2_000_000_000 ns, frame type 0), samples 02 80 FF, 02 80 00 -> -32766 uV, 32770 uV. The SDK gives
# the frame timestamp to the last sample (PmdTimeStampUtils.getTimeStamps).
POLAR_SDK_ECG_TYPE0 = bytes.fromhex("00 00 94 35 77 00 00 00 00 00 02 80 FF 02 80 00")
# The same header with frame types 1, 2, 3 (same file: "process raw ecg data type 1/2/3").
POLAR_SDK_ECG_OTHER_TYPES = [
    bytes.fromhex("00 00 94 35 77 00 00 00 00 01 02 80 FF 80 02 00"),
    bytes.fromhex("00 00 94 35 77 00 00 00 00 02 80 80 FC FF FF 03"),
    bytes.fromhex("00 00 94 35 77 00 00 00 00 03 00 12 03 11 10 04 00 02 80 F0 11 10 04 FF"),
]


def test_pmd_ecg_polar_sdk_vector():
    p = parse_pmd_ecg(POLAR_SDK_ECG_TYPE0)
    assert p.timestamp_ns == 2_000_000_000
    assert p.microvolts.tolist() == [-32766, 32770]


def test_pmd_ecg_to_vigil_frame():
    framer = PolarEcgFramer(device_id=0xABCD)
    f = framer.feed(POLAR_SDK_ECG_TYPE0)
    assert f.kinds == (ChannelKind.ECG,) and f.sample_format == SampleFormat.INT24
    assert f.device_id == 0xABCD and f.sequence == 0 and f.sample_rate == 130
    np.testing.assert_allclose(f.physical()[:, 0], [-32.766, 32.770], rtol=1e-6)
    # first sample one 130 Hz period before the last: 2e9 ns - 7692307.7 ns = 1992307.69 us
    assert f.timestamp_us == 1_992_308
    assert decode(encode(f)) == f


@pytest.mark.parametrize("data", POLAR_SDK_ECG_OTHER_TYPES)
def test_pmd_ecg_other_frame_types_rejected(data):
    with pytest.raises(BLEParseError) as e:
        parse_pmd_ecg(data)
    assert e.value.reason == "frame_type"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (POLAR_SDK_ECG_TYPE0[:9], "truncated"),
        (POLAR_SDK_ECG_TYPE0[:10], "length"),  # header, no samples
        (POLAR_SDK_ECG_TYPE0[:-1], "length"),  # 5 sample bytes
        (b"\x02" + POLAR_SDK_ECG_TYPE0[1:], "not_ecg"),  # measurement type 2 = ACC
        (POLAR_SDK_ECG_TYPE0[:9] + b"\x80" + POLAR_SDK_ECG_TYPE0[10:], "compressed"),
    ],
)
def test_pmd_ecg_malformed(data, reason):
    with pytest.raises(BLEParseError) as e:
        parse_pmd_ecg(data)
    assert e.value.reason == reason


def test_pmd_ecg_timestamp_before_packet_start():
    one_sample_ns = (1).to_bytes(8, "little")  # 1 ns, but 2 samples span 7.7 ms
    with pytest.raises(BLEParseError):
        PolarEcgFramer(1).feed(b"\x00" + one_sample_ns + b"\x00" + bytes(6))


def _pmd(ts_ns: int, uv: list[int]) -> bytes:
    return (
        b"\x00"
        + ts_ns.to_bytes(8, "little")
        + b"\x00"
        + b"".join(v.to_bytes(3, "little", signed=True) for v in uv)
    )


def test_pmd_sequence_gap_and_restart():
    period = 1e9 / 130
    framer = PolarEcgFramer(7)
    last = 10**12
    seqs = []
    for skip in (0, 0, 3, 0):  # the third packet comes after 3 lost packets of 73 samples
        last += round((73 * (skip + 1)) * period) if seqs else 0
        seqs.append(framer.feed(_pmd(last, [0] * 73)).sequence)
    assert seqs == [0, 1, 5, 6]
    assert framer.feed(_pmd(10**9, [0] * 73)).sequence == 0  # device clock restarted


def test_pmd_start_command_bytes():
    # Polar BLE SDK PmdControlPointCommand REQUEST_MEASUREMENT_START = 2, PmdMeasurementType ECG = 0,
    # PmdSetting.serializeSelected(): (type, count 1, uint16 LE) for SAMPLE_RATE=0 130 Hz and
    # RESOLUTION=1 14 bit. The same 10 bytes appear in many public H10 clients.
    assert PMD_ECG_START == bytes.fromhex("02 00 00 01 82 00 01 01 0E 00")
    assert PMD_ECG_STOP == bytes.fromhex("03 00")


def test_pmd_control_point_response():
    # PmdControlPointResponse layout (Polar BLE SDK): F0, op code, measurement type, status, more, params
    r = parse_pmd_response(bytes.fromhex("F0 02 00 00 00"))
    assert (r.op, r.measurement, r.status, r.params) == (2, 0, 0, b"")
    assert parse_pmd_response(bytes.fromhex("F0 02 00 06")).status == 6
    with pytest.raises(BLEParseError):
        parse_pmd_response(bytes.fromhex("02 00"))


# ---------------------------------------------------------------------------- fuzzing parsers


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def _mutations():
    seeds = st.sampled_from(
        [d for d, *_ in POLAR_SDK_HRS] + [POLAR_SDK_ECG_TYPE0, *POLAR_SDK_ECG_OTHER_TYPES]
    )
    flipped = st.tuples(seeds, st.integers(0, 10_000)).map(lambda t: _flip(*t))
    truncated = st.tuples(seeds, st.integers(0, 64)).map(lambda t: t[0][: t[1]])
    return st.one_of(st.binary(max_size=600), flipped, truncated)


@settings(max_examples=400, deadline=None)
@given(data=_mutations())
def test_fuzz_parsers_raise_only_parse_errors(data):
    for parse in (parse_hrs, parse_pmd_ecg, PolarEcgFramer(1).feed, parse_pmd_response):
        try:
            parse(data)
        except BLEParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    flags=st.integers(0, 255),
    hr=st.integers(0, 65535),
    energy=st.integers(0, 65535),
    rr=st.lists(st.integers(0, 65535), max_size=9),
)
def test_fuzz_hrs_roundtrip(flags, hr, energy, rr):
    if not flags & 1:
        hr &= 0xFF  # reserved bits 5-7 are ignored
    if flags & 0x10 and not rr:
        rr = [1000]
    m = parse_hrs(_encode_hrs(flags, hr, energy, rr))
    assert m.hr_bpm == hr and m.rr_s == (tuple(v / 1024 for v in rr) if flags & 0x10 else ())


# ---------------------------------------------------------------------------------- fragments


def _frame(n_samples: int = 40, channels: int = 3, seq: int = 0) -> bytes:
    raw = (np.arange(n_samples * channels, dtype=np.int32).reshape(n_samples, channels) * 37) % 4000 - 2000
    kinds = (ChannelKind.ECG,) * channels
    return encode(make_frame(1, seq, 1000 * seq, 250.0, raw.astype(np.int16), kinds=kinds))


def test_fragment_payload_is_mtu_minus_att_and_header():
    assert fragment_payload(23) == 19 and fragment_payload(247) == 243
    for bad in (22, 518):
        with pytest.raises(ValueError):
            fragment_payload(bad)
    frags = split(_frame(), 23, counter=126)
    assert all(len(f) <= 20 for f in frags)
    assert frags[0][0] == 0x80 | 126 and frags[1][0] == 127 and frags[2][0] == 0  # counter wraps


@settings(max_examples=60, deadline=None)
@given(mtu=st.integers(MIN_MTU, MAX_MTU), sizes=st.lists(st.integers(1, 120), min_size=1, max_size=5))
def test_fragment_roundtrip(mtu, sizes):
    tx, rx = Fragmenter(mtu), Reassembler()
    frames = [_frame(n, 2, i) for i, n in enumerate(sizes)]
    out = [f for frame in frames for n in tx.split(frame) if (f := rx.feed(n)) is not None]
    assert out == frames and rx.n_dropped == 0 and rx.pending == 0


def _notes(*frames: bytes, mtu: int = 23) -> list[bytes]:
    return [n for f in frames for n in Fragmenter(mtu).split(f)]


def test_reassembler_drops_by_reason():
    a, b = _frame(seq=1), _frame(seq=2)
    tx = Fragmenter(23)
    na, nb = tx.split(a), tx.split(b)

    rx = Reassembler()  # a lost fragment: out_of_order, rest of a skipped, b fine
    got = [rx.feed(n) for n in na[:3] + na[4:] + nb]
    assert [g for g in got if g] == [b] and rx.dropped == {"out_of_order": 1}
    assert rx.skipped == len(na) - 5  # na[4] is the drop itself

    rx = Reassembler()  # lost tail of a: truncated when b starts
    assert [g for n in na[:-1] + nb if (g := rx.feed(n))] == [b] and rx.dropped == {"truncated": 1}

    rx = Reassembler()  # joined mid-frame: one no_start, then skipped
    assert [g for n in na[2:] + nb if (g := rx.feed(n))] == [b] and rx.dropped == {"no_start": 1}

    rx = Reassembler()  # reordered fragments
    assert [g for n in [na[0], na[2], na[1], *na[3:]] if (g := rx.feed(n))] == []
    assert rx.dropped["out_of_order"] == 1

    rx = Reassembler(max_frame=200)  # header says more than max_frame
    assert all(rx.feed(n) is None for n in na) and rx.dropped == {"oversized": 1}

    rx = Reassembler()
    assert rx.feed(b"\x80" + b"XX" + a[2:19]) is None and rx.dropped == {"bad_header": 1}

    rx = Reassembler()  # a continuation carries bytes past the computed length
    last = bytearray(na[-1]) + b"\x00"
    assert all(rx.feed(n) is None for n in [*na[:-1], bytes(last)]) and rx.dropped == {"overrun": 1}

    rx = Reassembler()
    assert rx.feed(b"") is None and rx.feed(None) is None and rx.dropped == {"empty": 2}


def test_reassembler_short_first_fragment():
    # The header may span fragments: the length is computed once 14 bytes are in.
    a = _frame()
    notes = [b"\x80" + a[:5], b"\x01" + a[5:12], b"\x02" + a[12:20], b"\x03" + a[20:]]
    rx = Reassembler()
    assert [rx.feed(n) for n in notes] == [None, None, None, a]


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.tuples(st.integers(0, 30), st.integers(0, 4000), st.integers(0, 300)),
        ),
        max_size=60,
    )
)
def test_fuzz_reassembler_never_raises_and_stays_bounded(ops):
    """Random notifications, and real fragments with bit flips, truncations and drops."""
    notes = _notes(_frame(seq=1), _frame(30, 1, 2), _frame(seq=3))
    rx = Reassembler(max_frame=1024)
    for op in ops:
        if isinstance(op, bytes):
            data = op
        else:
            i, bit, cut = op
            n = bytearray(notes[i % len(notes)])
            n[(bit // 8) % len(n)] ^= 1 << (bit % 8)
            data = bytes(n[: max(cut, 0)]) if cut < 25 else bytes(n)
        out = rx.feed(data)
        assert out is None or isinstance(out, bytes)
        assert rx.pending <= rx.max_frame


# ---------------------------------------------------------------------------- transport (fake)


class FakeClient:
    """Stands in for bleak.BleakClient: scripted connect outcome, recorded subscriptions and writes."""

    def __init__(self, radio: FakeRadio, address: str, on_disconnect) -> None:
        self.radio, self.address, self.on_disconnect = radio, address, on_disconnect
        self.callbacks: dict[str, object] = {}
        self.writes: list[tuple[str, bytes]] = []
        self.connected = False
        self.mtu_size = 247

    async def connect(self) -> None:
        outcome = self.radio.outcomes.pop(0) if self.radio.outcomes else "ok"
        await asyncio.sleep(0)
        if outcome != "ok":
            raise OSError(outcome)
        self.connected = True

    async def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            self.on_disconnect(self)

    async def start_notify(self, char: str, callback) -> None:
        if char not in self.radio.characteristics:
            raise KeyError(f"characteristic {char} not found")
        self.callbacks[char] = callback

    async def write_gatt_char(self, char: str, data: bytes, response: bool = False) -> None:
        self.writes.append((char, bytes(data)))
        if char == PMD_CONTROL and data[:1] == b"\x02":
            self.callbacks[PMD_CONTROL](None, bytearray([0xF0, 0x02, data[1], self.radio.pmd_status, 0]))

    def notify(self, char: str, data: bytes) -> None:
        self.callbacks[char](None, bytearray(data))

    def drop_link(self) -> None:
        """The peripheral goes out of range."""
        self.connected = False
        self.on_disconnect(self)


class FakeRadio:
    def __init__(self, outcomes=(), characteristics=(HRM_CHAR, PMD_CONTROL, PMD_DATA, VIGIL_FRAME_CHAR)):
        self.outcomes = list(outcomes)
        self.characteristics = set(characteristics)
        self.clients: list[FakeClient] = []
        self.pmd_status = 0

    def factory(self, address, on_disconnect):
        c = FakeClient(self, address, on_disconnect)
        self.clients.append(c)
        return c

    @property
    def client(self) -> FakeClient:
        return self.clients[-1]


class SleepLog:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


ADDR = "C0:FF:EE:00:12:34"


def _transport(radio: FakeRadio, profile: str = "vigil", **kw) -> tuple[BLETransport, SleepLog]:
    sleep = SleepLog()
    kw.setdefault("address", ADDR)
    t = BLETransport(profile, client_factory=radio.factory, sleep=sleep, **kw)
    return t, sleep


async def _next(it, n: int = 1):
    out = []
    async with asyncio.timeout(2):
        for _ in range(n):
            out.append(await anext(it))
    return out if n > 1 else out[0]


def _states(items) -> list[LinkState]:
    return [i.state for i in items if isinstance(i, LinkEvent)]


async def test_reconnect_with_growing_backoff_and_frames_resume():
    """Disconnect -> RECONNECTING with growing delays while connects fail -> CONNECTED; frames resume."""
    radio = FakeRadio()
    t, sleep = _transport(radio, backoff=Backoff(initial=0.1, factor=2.0, cap=5.0, jitter=0.1))
    it = aiter(t)
    assert _states(await _next(it, 2)) == [LinkState.CONNECTING, LinkState.CONNECTED]

    f1 = _frame(seq=1)
    for n in split(f1, radio.client.mtu_size):
        radio.client.notify(VIGIL_FRAME_CHAR, n)
    got = await _next(it)
    assert isinstance(got, Received) and encode(got.frame) == f1 and got.source == f"ble:{ADDR}"

    radio.outcomes = ["refused", "timeout", "ok"]
    radio.client.drop_link()
    events = await _next(it, 8)
    assert _states(events) == [
        LinkState.DISCONNECTED,
        LinkState.RECONNECTING,
        LinkState.CONNECTING,
        LinkState.RECONNECTING,
        LinkState.CONNECTING,
        LinkState.RECONNECTING,
        LinkState.CONNECTING,
        LinkState.CONNECTED,
    ]
    assert len(sleep.delays) == 3
    assert 0.09 <= sleep.delays[0] < sleep.delays[1] < sleep.delays[2] <= 0.44
    assert "link lost" in events[1].detail
    assert "refused" in events[3].detail and "timeout" in events[5].detail
    assert f"retry in {sleep.delays[1]:.3f} s" in events[3].detail

    f2 = _frame(seq=2)
    for n in split(f2, 23):
        radio.client.notify(VIGIL_FRAME_CHAR, n)
    got = await _next(it)
    assert isinstance(got, Received) and got.frame.sequence == 2
    assert len(radio.clients) == 4 and t.stats.frames == 2 and t.stats.n_rejected == 0
    await t.close()
    assert _states([await _next(it)]) == [LinkState.CLOSED]
    with pytest.raises(StopAsyncIteration):
        await _next(it)


async def test_hrs_profile_yields_heart_rates_and_counts_bad_notifications():
    radio = FakeRadio()
    t, _ = _transport(radio, "hrs")
    it = aiter(t)
    await _next(it, 2)
    # Built by the SIG 0x2A37 layout: flags 0x16 (contact supported+detected, RR), 72 bpm, RR 845, 870
    radio.client.notify(HRM_CHAR, bytes.fromhex("16 48 4D 03 66 03"))
    radio.client.notify(HRM_CHAR, bytes.fromhex("10 48 03"))  # odd RR byte: counted, not raised
    radio.client.notify(HRM_CHAR, bytes.fromhex("00 49"))
    a, b = await _next(it, 2)
    assert isinstance(a, HeartRateReceived) and isinstance(b, HeartRateReceived)
    assert a.measurement == HeartRate(72, True, None, (845 / 1024, 870 / 1024)) and b.measurement.hr_bpm == 73
    assert t.stats.rejected == {"hrs_bad_rr": 1} and t.heart_rates == 2 and t.stats.bytes == 11
    assert t.stats.rejected_by_source == {(f"ble:{ADDR}", "hrs_bad_rr"): 1}
    await t.close()


async def test_polar_ecg_profile_starts_stream_and_frames_packets():
    radio = FakeRadio()
    t, _ = _transport(radio, "polar-ecg", device_id=42)
    it = aiter(t)
    assert _states(await _next(it, 2)) == [LinkState.CONNECTING, LinkState.CONNECTED]
    assert radio.client.writes == [(PMD_CONTROL, PMD_ECG_START)]
    assert set(radio.client.callbacks) == {PMD_CONTROL, PMD_DATA}
    radio.client.notify(PMD_DATA, POLAR_SDK_ECG_TYPE0)
    radio.client.notify(PMD_DATA, POLAR_SDK_ECG_OTHER_TYPES[0])  # unsupported frame type: counted
    radio.client.notify(PMD_DATA, _pmd(2_100_000_000, [1000] * 13))
    a, b = await _next(it, 2)
    assert a.frame.device_id == 42 and a.frame.kinds == (ChannelKind.ECG,)
    assert (a.frame.sequence, b.frame.sequence) == (0, 1)
    np.testing.assert_allclose(b.frame.physical(), 1.0, rtol=1e-6)  # 1000 uV = 1 mV
    assert t.stats.rejected == {"pmd_frame_type": 1} and t.stats.frames == 2
    await t.close()


async def test_polar_ecg_refused_start_is_a_failed_attempt():
    radio = FakeRadio()
    radio.pmd_status = 3  # ERROR_NOT_SUPPORTED
    t, sleep = _transport(radio, "polar-ecg", max_attempts=2, backoff=Backoff(initial=0.01, jitter=0))
    events = [i async for i in t]
    assert _states(events) == [
        LinkState.CONNECTING,
        LinkState.RECONNECTING,
        LinkState.CONNECTING,
        LinkState.FAILED,
    ]
    assert "PMD start refused, status 3" in events[-1].detail and sleep.delays == [0.01]
    assert all(not c.connected for c in radio.clients)  # each failed attempt was disconnected


async def test_missing_characteristic_retries_then_fails():
    radio = FakeRadio(characteristics=(HRM_CHAR,))
    t, sleep = _transport(
        radio, "vigil", max_attempts=3, backoff=Backoff(initial=1, factor=10, cap=5, jitter=0)
    )
    events = [i async for i in t]
    assert _states(events)[-1] == LinkState.FAILED and len(radio.clients) == 3
    assert sleep.delays == [1, 5]  # capped
    assert t.closed


async def test_close_ends_iteration_with_closed_event():
    radio = FakeRadio(outcomes=["down"] * 100)
    t, _ = _transport(radio)
    it = aiter(t)
    await _next(it, 4)
    await t.close()
    rest = [i async for i in it]
    assert _states(rest)[-1] == LinkState.CLOSED


async def test_connect_by_name_resolves_strongest_and_unknown_name_is_value_error():
    seen = [
        ScanResult("AA:AA:AA:AA:AA:01", "Polar H10 1234", -80, ()),
        ScanResult("AA:AA:AA:AA:AA:02", "Polar H10 1234", -50, ()),
        ScanResult("AA:AA:AA:AA:AA:03", "Other", -40, ()),
    ]

    async def scanner(timeout):
        return seen

    radio = FakeRadio()
    t = BLETransport("polar-ecg", device_name="Polar H10 1234", client_factory=radio.factory, scanner=scanner)
    assert await t.resolve() == "AA:AA:AA:AA:AA:02"
    assert (await t.scan(0.1))[2].name == "Other"

    t = BLETransport("hrs", device_name="Nope", client_factory=radio.factory, scanner=scanner)
    with pytest.raises(ValueError, match="no BLE device named 'Nope'.*Other"):
        await anext(aiter(t))


@pytest.mark.parametrize(
    ("args", "kw", "match"),
    [
        (("ecg",), {"address": ADDR}, "unknown BLE profile 'ecg'"),
        (("hrs",), {"address": "C0:FF:EE:00:12"}, "malformed BLE address"),
        (("hrs",), {"address": "not-an-address"}, "malformed BLE address"),
        (("hrs",), {}, "exactly one of"),
        (("hrs",), {"address": ADDR, "device_name": "x"}, "exactly one of"),
        (("hrs",), {"address": ADDR, "max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_configuration_raises_value_error(args, kw, match):
    with pytest.raises(ValueError, match=match):
        BLETransport(*args, client_factory=FakeRadio().factory, **kw)


def test_macos_uuid_address_accepted():
    t = BLETransport(
        "vigil", address="12345678-9abc-def0-1234-56789abcdef0", client_factory=FakeRadio().factory
    )
    assert t.address == "12345678-9ABC-DEF0-1234-56789ABCDEF0"


def test_backoff_grows_is_capped_and_jittered():
    b = Backoff(initial=0.5, factor=2, cap=8, jitter=0.2)
    assert [b.delay(k, 0.5) for k in range(6)] == [0.5, 1, 2, 4, 8, 8]
    assert b.delay(0, 0.0) == pytest.approx(0.4) and b.delay(0, 0.999999) == pytest.approx(0.6, abs=1e-5)
    assert b.delay(10_000, 0.999) <= 8
    with pytest.raises(ValueError):
        Backoff(initial=0)


def test_imports_without_bleak_and_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "bleak", None)
    with pytest.raises(ImportError, match=r"pip install 'vigil\[ble\]'"):
        asyncio.run(ble.scan(0.01))
    with pytest.raises(ImportError, match="needs bleak"):
        ble.bleak_client()("AA:AA:AA:AA:AA:AA", lambda c: None)
