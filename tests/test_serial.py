"""SerialTransport over a pseudo-terminal pair: COBS frames written to the master arrive decoded."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from vigil.firmware_bridge import cobs, protocol
from vigil.firmware_bridge.protocol import make_frame
from vigil.firmware_bridge.serial_port import SerialTransport, next_backoff
from vigil.firmware_bridge.transport import LinkEvent, LinkState, Received

TIMEOUT = 5.0


@pytest.fixture
def pty_pair():
    """(master fd, slave device path), the slave in raw mode; skipped where ptys are unavailable."""
    try:
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
    except (OSError, AttributeError, ImportError) as e:
        pytest.skip(f"pseudo-terminals unavailable: {e}")
    yield master, path
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def frames(n: int) -> list[protocol.Frame]:
    rng = np.random.default_rng(3)
    return [
        make_frame(5, i, i * 40_000, 500.0, rng.integers(-3000, 3000, (20, 3)).astype(np.int16))
        for i in range(n)
    ]


async def until(it, pred, timeout: float = TIMEOUT):
    """Items up to and including the first that satisfies ``pred``."""
    out = []
    async with asyncio.timeout(timeout):
        while True:
            item = await anext(it)
            out.append(item)
            if pred(item):
                return out


def test_missing_port_and_bad_arguments():
    with pytest.raises(FileNotFoundError):
        SerialTransport("/dev/does-not-exist-vigil", 115_200)
    with pytest.raises(ValueError):
        SerialTransport("", 115_200)
    with pytest.raises(ValueError):
        SerialTransport("/dev/null", 0)
    assert next_backoff(0.1, 0.1, 1.0) == 0.2 and next_backoff(0.8, 0.1, 1.0) == 1.0


async def test_frames_over_pty_with_garbage(pty_pair):
    master, path = pty_pair
    t = SerialTransport(path, 115_200)
    it = t.items()
    try:
        await until(it, lambda x: isinstance(x, LinkEvent) and x.state == LinkState.CONNECTED)
        sent = frames(40)
        good = protocol.encode(sent[0])
        flipped = bytearray(good)
        flipped[50] ^= 0x01
        garbage = [b"\x13\x11noise\x00", cobs.encode(bytes(flipped)), cobs.encode(good[:-3]), b"\x02\x00"]
        for i, f in enumerate(sent):
            os.write(master, cobs.encode(protocol.encode(f)))
            if i % 10 == 5:
                os.write(master, garbage[(i // 10) % len(garbage)])
        got = await until(it, lambda x: isinstance(x, Received) and x.frame.sequence == len(sent) - 1)
        rx = [x for x in got if isinstance(x, Received)]
        assert [r.frame for r in rx] == sent
        assert all(r.source == f"serial:{path}" for r in rx)
        assert t.stats.frames == len(sent)
        assert t.stats.rejected == {"cobs": 2, "crc": 1, "length": 1}
    finally:
        await asyncio.wait_for(t.close(), TIMEOUT)
    async with asyncio.timeout(TIMEOUT):
        rest = [x async for x in it]
    assert rest and rest[-1].state == LinkState.CLOSED


async def test_port_failure_reconnects(pty_pair):
    master, path = pty_pair
    t = SerialTransport(path, 115_200, backoff_s=(0.05, 0.2))
    it = t.items()
    try:
        await until(it, lambda x: isinstance(x, LinkEvent) and x.state == LinkState.CONNECTED)
        os.write(master, cobs.encode(protocol.encode(frames(1)[0])))
        await until(it, lambda x: isinstance(x, Received))
        os.close(master)  # the device goes away: reads fail
        events = await until(it, lambda x: isinstance(x, LinkEvent) and x.state == LinkState.RECONNECTING)
        assert any(e.state == LinkState.DISCONNECTED for e in events)
    finally:
        await asyncio.wait_for(t.close(), TIMEOUT)
    assert t.n_opens >= 1
