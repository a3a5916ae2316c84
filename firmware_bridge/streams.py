"""Checking decoded frames per (device, stream): gaps, duplicates, late frames, resets, clock drift.

:class:`StreamChecker` takes each :class:`~vigil.firmware_bridge.transport.Received` in arrival order
and returns explicit events; nothing is silently stitched or silently dropped:

* :class:`Delivered` - the frame, in sequence order, with its first sample on the monitor's clock.
* :class:`SignalLost` - sequence numbers were skipped: the span from the end of the last good frame
  to the start of the next, in device microseconds, and how many frames it held.
* :class:`Duplicate` - a sequence number already delivered (dropped, counted).
* :class:`Late` - a frame older than the last delivered one that was not delivered itself.

Late-frame policy: **drop late, count, report**. The monitor's kernels need in-order samples and a
reorder buffer would delay every frame of every stream; a late frame was already announced by a
:class:`SignalLost`, so it counts both in ``frames_lost`` (the monitor never used it) and in
``late``. Every received frame is exactly one of delivered, duplicate or late.

* :class:`StreamReset` - the device rebooted: the sequence number jumped to a value whose timestamp
  is inconsistent with the stream's timeline (e.g. back to 0 with the clock restarting). The stream
  starts over; the device's clock estimate restarts if the new timestamps disagree with it.

Sequence numbers are u32 and compared modulo 2**32, so wraparound is an ordinary +1 step.

Clock: device timestamps drift against ``time.monotonic()`` and frames arrive after a one-sided,
variable delay. :class:`ClockEstimator` keeps the minimum ``arrival - device_time`` per bucket of
device time over a sliding window and fits the line under all of them that lies highest at their
mean (Moon, Skelly & Towsley 1999, the linear-programming lower-envelope skew estimator, as used for
one-way NTP/PTP-style estimation): it is an edge of the lower convex hull, insensitive to delay
spikes. The fixed part of the network delay cannot be separated from the offset, so monitor time
means "arrival with the minimum observed delay".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numba import njit

from .protocol import Frame, encoded_size
from .transport import Received

U32 = 1 << 32
HALF = 1 << 31


def seq_delta(seq: int, last: int) -> int:
    """Signed distance from ``last`` to ``seq`` modulo 2**32, in [-2**31, 2**31)."""
    return (seq - last + HALF) % U32 - HALF


def frame_bytes(frame: Frame) -> int:
    """Wire size of ``frame`` (without transport framing)."""
    shape = frame.raw.shape
    return _encoded_size(shape[1], shape[0], frame.sample_format)


@lru_cache(maxsize=256)
def _encoded_size(n_channels: int, n_samples: int, sample_format: int) -> int:
    return encoded_size(n_channels, n_samples, sample_format)


# ---------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Delivered:
    """A frame passed in sequence order; ``monitor_time`` is its first sample on the monitor clock."""

    received: Received
    monitor_time: float

    @property
    def frame(self) -> Frame:
        return self.received.frame


@dataclass(frozen=True, slots=True)
class SignalLost:
    """No samples from ``t1_us`` (end of the last good frame) to ``t2_us`` (start of the next),
    device microseconds; ``n_frames`` sequence numbers were skipped."""

    device: int
    stream: int
    t1_us: float
    t2_us: float
    n_frames: int

    @property
    def duration_us(self) -> float:
        return self.t2_us - self.t1_us


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream restarted (device reboot): sequence ``old_sequence`` was followed by ``sequence``
    with a timestamp off the old timeline."""

    device: int
    stream: int
    old_sequence: int
    sequence: int
    old_end_us: float
    timestamp_us: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A sequence number that was already delivered; the frame was dropped."""

    device: int
    stream: int
    sequence: int


@dataclass(frozen=True, slots=True)
class Late:
    """A frame ``behind`` sequence numbers older than the last delivered one; dropped."""

    device: int
    stream: int
    sequence: int
    behind: int


Event = Delivered | SignalLost | StreamReset | Duplicate | Late


# ----------------------------------------------------------------------------------------- clock


@njit(nogil=True, cache=True)
def lower_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the lower convex hull of points sorted by ``x`` (monotone chain)."""
    hull = np.empty(len(x), dtype=np.int64)
    m = 0
    for i in range(len(x)):
        while m >= 2:
            a, b = hull[m - 2], hull[m - 1]
            if (x[b] - x[a]) * (y[i] - y[a]) - (y[b] - y[a]) * (x[i] - x[a]) <= 0:
                m -= 1
            else:
                break
        hull[m] = i
        m += 1
    return hull[:m]


