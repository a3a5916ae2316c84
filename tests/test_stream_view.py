"""``vigil stream``: a real transport, real frames from a real record, statistics per device."""

from __future__ import annotations

import asyncio
import io
import socket

import numpy as np
import pytest

from vigil.edge.stream_view import watch
from vigil.firmware_bridge import protocol as P
from vigil.firmware_bridge.net import UDPTransport
from vigil.firmware_bridge.replay import read_wfdb
from vigil.firmware_bridge.sources import open_source


def _frames(data_dir, device_id: int, skip: set[int]) -> list[bytes]:
    """40 frames of 100 ms from MIT-BIH 100, int24 in 5 µV steps, sequence numbers in ``skip`` lost."""
    x = read_wfdb(data_dir / "mitdb" / "100").signal
    raw = np.round(x / 0.005).astype(np.int32)
    out = []
    for seq in range(40):
        if seq in skip:
            continue
        block = raw[seq * 36 : (seq + 1) * 36]
        f = P.make_frame(
            device_id, seq, seq * 100_000, 360.0, block, kinds=(P.ChannelKind.ECG,) * 2, scale=0.005
        )
        out.append(P.encode(f))
    return out


async def test_watch_reports_frames_gaps_and_rejections_per_device(data_dir):
    transport = UDPTransport("127.0.0.1", 0)
    await transport.start()
    out = io.StringIO()

    async def send() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        good = _frames(data_dir, 7, skip={10, 11})
        other = _frames(data_dir, 8, skip=set())
        for i, b in enumerate(other):
            if i < len(good):
                sock.sendto(good[i], ("127.0.0.1", transport.port))
            sock.sendto(b, ("127.0.0.1", transport.port))
            if i % 10 == 5:
                sock.sendto(b[:-1] + bytes([b[-1] ^ 0xFF]), ("127.0.0.1", transport.port))  # CRC error
            await asyncio.sleep(0.005)
        sock.close()
        await asyncio.sleep(0.3)  # let the last datagrams be read, then end the stream
        await transport.close()

    sender = asyncio.create_task(send())
    checker = await asyncio.wait_for(watch(transport, report_s=10.0, out=out, blocks=True), timeout=30)
    await sender
    text = out.getvalue()
    assert "device 7 stream 0: signal lost" in text and "(2 frames)" in text
    assert "device 8 stream 0 seq 39 " in text and "36x2 ECG @ 360 Hz" in text
    assert "device 7 stream 0 seq 10 " not in text  # lost, never stitched in
    s7, s8 = checker.stats(7), checker.stats(8)
    assert (s7.frames, s7.gaps, s7.frames_lost) == (38, 1, 2)
    assert (s8.frames, s8.gaps, s8.frames_lost) == (40, 0, 0)
    assert transport.stats.rejected["crc"] == 4
    # CRC failures come from the socket both devices share here, so they are charged to one of them
    assert s7.n_errors + s8.n_errors == 4


@pytest.mark.parametrize(
    "source",
    [
        "bogus://x",
        "udp://127.0.0.1",
        "tcp://:80",
        "serial://",
        "ble://zz",
        "ble://name/",
        "ble://AA:BB:CC:DD:EE:FF?profile=x",
    ],
)
def test_bad_sources_are_clear_value_errors(source):
    with pytest.raises(ValueError):
        open_source(source)


def test_serial_source_that_does_not_exist():
    with pytest.raises((FileNotFoundError, ValueError)):
        open_source("serial:///dev/does-not-exist-vigil")
