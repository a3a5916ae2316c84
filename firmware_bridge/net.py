"""Wired and Wi-Fi transports: UDP (one frame per datagram) and TCP (COBS byte streams, many peers).

UDP reads its socket directly from the event loop (``add_reader``), every datagram waiting at each
wake-up, with a large receive buffer (``rcvbuf``): asyncio's datagram endpoint reads one datagram per
loop iteration, which cannot keep up with thousands of frames a second while another thread (the
monitor's processing) holds the GIL between iterations.

Both are :class:`~vigil.firmware_bridge.transport.Transport` subclasses yielding
:class:`~vigil.firmware_bridge.transport.Received` (``arrival = time.monotonic()``) and
:class:`~vigil.firmware_bridge.transport.LinkEvent`. Bad input is counted by reason in ``stats``
(and per peer in ``peer_stats``), never raised. Call ``await start()`` to bind (``port=0`` picks a
free port, read back from ``port``); iterating starts it too.

Bounded everywhere: the item queue (UDP drops and counts ``"queue full"``; TCP applies back-pressure
to the sending peer), each TCP connection's partial-frame buffer (``max_frame`` bytes), the number
of TCP connections and of remembered UDP peers. A TCP peer that sends nothing for ``idle_timeout_s``
or ``max_bad_run`` rejected blocks in a row is disconnected; others are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from . import protocol
from .cobs import CobsStream
from .transport import Item, LinkEvent, LinkState, Received, Transport, TransportStats

_STOP = object()


def frame_error_reason(err: Exception) -> str:
    """A short counter key for a :class:`~vigil.firmware_bridge.protocol.FrameError`."""
    msg = str(err).lower()
    for key, reason in (
        ("crc", "crc"),
        ("truncated", "truncated"),
        ("length", "length"),
        ("magic", "magic"),
        ("version", "version"),
    ):
        if key in msg:
            return reason
    return "malformed"


def decode_counted(
    data: bytes, source: str, stats: TransportStats, *more: TransportStats
) -> protocol.Frame | None:
    """Decode one frame; on failure count the reason (and ``source``) in every ``stats``, return None."""
    try:
        frame = protocol.decode(data)
    except protocol.FrameError as e:
        reason = frame_error_reason(e)
        for s in (stats, *more):
            s.reject(reason, source=source)
        return None
    for s in (stats, *more):
        s.frames += 1
    return frame


class QueueTransport(Transport):
    """A transport whose producers put items on a bounded queue that :meth:`items` drains."""

    def __init__(self, max_queue: int = 4096) -> None:
        super().__init__()
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)

    def _offer(self, item: Item) -> bool:
        """Enqueue without waiting; count and drop when full."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.reject("queue full")
            return False
        return True

    def _event(self, source: str, state: LinkState, detail: str = "") -> None:
        if not self._closed:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(LinkEvent(source, state, detail))

    def _finish(self) -> None:
        """Wake :meth:`items` so iteration ends (discarding one queued item if the queue is full)."""
        while True:
            try:
                self._queue.put_nowait(_STOP)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    async def start(self) -> None:
        """Open the underlying endpoint (idempotent)."""

    async def items(self) -> AsyncIterator[Item]:
        await self.start()
        while not self._closed or not self._queue.empty():
            item = await self._queue.get()
            while True:  # then whatever else is queued, without a coroutine per item
                if item is _STOP:
                    return
                yield item
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break