@njit(nogil=True, cache=True)
def _hull_edge(x, y, xm):
    """``(intercept, slope)`` of the lower-hull edge spanning ``xm`` of points sorted by ``x``.

    With hull vertices ``h`` (:func:`lower_hull`) and ``k`` the number of them at or left of ``xm``
    (clamped to [1, len(h) - 1]), the edge joins ``h[k-1]`` and ``h[k]``: slope
    ``(y_j - y_i) / (x_j - x_i)``, intercept ``y_i - slope x_i``. All x equal: ``(min y, 0)``.
    """
    n = x.shape[0]
    if n == 1 or x[n - 1] == x[0]:
        return y.min(), 0.0
    h = lower_hull(x, y)
    k = 0
    while k < h.shape[0] and x[h[k]] <= xm:
        k += 1
    k = min(max(k, 1), h.shape[0] - 1)
    i, j = h[k - 1], h[k]
    slope = (y[j] - y[i]) / (x[j] - x[i])
    return y[i] - slope * x[i], slope


def envelope_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(intercept, slope)`` of the line below every point that is highest at mean(x).

    Minimises sum(y - line) subject to line <= y; the optimum is the lower-hull edge spanning mean(x).
    """
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    c, s = _hull_edge(x, y, float(x.mean()))
    return float(c), float(s)


class ClockEstimator:
    """Offset and drift of one device clock against arrival time (``time.monotonic()`` seconds).

    Keeps the minimum ``arrival - device`` of each ``bucket_s`` of device time, for the last
    ``window`` buckets, and refits lazily when a bucket closes (so the fit lags by at most one
    bucket). ``drift_ppm`` > 0 means the device clock runs fast. The buckets live in two arrays of
    ``window`` entries, oldest first (a monitor keeps one estimator per device).
    """

    def __init__(self, bucket_s: float = 0.5, window: int = 240):
        if bucket_s <= 0 or window < 2:
            raise ValueError("bucket_s must be > 0 and window >= 2")
        self.bucket_s = float(bucket_s)
        self.window = int(window)
        self.reset()

    def reset(self) -> None:
        """Forget every observation (the device clock restarted)."""
        self._origin_us: int | None = None
        # buckets, oldest first: device time x (s) of each bucket's minimum arrival - x (s); _n in use
        # (a bucket's id is floor(x / bucket_s))
        self._x = np.zeros(self.window)
        self._y = np.zeros(self.window)
        self._n = 0
        self._last_b = 0  # id of the newest bucket, while _n > 0
        self._last_y = 0.0  # its minimum
        self._fit: tuple[float, float] | None = None
        self.n_points = 0
        self.last_device_us: int | None = None

    @property
    def ready(self) -> bool:
        return self._origin_us is not None

    def add(self, device_us: int, arrival: float) -> None:
        """Observe one frame: its device timestamp and its arrival time."""
        if self._origin_us is None:
            self._origin_us = int(device_us)
        x = (int(device_us) - self._origin_us) * 1e-6
        y = float(arrival) - x
        b = math.floor(x / self.bucket_s)
        n = self._n
        if n and self._last_b == b:
            # the open bucket's minimum: refit when it closes, so a fast stream does not refit per frame
            if y < self._last_y:
                self._x[n - 1], self._y[n - 1], self._last_y = x, y, y
                if n < 2:
                    self._fit = None
        elif not n or b > self._last_b:
            if n == self.window:  # the oldest bucket leaves the window
                for a in (self._x, self._y):
                    a[:-1] = a[1:]
                n -= 1
            self._x[n], self._y[n] = x, y
            self._n, self._last_b, self._last_y = n + 1, b, y
            self._fit = None
        else:  # an older bucket (out-of-order timestamps): merge if still in the window
            k = np.flatnonzero(np.floor(self._x[:n] / self.bucket_s) == b)
            if len(k) and y < self._y[k[0]]:
                self._x[k[0]], self._y[k[0]] = x, y
                self._fit = None
        self.n_points += 1
        self.last_device_us = int(device_us)

    def fit(self) -> tuple[float, float]:
        """``(intercept, slope)`` of ``arrival - device_s = intercept + slope * device_s``."""
        if not self._n:
            raise ValueError("no observations")
        if self._fit is None:  # the buckets are in order of x already: envelope_fit without the sort
            x, y = self._x[: self._n], self._y[: self._n]
            c, s = _hull_edge(x, y, float(x.mean()))
            self._fit = (float(c), float(s))
        return self._fit

    def to_monitor_time(self, device_us: int | float | np.ndarray) -> float | np.ndarray:
        """Monitor time (``time.monotonic()`` seconds) of device time ``device_us``; arrays work."""
        if self._origin_us is None:
            raise ValueError("no observations")
        c, s = self.fit()
        if type(device_us) is int or type(device_us) is float:  # one timestamp: the same float64 sums
            return (float(device_us) - float(self._origin_us)) * 1e-6 * (1.0 + s) + c
        x = (np.asarray(device_us, dtype=np.float64) - self._origin_us) * 1e-6
        t = x * (1.0 + s) + c
        return float(t) if t.ndim == 0 else t

    @property
    def drift_ppm(self) -> float:
        """Device clock rate against the monitor's, parts per million (0 before two buckets)."""
        if self._n < 2:
            return 0.0
        s = self.fit()[1]
        return -s / max(1.0 + s, 1e-12) * 1e6  # device rate / monitor rate - 1

    @property
    def offset_s(self) -> float:
        """Monitor time minus device time (seconds) at the latest device timestamp."""
        if self.last_device_us is None:
            return float("nan")
        return self.to_monitor_time(self.last_device_us) - self.last_device_us * 1e-6


