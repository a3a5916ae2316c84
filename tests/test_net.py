"""UDP and TCP transports end to end over loopback sockets: real ECG frames in, bad input counted."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from vigil.firmware_bridge import cobs, protocol
from vigil.firmware_bridge.net import TCPTransport, UDPTransport, frame_error_reason
from vigil.firmware_bridge.protocol import ChannelKind, make_frame
from vigil.firmware_bridge.replay import chunks, read_wfdb
from vigil.firmware_bridge.streams import Delivered, StreamChecker
from vigil.firmware_bridge.transport import LinkEvent, LinkState, Received

LOOPBACK = "127.0.0.1"
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def ecg_frames(data_dir) -> list[protocol.Frame]:
    """The first 20 s of MIT-BIH record 100 as 0.25 s int16 frames of device 100."""
    rec = read_wfdb(data_dir / "mitdb" / "100")
    sig = rec.signal[: int(20 * rec.fs)]
    scale = 0.005  # mV per count
    frames = []
    for i, block in enumerate(chunks(sig, 90)):
        raw = np.round(block / scale).astype(np.int16)
        ts = int(i * 90 * 1e6 / rec.fs)
        frames.append(make_frame(100, i, ts, rec.fs, raw, (ChannelKind.ECG,) * 2, scale=scale))
    return frames


def bad_inputs(good: bytes) -> list[bytes]:
    """Garbage, truncated and bit-flipped versions of a good frame."""
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, 300, dtype=np.uint8).tobytes(), good[:-7], bytes(flipped), b"VG", b""]


async def next_item(it, timeout: float = TIMEOUT):
    return await asyncio.wait_for(anext(it), timeout)


async def collect_frames(it, n: int, timeout: float = TIMEOUT) -> tuple[list[Received], list[LinkEvent]]:
    """Pull items until ``n`` frames have arrived (bounded by ``timeout`` overall)."""
    frames: list[Received] = []
    events: list[LinkEvent] = []
    async with asyncio.timeout(timeout):
        while len(frames) < n:
            item = await anext(it)
            (frames if isinstance(item, Received) else events).append(item)
    return frames, events


def test_frame_error_reasons():
    good = protocol.encode(make_frame(1, 0, 0, 100.0, np.zeros(4, np.int16)))
    reasons = []
    for data in bad_inputs(good):
        try:
            protocol.decode(data)
        except protocol.FrameError as e:
            reasons.append(frame_error_reason(e))
    assert reasons == ["magic", "length", "crc", "truncated", "truncated"]


async def test_udp_reads_every_waiting_datagram_after_a_busy_spell():
    """A burst sent while the event loop is blocked (the monitor's processing holding the GIL) waits
    in the large receive buffer and is read at the next wake-ups, max_batch at a time, in order."""
    t = UDPTransport(LOOPBACK, 0, max_queue=10_000, max_batch=256)
    await t.start()
    it = t.items()
    raw = np.zeros((25, 1), np.int16)
    wire = [
        protocol.encode(make_frame(7, k, k * 100_000, 250.0, raw, (ChannelKind.ECG,))) for k in range(3000)
    ]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for w in wire:  # the loop does not run while we send: nothing is read until the await below
            s.sendto(w, (LOOPBACK, t.port))
        got, _ = await collect_frames(it, len(wire))
    finally:
        s.close()
        await t.close()
    assert [r.frame.sequence for r in got] == list(range(3000))
    assert t.stats.frames == 3000 and t.stats.n_rejected == 0


async def test_udp_end_to_end_with_bad_sender(ecg_frames):
    t = UDPTransport(LOOPBACK, 0)
    await t.start()
    it = t.items()
    try:
        ev = await next_item(it)
        assert isinstance(ev, LinkEvent) and ev.state == LinkState.CONNECTING
        ev = await next_item(it)
        assert ev.state == LinkState.CONNECTED and t.port > 0
        good = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            wire = [protocol.encode(f) for f in ecg_frames]
            bads = bad_inputs(wire[0])
            for i, w in enumerate(wire):
                good.sendto(w, (LOOPBACK, t.port))
                bad.sendto(bads[i % len(bads)], (LOOPBACK, t.port))
                if i % 8 == 0:
                    await asyncio.sleep(0.001)  # let the loop drain the socket buffer
            got, _ = await collect_frames(it, len(wire))
            good_src = f"udp:{LOOPBACK}:{good.getsockname()[1]}"
            bad_src = f"udp:{LOOPBACK}:{bad.getsockname()[1]}"
        finally:
            good.close()
            bad.close()
        assert [r.frame for r in got] == ecg_frames
        assert all(r.source == good_src for r in got)
        assert np.all(np.diff([r.arrival for r in got]) >= 0)
        # physical units survive: the first frame matches the record to within a count
        assert np.allclose(got[0].frame.physical(), ecg_frames[0].physical())
        await asyncio.sleep(0.05)
        n_bad = len(wire)
        assert t.stats.frames == len(wire)
        assert t.stats.n_rejected == n_bad
        assert set(t.stats.rejected) == {"magic", "length", "crc", "truncated"}
        assert t.peer_stats[bad_src].n_rejected == n_bad and t.peer_stats[good_src].n_rejected == 0
        # in order and complete through the stream checker
        checker = StreamChecker()
        ev = checker.check_many(got)
        assert all(isinstance(e, Delivered) for e in ev)
        assert checker.stats(100).frames == len(wire)
    finally:
        await t.close()
    rest = [x async for x in it]
    assert all(isinstance(x, LinkEvent) for x in rest)
    assert t.closed


async def test_tcp_many_peers_garbage_and_hang(ecg_frames):
    t = TCPTransport(LOOPBACK, 0)
    await t.start()
    it = t.items()
    writers: list[asyncio.StreamWriter] = []
    try:
        ev = await next_item(it)
        assert ev.state == LinkState.CONNECTED and t.port > 0
        wire = [cobs.encode(protocol.encode(f)) for f in ecg_frames]
        # a peer that sends half a frame and then hangs
        _, hang = await asyncio.open_connection(LOOPBACK, t.port)
        hang.write(wire[0][: len(wire[0]) // 2])
        # a peer that sends garbage, bit-flipped and truncated frames
        _, bad = await asyncio.open_connection(LOOPBACK, t.port)
        for b in bad_inputs(protocol.encode(ecg_frames[0]))[:3]:
            bad.write(cobs.encode(b))
        bad.write(b"\x01\x00\x02\x00")  # a malformed COBS block, then a 1-byte frame
        bad.write(bytes(range(1, 256)) * 400)  # an oversized run with no delimiter
        bad.write(b"\x00")
        # the good peer, in odd-sized chunks
        _, good = await asyncio.open_connection(LOOPBACK, t.port)
        writers += [hang, bad, good]
        stream = b"".join(wire)
        rng = np.random.default_rng(1)
        pos = 0
        while pos < len(stream):
            n = int(rng.integers(1, 700))
            good.write(stream[pos : pos + n])
            pos += n
            if rng.random() < 0.2:
                await good.drain()
        await asyncio.gather(good.drain(), bad.drain(), hang.drain())
        got, events = await collect_frames(it, len(wire))
        assert [r.frame for r in got] == ecg_frames
        good_src = f"tcp:{LOOPBACK}:{good.get_extra_info('sockname')[1]}"
        assert {r.source for r in got} == {good_src}
        connected = {e.source for e in events if e.state == LinkState.CONNECTED}
        assert good_src in connected and len(connected) == 3
        assert t.n_connections == 3
        await asyncio.sleep(0.1)
        assert t.stats.rejected["crc"] == 1 and t.stats.rejected["length"] == 1
        assert t.stats.rejected["magic"] == 1 and t.stats.rejected["cobs"] == 1
        assert t.stats.rejected["oversized"] == 1 and t.stats.rejected["truncated"] == 1
        # the good peer leaves: a disconnect event for it alone
        good.close()
        async with asyncio.timeout(TIMEOUT):
            while True:
                e = await anext(it)
                if isinstance(e, LinkEvent) and e.state == LinkState.DISCONNECTED:
                    break
        assert e.source == good_src and t.n_connections == 2
    finally:
        for w in writers:
            w.close()
        await asyncio.wait_for(t.close(), TIMEOUT)
    async with asyncio.timeout(TIMEOUT):
        rest = [x async for x in it]
    assert all(isinstance(x, LinkEvent) for x in rest)
    assert t.n_connections == 0


async def test_tcp_drops_idle_and_flooding_peers(ecg_frames):
    t = TCPTransport(LOOPBACK, 0, idle_timeout_s=0.3, max_bad_run=20, max_frame=4096)
    await t.start()
    it = t.items()
    try:
        await next_item(it)
        _, idle = await asyncio.open_connection(LOOPBACK, t.port)
        _, flood = await asyncio.open_connection(LOOPBACK, t.port)
        flood.write(b"\x05garbage\x00" * 100)
        _, good = await asyncio.open_connection(LOOPBACK, t.port)
        for f in ecg_frames[:10]:
            good.write(cobs.encode(protocol.encode(f)))
        await good.drain()
        got, events = await collect_frames(it, 10)
        assert [r.frame for r in got] == ecg_frames[:10]
        reasons = {e.source: e.detail for e in events if e.state == LinkState.DISCONNECTED}
        async with asyncio.timeout(TIMEOUT):
            while len(reasons) < 3:
                e = await anext(it)
                if e.state == LinkState.DISCONNECTED:
                    reasons[e.source] = e.detail
        details = sorted(reasons.values())
        assert any("bad blocks" in d for d in details)
        assert sum("idle" in d for d in details) == 2  # the idle peer and, later, the quiet good one
        assert t.stats.rejected["peer dropped"] == 1
        for w in (idle, flood, good):
            w.close()
    finally:
        await asyncio.wait_for(t.close(), TIMEOUT)


async def test_tcp_connection_limit():
    t = TCPTransport(LOOPBACK, 0, max_connections=1)
    await t.start()
    try:
        r1, w1 = await asyncio.open_connection(LOOPBACK, t.port)
        await asyncio.sleep(0.05)
        r2, w2 = await asyncio.open_connection(LOOPBACK, t.port)
        assert await asyncio.wait_for(r2.read(), TIMEOUT) == b""  # refused: closed at once
        assert t.stats.rejected["too many connections"] == 1 and t.n_connections == 1
        w1.close()
        w2.close()
    finally:
        await asyncio.wait_for(t.close(), TIMEOUT)