class UDPTransport(QueueTransport):
    """Listen on ``host:port`` for datagrams, each exactly one Vigil frame.

    ``rcvbuf`` asks the kernel for that socket receive buffer (bytes; capped by ``net.core.rmem_max``;
    0 keeps the system default): room for the datagrams that arrive while the monitor is busy.
    ``max_batch`` bounds the datagrams read at one wake-up, so a flood cannot starve the event loop.
    """

    name = "udp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_queue: int = 4096,
        max_peers: int = 1024,
        rcvbuf: int = 4 << 20,
        max_batch: int = 1024,
    ):
        super().__init__(max_queue)
        self.host, self.port = host, int(port)
        self.max_peers = int(max_peers)
        self.rcvbuf, self.max_batch = int(rcvbuf), max(1, int(max_batch))
        self.peer_stats: OrderedDict[str, TransportStats] = OrderedDict()
        self._names: dict[tuple, str] = {}  # peer address -> source name
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def source(self) -> str:
        return f"udp:{self.host}:{self.port}"

    async def start(self) -> None:
        if self._sock is not None or self._closed:
            return
        self._event(self.source, LinkState.CONNECTING)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            if self.rcvbuf > 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.bind(addr)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock, self._loop = sock, loop
        self.port = sock.getsockname()[1]
        loop.add_reader(sock.fileno(), self._readable)
        self._event(self.source, LinkState.CONNECTED)

    def _readable(self) -> None:
        """Read every waiting datagram (at most ``max_batch``); they share one arrival time."""
        sock = self._sock
        if sock is None:
            return
        arrival = time.monotonic()
        for _ in range(self.max_batch):
            try:
                data, addr = sock.recvfrom(65_536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.stats.reject(f"socket: {type(exc).__name__}")
                return
            self._datagram(data, addr, arrival)

    def _peer(self, source: str) -> TransportStats:
        ps = self.peer_stats.get(source)
        if ps is None:
            if len(self.peer_stats) >= self.max_peers:
                self.peer_stats.popitem(last=False)
            ps = self.peer_stats[source] = TransportStats()
        else:
            self.peer_stats.move_to_end(source)
        return ps

    def _datagram(self, data: bytes, addr: tuple, arrival: float) -> None:
        source = self._names.get(addr)
        if source is None:
            if len(self._names) >= self.max_peers:
                self._names.clear()
            source = self._names[addr] = f"udp:{addr[0]}:{addr[1]}"
        peer = self._peer(source)
        self.stats.bytes += len(data)
        peer.bytes += len(data)
        try:
            frame = protocol.decode(data)
        except protocol.FrameError:  # counted by reason (and source) as decode_counted does
            decode_counted(data, source, self.stats, peer)
            return
        self.stats.frames += 1
        peer.frames += 1
        self._offer(Received(frame, source, arrival))

    async def close(self) -> None:
        if self._closed:
            return
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._event(self.source, LinkState.CLOSED)
        await super().close()
        self._finish()


class TCPTransport(QueueTransport):
    """A server on ``host:port``; every connection is a device sending COBS-framed Vigil frames."""

    name = "tcp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        max_queue: int = 4096,
        max_connections: int = 64,
        max_frame: int = 65_536,
        idle_timeout_s: float = 30.0,
        max_bad_run: int = 256,
        read_size: int = 65_536,
    ):
        super().__init__(max_queue)
        self.host, self.port = host, int(port)
        self.max_connections = int(max_connections)
        self.max_frame = int(max_frame)
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_bad_run = int(max_bad_run)
        self.read_size = int(read_size)
        self.peer_stats: dict[str, TransportStats] = {}
        self._server: asyncio.Server | None = None
        self._conns: dict[str, tuple[asyncio.Task, asyncio.StreamWriter]] = {}

    @property
    def source(self) -> str:
        return f"tcp:{self.host}:{self.port}"

    @property
    def n_connections(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        if self._server is not None or self._closed:
            return
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._event(self.source, LinkState.CONNECTED, "listening")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        source = f"tcp:{peer[0]}:{peer[1]}"
        if self._closed or len(self._conns) >= self.max_connections:
            self.stats.reject("too many connections")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns[source] = (task, writer)
        ps = self.peer_stats[source] = TransportStats()
        self._event(source, LinkState.CONNECTED)
        detail = "closed by peer"
        try:
            detail = await self._pump(reader, source, ps)
        except (ConnectionError, OSError) as e:
            detail = f"{type(e).__name__}: {e}"
        except asyncio.CancelledError:
            detail = "transport closed"
        finally:
            self._conns.pop(source, None)
            writer.close()
            self._event(source, LinkState.DISCONNECTED, detail)

    async def _pump(self, reader: asyncio.StreamReader, source: str, ps: TransportStats) -> str:
        """Read, split and decode one connection until EOF; return why it ended."""
        stream = CobsStream(max_block=self.max_frame + self.max_frame // 254 + 2)
        malformed = oversized = bad_run = 0
        while True:
            try:
                data = await asyncio.wait_for(reader.read(self.read_size), self.idle_timeout_s)
            except TimeoutError:
                return f"idle for {self.idle_timeout_s:g} s"
            if not data:
                return "closed by peer"
            arrival = time.monotonic()
            self.stats.bytes += len(data)
            ps.bytes += len(data)
            blocks = stream.feed(data)
            for reason, n in (
                ("cobs", stream.n_malformed - malformed),
                ("oversized", stream.n_oversized - oversized),
            ):
                if n:
                    self.stats.reject(reason, n, source=source)
                    ps.reject(reason, n)
                    bad_run += n
            malformed, oversized = stream.n_malformed, stream.n_oversized
            for block in blocks:
                frame = decode_counted(block, source, self.stats, ps)
                if frame is None:
                    bad_run += 1
                    continue
                bad_run = 0
                await self._queue.put(Received(frame, source, arrival))  # back-pressure this peer only
            if bad_run > self.max_bad_run:
                self.stats.reject("peer dropped")
                return f"{bad_run} bad blocks in a row"
            await asyncio.sleep(0)  # let other peers run between reads

    async def close(self) -> None:
        if self._closed:
            return
        self._event(self.source, LinkState.CLOSED)
        await super().close()
        if self._server is not None:
            self._server.close()
        tasks = [t for t, _ in self._conns.values()]
        for t, w in self._conns.values():
            w.close()
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._finish()