# ----------------------------------------------------------------------------------------- state


@dataclass
class DeviceStats:
    """Counters of one device over all its streams."""

    frames: int = 0
    bytes: int = 0
    errors: Counter = field(default_factory=Counter)
    gaps: int = 0
    frames_lost: int = 0
    duplicates: int = 0
    late: int = 0
    resets: int = 0
    drift_ppm: float = 0.0
    offset_s: float = float("nan")
    last_seen: float = float("nan")

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


class _Stream:
    """Sequence state of one (device, stream): the last delivered frame and which of the ``window``
    sequence numbers up to it were delivered (bit ``k`` of ``recent``: ``last_seq - k``)."""

    __slots__ = ("last_seq", "last_ts", "last_end_us", "period_us", "recent", "window", "mask")

    def __init__(self, frame: Frame, window: int):
        self.window, self.mask = window, (1 << window) - 1
        self.restart(frame)

    def advance(self, frame: Frame, d: int) -> None:
        """Deliver ``frame``, ``d`` >= 1 sequence numbers after the last delivered one."""
        self.recent = 1 if d >= self.window else ((self.recent << d) | 1) & self.mask
        self._last(frame)

    def restart(self, frame: Frame) -> None:
        self.recent = 1
        self._last(frame)

    def delivered(self, behind: int) -> bool:
        """Whether the sequence number ``behind`` (0 .. window - 1) before the last was delivered."""
        return 0 <= behind < self.window and bool(self.recent >> behind & 1)

    def _last(self, frame: Frame) -> None:
        self.last_seq = frame.sequence
        self.last_ts = frame.timestamp_us
        self.period_us = frame.duration_us
        self.last_end_us = frame.timestamp_us + self.period_us


