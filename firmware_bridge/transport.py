"""What every transport yields: checked frames with their arrival time, and link events.

A transport (BLE, serial, UDP, TCP, replay, simulator) is an async iterator of :data:`Item`:
:class:`Received` for each frame that decoded, :class:`LinkEvent` when a link changes state. Bad
bytes never escape as exceptions: the transport counts them in :class:`TransportStats` (by reason)
and goes on. ``close()`` stops it; iteration then ends.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum

from .protocol import Frame


class LinkState(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class LinkEvent:
    """A link (a BLE device, a serial port, a TCP peer) changed state."""

    source: str
    state: LinkState
    detail: str = ""
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Received:
    """A decoded frame, where it came from and when its last byte arrived (``time.monotonic()``)."""

    frame: Frame
    source: str
    arrival: float


Item = Received | LinkEvent


@dataclass
class TransportStats:
    """Counters of one transport: bytes in, frames out, rejections by reason and by source (the
    peer address or link a rejected frame came from, so it can be charged to that device)."""

    bytes: int = 0
    frames: int = 0
    rejected: Counter = field(default_factory=Counter)
    rejected_by_source: Counter = field(default_factory=Counter)

    def reject(self, reason: str, n: int = 1, source: str = "") -> None:
        self.rejected[reason] += n
        if source:
            self.rejected_by_source[(source, reason)] += n

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


class Transport(ABC):
    """Base class: subclasses implement :meth:`items`; callers iterate with ``async for``."""

    name: str = "transport"

    def __init__(self) -> None:
        self.stats = TransportStats()
        self._closed = False

    @abstractmethod
    def items(self) -> AsyncIterator[Item]:
        """Yield frames and link events until closed."""

    def __aiter__(self) -> AsyncIterator[Item]:
        return self.items()

    async def close(self) -> None:
        """Stop the transport; iteration ends soon after."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed
