"""Serial (USB-CDC) transport: COBS-framed Vigil frames read by pyserial in a background thread.

The reader thread owns the port: it opens it, reads with a short timeout (so ``close()`` is prompt),
splits and decodes frames and hands items to the event loop with ``call_soon_threadsafe``. After any
error it closes the port and reopens it with exponential backoff, announcing each step as a
:class:`~vigil.firmware_bridge.transport.LinkEvent` (CONNECTING, CONNECTED, DISCONNECTED,
RECONNECTING, CLOSED). Bad bytes are counted in ``stats`` by reason, never raised.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import serial

from .cobs import CobsStream
from .net import QueueTransport, decode_counted
from .transport import Item, LinkState, Received


def check_port(port: str) -> None:
    """Raise for a port that cannot exist: empty name (ValueError) or missing device path
    (FileNotFoundError). URL-style pyserial ports (``loop://``) and bare names (``COM3``) pass."""
    if not isinstance(port, str) or not port:
        raise ValueError(f"serial port must be a non-empty string, got {port!r}")
    if "://" not in port and os.sep in port and not os.path.exists(port):
        raise FileNotFoundError(f"no serial device {port}")


def next_backoff(delay: float, lo: float, hi: float) -> float:
    """The delay after ``delay``: doubled, within [lo, hi]."""
    return min(max(delay * 2.0, lo), hi)


class SerialTransport(QueueTransport):
    """Read frames from serial ``port`` at ``baudrate``; reopen with backoff after errors."""

    name = "serial"

    def __init__(
        self,
        port: str,
        baudrate: int = 115_200,
        read_timeout_s: float = 0.05,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        max_frame: int = 65_536,
        max_queue: int = 4096,
    ):
        check_port(port)
        if not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError(f"baudrate must be a positive int, got {baudrate!r}")
        lo, hi = backoff_s
        if not 0 < lo <= hi:
            raise ValueError(f"backoff_s must satisfy 0 < lo <= hi, got {backoff_s!r}")
        super().__init__(max_queue)
        self.port, self.baudrate = port, baudrate
        self.read_timeout_s = float(read_timeout_s)
        self.backoff_s = (float(lo), float(hi))
        self.max_frame = int(max_frame)
        self.n_opens = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def source(self) -> str:
        return f"serial:{self.port}"

    async def start(self) -> None:
        if self._thread is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"vigil-{self.source}", daemon=True)
        self._thread.start()

    # -- reader thread

    def _post(self, item: Item | None = None, state: LinkState | None = None, detail: str = "") -> bool:
        """Hand an item or a link event to the loop; False once the loop is gone."""
        assert self._loop is not None
        try:
            if item is not None:
                self._loop.call_soon_threadsafe(self._offer, item)
            else:
                self._loop.call_soon_threadsafe(self._event, self.source, state, detail)
        except RuntimeError:  # loop closed
            self._stop.set()
            return False
        return True

    def _run(self) -> None:
        lo, hi = self.backoff_s
        delay = lo
        self._post(state=LinkState.CONNECTING)
        while not self._stop.is_set():
            try:
                port = serial.Serial(self.port, self.baudrate, timeout=self.read_timeout_s)
            except (serial.SerialException, OSError, ValueError) as e:
                self._post(state=LinkState.RECONNECTING, detail=f"open failed: {e}; retry in {delay:g} s")
                self._stop.wait(delay)
                delay = next_backoff(delay, lo, hi)
                continue
            self.n_opens += 1
            delay = lo
            self._post(state=LinkState.CONNECTED)
            try:
                self._pump(port)
                detail = "closed"
            except (serial.SerialException, OSError) as e:
                detail = f"{type(e).__name__}: {e}"
            finally:
                port.close()
            if not self._stop.is_set():
                self._post(state=LinkState.DISCONNECTED, detail=detail)
                self._stop.wait(delay)
                self._post(state=LinkState.RECONNECTING, detail=detail)

    def _pump(self, port: serial.Serial) -> None:
        """Read, split and decode until stopped or the port fails (raises)."""
        stream = CobsStream(max_block=self.max_frame + self.max_frame // 254 + 2)
        malformed = oversized = 0
        while not self._stop.is_set():
            data = port.read(max(1, port.in_waiting))
            if not data:
                continue
            arrival = time.monotonic()
            self.stats.bytes += len(data)
            blocks = stream.feed(data)
            for reason, n in (
                ("cobs", stream.n_malformed - malformed),
                ("oversized", stream.n_oversized - oversized),
            ):
                if n:
                    self.stats.reject(reason, n, source=self.source)
            malformed, oversized = stream.n_malformed, stream.n_oversized
            for block in blocks:
                frame = decode_counted(block, self.source, self.stats)
                if frame is not None and not self._post(Received(frame, self.source, arrival)):
                    return

    async def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        self._event(self.source, LinkState.CLOSED)
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)
        await super().close()
        self._finish()