class StreamChecker:
    """Check frames of many devices and streams; see the module docstring for the events.

    ``window`` is how many recent sequence numbers are remembered to tell duplicates from late frames.
    A frame is off its stream's timeline (a reset) when its timestamp differs from the one its
    sequence number predicts by more than ``reset_tolerance_us`` plus half a frame per step, or when
    it is not newer than the last delivered frame yet arrived more than ``max_late_s`` after its
    estimated send time (a reboot whose new sequence and clock happen to line up with the old ones).
    Beyond ``window`` steps back a duplicate cannot be told from a late frame and counts as late.
    """

    def __init__(
        self,
        window: int = 64,
        reset_tolerance_us: float = 1e6,
        clock_bucket_s: float = 0.5,
        clock_window: int = 240,
        clock_tolerance_s: float = 1.0,
        max_late_s: float = 5.0,
    ):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = int(window)
        self.reset_tolerance_us = float(reset_tolerance_us)
        self.clock_bucket_s = clock_bucket_s
        self.clock_window = clock_window
        self.clock_tolerance_s = float(clock_tolerance_s)
        self.max_late_s = float(max_late_s)
        self._streams: dict[tuple[int, int], _Stream] = {}
        self._stats: dict[int, DeviceStats] = {}
        self._clocks: dict[int, ClockEstimator] = {}
        self._source_device: dict[str, int] = {}
        self.unattributed_errors: Counter = Counter()

    # -- accessors

    def devices(self) -> list[int]:
        return sorted(self._stats)

    def streams(self) -> list[tuple[int, int]]:
        return sorted(self._streams)

    def stats(self, device: int) -> DeviceStats:
        """Counters of ``device`` with the current drift and offset estimates."""
        st = self._stats[device]
        clock = self._clocks[device]
        if clock.ready:
            st.drift_ppm = clock.drift_ppm
            st.offset_s = clock.offset_s
        return st

    def clock(self, device: int) -> ClockEstimator:
        return self._clocks[device]

    def to_monitor_time(self, device: int, device_us: int | float | np.ndarray) -> float | np.ndarray:
        """Monitor time of ``device``'s clock reading ``device_us`` (arrays work)."""
        return self._clocks[device].to_monitor_time(device_us)

    def sample_times(self, frame: Frame) -> np.ndarray:
        """Monitor time of every sample of ``frame``, float64 [n_samples]."""
        dev_us = frame.timestamp_us + np.arange(frame.n_samples) * (1e6 / frame.sample_rate)
        return np.asarray(self.to_monitor_time(frame.device_id, dev_us))

    def record_errors(self, source: str, reason: str, n: int = 1) -> None:
        """Count ``n`` frames rejected by a transport on ``source`` (attributed to the device last seen
        there, else to :attr:`unattributed_errors`)."""
        dev = self._source_device.get(source)
        target = self._stats[dev].errors if dev is not None else self.unattributed_errors
        target[reason] += n

    # -- checking

    def check(self, received: Received) -> list[Event]:
        """Classify one received frame; return the events it causes, in order."""
        f = received.frame
        key = (f.device_id, f.stream_id)
        st = self._stats.get(f.device_id)
        if st is None:
            st = self._stats[f.device_id] = DeviceStats()
            self._clocks[f.device_id] = ClockEstimator(self.clock_bucket_s, self.clock_window)
        st.frames += 1
        st.bytes += frame_bytes(f)
        st.last_seen = received.arrival
        self._source_device[received.source] = f.device_id
        s = self._streams.get(key)
        if s is None:
            self._streams[key] = _Stream(f, self.window)
            return [self._deliver(received)]
        d = seq_delta(f.sequence, s.last_seq)
        expected = s.last_ts + d * s.period_us
        if abs(f.timestamp_us - expected) > self.reset_tolerance_us + 0.5 * abs(d) * s.period_us:
            return self._reset(received, s, st)
        if d <= 0 and self._delay(f, received.arrival) > self.max_late_s:
            return self._reset(received, s, st)
        if d == 1:
            s.advance(f, 1)
            return [self._deliver(received)]
        if d > 1:
            lost = SignalLost(f.device_id, f.stream_id, s.last_end_us, f.timestamp_us, d - 1)
            st.gaps += 1
            st.frames_lost += d - 1
            s.advance(f, d)
            return [lost, self._deliver(received)]
        if s.delivered(-d):  # one of the last ``window`` sequence numbers, delivered: a duplicate
            st.duplicates += 1
            return [Duplicate(f.device_id, f.stream_id, f.sequence)]
        st.late += 1
        return [Late(f.device_id, f.stream_id, f.sequence, -d)]

    def check_many(self, items: list[Received]) -> list[Event]:
        """:meth:`check` each item in order; the events concatenated."""
        out: list[Event] = []
        for r in items:
            out.extend(self.check(r))
        return out

    def _delay(self, f: Frame, arrival: float) -> float:
        """How long after its estimated send time a frame arrived (0 without a clock estimate)."""
        clock = self._clocks[f.device_id]
        return arrival - clock.to_monitor_time(f.timestamp_us) if clock.ready else 0.0

    def _reset(self, received: Received, s: _Stream, st: DeviceStats) -> list[Event]:
        f = received.frame
        ev = StreamReset(f.device_id, f.stream_id, s.last_seq, f.sequence, s.last_end_us, f.timestamp_us)
        st.resets += 1
        s.restart(f)
        clock = self._clocks[f.device_id]
        if (
            clock.ready
            and abs(clock.to_monitor_time(f.timestamp_us) - received.arrival) > self.clock_tolerance_s
        ):
            clock.reset()
        return [ev, self._deliver(received)]

    def _deliver(self, received: Received) -> Delivered:
        f = received.frame
        clock = self._clocks[f.device_id]
        clock.add(f.timestamp_us, received.arrival)
        t = clock.to_monitor_time(f.timestamp_us)
        return Delivered(received, t if type(t) is float else float(t))
