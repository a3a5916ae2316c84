"""The monitor: transports -> bounded queue -> stream checks -> device sessions -> alarms -> sink.

:class:`Monitor` owns a :class:`~vigil.firmware_bridge.streams.StreamChecker`, one
:class:`~vigil.edge.session.DeviceSession` per (device, stream), the
:class:`~vigil.edge.alarms.AlarmEngine` (``config.alarms``) and an output sink: either a callable
taking each :class:`~vigil.edge.messages.Alert` and :class:`~vigil.edge.messages.Vitals`, or an
object with ``publish_alert(alert)`` and ``publish(topic, payload, priority, kind)``, and optionally
``publish_many([(topic, payload, priority, kind), ...])`` (the
:class:`~vigil.edge.publisher.MQTTPublisher`).

**Output batches.** The messages of one :meth:`Monitor.handle` (its alerts) and of one
:meth:`Monitor.tick` (alerts, then the vitals that came due) go to the sink together, alerts first:
with ``publish_many`` in one call (one outbox transaction, so every alert of the batch is committed
before any of it is published, and a thousand devices' vitals cost one commit, not a thousand);
otherwise ``publish_alert``/``publish`` (or the callable) once per message, in the same order.

* :meth:`Monitor.handle` takes one transport item (a frame or a link event) and returns the alerts
  it caused (also sent to the sink). :meth:`Monitor.tick` moves time on: ``engine.tick`` (device
  lost, delays, escalation), vitals every ``mqtt.vitals_period_s`` per device, registered models.
  A device's first vitals go out at the first tick after its first features, its second within one
  period after that at a phase of its own (from its device and stream numbers), then one per period:
  devices that connected together do not all report in the same tick.
* :meth:`Monitor.run` consumes several async transports concurrently. Each transport has its own
  pump task that only puts items into a :class:`FrameQueue`, so a slow, silent or failing
  transport stalls nobody; processing runs in a worker thread one batch at a time, so reading the
  links goes on while the kernels work.

**Time.** Session time (see :mod:`vigil.edge.session`) is on the monitor clock
(``time.monotonic()``), sample-exact per device. The monitor's now is the later of the clock and
the data clock (the lower median of the sessions' latest times), so a recording replayed faster
than real time still ages a silent device (device lost) by the time the other devices' data covers,
while one device sending more samples than its rate claims cannot make every other device look lost.

**Backpressure policy** (explicit, counted, bounded): the queue holds at most
``monitor.queue_blocks`` frames per (device, stream) and ``total_blocks`` frames in all (default
64 x ``queue_blocks``). When a put would exceed the device's bound, that device's oldest queued
frame is dropped; when it would exceed the total, the oldest frame of the device with the most
queued frames (the one furthest behind) is dropped. Producers never wait. Drops are counted per
device (:attr:`MonitorStats.dropped`). A dropped frame never reaches the stream checker, which
therefore sees a sequence gap and reports it as :class:`~vigil.firmware_bridge.streams.SignalLost`:
the session NaN-fills it, so kernels never see stitched data. Link events are never dropped. Finding
the device furthest behind costs O(1) per put while the queue is full (ties: the device that has held
that many frames longest), so an overloaded monitor is not slowed further by a scan per frame.

**Model hook.** ``set_model(kind, fn, window_s, every_s)`` registers a network for one modality
("ecg", "eeg", "emg"). Every ``every_s`` of monitor time, each group of that kind's sessions with a
full window and the same (sample rate, channels) is stacked into one float32 array
``[devices, round(window_s * fs), channels]`` (physical units, oldest sample first) and ``fn(batch,
devices)`` is called once per group; it returns one mapping per device, merged into that device's
next ``Features.model`` (keys such as :data:`~vigil.edge.alarms.MODEL_SEIZURE_PROBABILITY`).
Nothing is registered by default; a failing model is counted and logged, never fatal.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.firmware_bridge.protocol import ChannelKind
from vigil.firmware_bridge.streams import Delivered, SignalLost, StreamChecker, StreamReset
from vigil.firmware_bridge.transport import Item, LinkEvent, Received, Transport
from vigil.kernels.quality import QualityFlag

from .alarms import AlarmEngine, Features, is_lead_off
from .config import Config
from .messages import Alert, Vitals
from .networks import Networks, device_phase
from .session import DeviceSession, SessionParams, layout_of, modality_of

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (device id, stream id)
Message = Alert | Vitals
#: ``fn(batch [devices, samples, channels] float32, device names) -> one mapping per device``.
ModelFn = Callable[[np.ndarray, Sequence[str]], Sequence[Mapping[str, Any]]]
_KINDS = {"ecg": ChannelKind.ECG, "eeg": ChannelKind.EEG, "emg": ChannelKind.EMG}


@dataclass
class MonitorStats:
    """Counters since the monitor started (times in seconds of processing)."""

    frames_received: int = 0  # frames put into the queue (run) or handled directly
    frames_processed: int = 0  # frames through the stream checker
    frames_dropped: int = 0  # by backpressure, all devices
    dropped: Counter = field(default_factory=Counter)  # by backpressure, per (device, stream)
    queue_high_water: int = 0
    link_events: int = 0
    batches: int = 0
    process_s: float = 0.0  # total time in handle() (checks, kernels, alarm updates)
    ticks: int = 0
    tick_s_last: float = 0.0  # duration of the latest tick (engine, vitals, models)
    tick_s_max: float = 0.0
    alerts: int = 0
    vitals: int = 0
    session_errors: Counter = field(default_factory=Counter)  # per (device, stream)
    unsupported: Counter = field(default_factory=Counter)  # frames with no ECG/EEG/EMG channel
    model_calls: int = 0
    model_errors: int = 0
    transport_failures: Counter = field(default_factory=Counter)  # per transport name


class FrameQueue:
    """Bounded queue between transports and processing; see the module docstring for the policy."""

    def __init__(self, per_device: int, total: int, stats: MonitorStats | None = None):
        if per_device < 1 or total < 1:
            raise ValueError("queue bounds must be >= 1")
        self.per_device, self.total = int(per_device), int(total)
        self.stats = stats if stats is not None else MonitorStats()
        self._frames: dict[Key, deque[Received]] = {}
        self._events: list[LinkEvent] = []
        self._n = 0
        # while the total bound is reached: queue length -> keys of that length (in the order they got
        # there) and the longest length; built on the first total-bound drop, forgotten by take()
        self._by_len: dict[int, dict[Key, None]] | None = None
        self._longest = 0
        self.ready = asyncio.Event()
        self.room = asyncio.Event()

    def __len__(self) -> int:
        return self._n + len(self._events)

    def put(self, item: Item) -> None:
        """Queue one item; never blocks; drops (and counts) per the policy when full."""
        if isinstance(item, LinkEvent):
            self._events.append(item)
        else:
            key = (item.frame.device_id, item.frame.stream_id)
            q = self._frames.get(key)
            if q is None:
                q = self._frames[key] = deque()
            if len(q) >= self.per_device:
                self._drop(key)
            elif self._n >= self.total:
                self._drop(self._furthest_behind())
            q.append(item)
            if self._by_len is not None:
                self._relen(key, len(q) - 1, len(q))
            self._n += 1
            self.stats.frames_received += 1
            self.stats.queue_high_water = max(self.stats.queue_high_water, self._n)
        self.ready.set()

    def full_for(self, item: Item) -> bool:
        """Whether putting ``item`` now would drop a frame."""
        if isinstance(item, LinkEvent):
            return False
        q = self._frames.get((item.frame.device_id, item.frame.stream_id))
        return self._n >= self.total or (q is not None and len(q) >= self.per_device)

    async def put_wait(self, item: Item) -> None:
        """Queue one item, waiting for room instead of dropping (sources that can wait: recordings)."""
        while self.full_for(item):
            self.room.clear()
            await self.room.wait()
        self.put(item)

    def _drop(self, key: Key) -> None:
        q = self._frames[key]
        q.popleft()
        if self._by_len is not None:
            self._relen(key, len(q) + 1, len(q))
        self._n -= 1
        self.stats.frames_dropped += 1
        self.stats.dropped[key] += 1

    def _furthest_behind(self) -> Key:
        """The key with the most queued frames (ties: the first to have that many)."""
        if self._by_len is None:
            self._by_len = {}
            for k, q in self._frames.items():
                self._by_len.setdefault(len(q), {})[k] = None
            self._longest = max(self._by_len)
        return next(iter(self._by_len[self._longest]))

    def _relen(self, key: Key, old: int, new: int) -> None:
        by_len = self._by_len
        assert by_len is not None
        keys = by_len.get(old)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del by_len[old]
        by_len.setdefault(new, {})[key] = None
        if new > self._longest:
            self._longest = new
        while self._longest not in by_len:
            self._longest -= 1

    def take(self) -> tuple[list[LinkEvent], list[Received]]:
        """Everything queued: link events, then frames grouped per (device, stream) in order."""
        events, self._events = self._events, []
        frames = [r for q in self._frames.values() for r in q]
        self._frames, self._n = {}, 0
        self._by_len, self._longest = None, 0
        self.ready.clear()
        self.room.set()
        return events, frames


@dataclass
class _Model:
    fn: ModelFn
    window_s: float
    every_s: float
    last: float = -math.inf


@functools.lru_cache(maxsize=1024)
def _flag_names(flags: int) -> tuple[str, ...]:
    """Names of the :class:`QualityFlag` bits set in ``flags`` (memoised: vitals ask per device)."""
    return tuple(f.name for f in QualityFlag if f and flags & f)


def _qflag_names(flags: int) -> list[str]:
    return list(_flag_names(int(flags)))


def _phase(key: Key) -> float:
    """A fraction in (0, 1] that spreads devices' vitals over the period."""
    return 1.0 - device_phase(*key)


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


class Monitor:
    """The running monitor; see the module docstring."""

    def __init__(
        self,
        config: Config | None = None,
        sink: Callable[[Message], Any] | Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        names: Callable[[int, int], str] | None = None,
        session_params: SessionParams | None = None,
        checker: StreamChecker | None = None,
        total_blocks: int | None = None,
        networks: Networks | None = None,
    ):
        self.config = config or Config()
        self.site = self.config.monitor.site
        self.engine = AlarmEngine(self.config.alarms, site=self.site)
        self.checker = checker or StreamChecker()
        self.clock = clock
        self.names = names or (lambda dev, stream: str(dev) if stream == 0 else f"{dev}-s{stream}")
        self.session_params = session_params or SessionParams()
        self.sessions: dict[Key, DeviceSession] = {}
        self.stats = MonitorStats()
        self.tick_s = self.config.monitor.tick_s
        self.vitals_period_s = self.config.mqtt.vitals_period_s
        self.per_device_blocks = self.config.monitor.queue_blocks
        self.total_blocks = total_blocks or 64 * self.per_device_blocks
        self.links: dict[str, LinkEvent] = {}
        self._sink = sink
        self._out: list[Message] = []  # emitted, not yet handed to the sink (see _flush_out)
        self._models: dict[ChannelKind, _Model] = {}
        #: The shipped networks (:mod:`vigil.edge.networks`), fed every chunk, run once per tick.
        self.networks = networks
        self._bad_layout: dict[Key, tuple] = {}
        self._created: dict[Key, float] = {}  # arrival time of each stream's latest session
        #: A stream's layout (rate, channel kinds) may change at most once per this many seconds;
        #: frames of a new layout sooner are refused and counted (kernels are not rebuilt per frame).
        self.relayout_s = 5.0
        self._vitals_due: dict[Key, float] = {}  # monitor time of each session's next vitals
        self._frontier = -math.inf  # newest session time (a cheap trigger for data-driven ticks)
        self._arrival = -math.inf
        self._last_tick = -math.inf
        self._next_data_tick = math.inf  # no data-driven tick before the first features

    # -- outputs -------------------------------------------------------------------------

    def _emit(self, msg: Message) -> None:
        """Count ``msg`` and queue it for the sink; :meth:`_flush_out` hands the batch over."""
        if isinstance(msg, Alert):
            self.stats.alerts += 1
        else:
            self.stats.vitals += 1
        if self._sink is not None:
            self._out.append(msg)

    def _flush_out(self) -> None:
        """Hand the queued messages to the sink, alerts before vitals (module docstring)."""
        out = self._out
        if not out:
            return
        self._out = []
        alerts = [m for m in out if isinstance(m, Alert)]
        if len(alerts) != len(out):
            out = alerts + [m for m in out if not isinstance(m, Alert)]
        sink = self._sink
        if hasattr(sink, "publish_many"):
            items = [(m.topic, m.to_json(), m.priority, "alert") for m in alerts]
            items += [(m.topic, m.to_json(), None, "vitals") for m in out[len(alerts) :]]
            sink.publish_many(items)
        elif hasattr(sink, "publish_alert"):
            for m in out:
                if isinstance(m, Alert):
                    sink.publish_alert(m)
                else:
                    sink.publish(m.topic, m.to_json(), None, "vitals")
        else:
            for m in out:
                sink(m)

    def _emit_alerts(self, alerts: list[Alert]) -> list[Alert]:
        """Emit ``alerts`` and hand them to the sink now."""
        for a in alerts:
            self._emit(a)
        self._flush_out()
        return alerts

    # -- inputs --------------------------------------------------------------------------

    def now(self) -> float:
        """The monitor's now: the later of the clock and the data clock, the lower median of the
        sessions' latest times (one device claiming too many samples cannot age the others)."""
        times = sorted(s.last_time for s in self.sessions.values())
        return max(self.clock(), times[(len(times) - 1) // 2]) if times else self.clock()

    def handle(self, item: Item) -> list[Alert]:
        """Process one transport item; return (and emit) the alerts it caused."""
        t0 = time.perf_counter()
        try:
            if isinstance(item, LinkEvent):
                self.stats.link_events += 1
                self.links[item.source] = item
                return []
            self.stats.frames_processed += 1
            self._arrival = item.arrival
            alerts: list[Alert] = []
            for ev in self.checker.check(item):
                alerts += self._on_event(ev)
            return self._emit_alerts(alerts) if alerts else alerts  # nothing queued otherwise
        finally:
            self.stats.process_s += time.perf_counter() - t0

    def handle_many(self, items: Iterable[Item]) -> list[Alert]:
        out: list[Alert] = []
        for it in items:
            out += self.handle(it)
        return out

    def _on_event(self, ev: Any) -> list[Alert]:
        if isinstance(ev, Delivered):
            s = self._session_for(ev)
            return [] if s is None else self._guard(s, s.feed, ev)
        if isinstance(ev, SignalLost):
            s = self.sessions.get((ev.device, ev.stream))
            return [] if s is None else self._guard(s, s.lost, ev)
        if isinstance(ev, StreamReset):
            s = self.sessions.get((ev.device, ev.stream))
            if s is not None:
                return self._guard(s, s.reset, self._arrival)  # not the rebooted clock's say
        return []  # Duplicate, Late: counted by the checker

    def _guard(self, s: DeviceSession, fn: Callable[[Any], Any], arg: Any) -> list[Alert]:
        """Run a session step; a kernel error drops the session (counted), never the monitor."""
        try:
            feats = fn(arg)
        except ValueError as exc:
            key = (s.device, s.stream)
            self.stats.session_errors[key] += 1
            log.warning("%s: session error, restarting: %s", s.name, exc)
            self.sessions.pop(key, None)
            return []
        if feats is None:
            return []
        if self.networks is not None:
            self._feed_networks(s, feats)
        if feats.time > self._frontier:
            if self._frontier == -math.inf:  # the first features: data-driven ticks start now
                self._next_data_tick = feats.time
            self._frontier = feats.time
        return self.engine.update(s.name, feats)

    def _session_for(self, ev: Delivered) -> DeviceSession | None:
        f = ev.frame
        key = (f.device_id, f.stream_id)
        s = self.sessions.get(key)
        if s is not None and f.kinds == s.layout[1] and f.sample_rate == s.layout[0]:
            return s  # the layout_of(f) == s.layout of every frame of a running stream, without the tuple
        lay = layout_of(f)
        if s is not None and s.layout == lay:
            return s
        arrival = ev.received.arrival  # the monitor's own clock, whatever the device's says
        if self._bad_layout.get(key) == lay or (
            s is not None and arrival - self._created.get(key, -math.inf) < self.relayout_s
        ):  # a rate the kernels refuse, or layouts flipping faster than kernels should be rebuilt
            self.stats.session_errors[key] += 1
            return None
        if modality_of(f.kinds) is None:
            self.stats.unsupported[key] += 1
            return None
        start = arrival if s is None else max(arrival, s.last_time)
        try:
            new = DeviceSession(self.names(*key), f, start, self.session_params)
        except ValueError as exc:  # an absurd rate for the kernels, say
            self._bad_layout[key] = lay
            self.stats.session_errors[key] += 1
            log.warning("device %s stream %s: no session for %s: %s", *key, lay, exc)
            return None
        if s is not None:  # the layout changed: a restart of the stream
            new.resets = s.resets + 1
        model = self._models.get(new.kind)
        if model is not None:
            new.attach_ring(model.window_s)
        self.sessions[key] = new
        self._created[key] = arrival
        return new

    # -- time ----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[Alert]:
        """Advance to ``now`` (default :meth:`now`): engine tick, due models, due vitals."""
        t0 = time.perf_counter()
        now = self.now() if now is None else float(now)
        self._last_tick = max(self._last_tick, now)
        # a tick for any reason resets the data-driven trigger (see _step): one tick per tick_s
        self._next_data_tick = max(self._next_data_tick, self._frontier + self.tick_s)
        alerts = self.engine.tick(now)
        for a in alerts:
            self._emit(a)
        self._run_models(now)
        period = self.vitals_period_s
        if period > 0:
            due_at = self._vitals_due
            for key, s in list(self.sessions.items()):
                if s.features is None:
                    continue
                due = due_at.get(key)
                if due is None:  # the first: now, the next at the device's own phase
                    due_at[key] = now + period * _phase(key)
                elif now >= due:
                    due_at[key] = due + period if now - due < period else now + period
                else:
                    continue
                self._emit(self.vitals(s))
        self._flush_out()
        dt = time.perf_counter() - t0
        self.stats.ticks += 1
        self.stats.tick_s_last = dt
        self.stats.tick_s_max = max(self.stats.tick_s_max, dt)
        return alerts

    def vitals(self, s: DeviceSession) -> Vitals:
        """The schema-1 vitals payload of one session, from its latest kernel outputs."""
        f = s.features
        kw: dict[str, Any] = {}
        r = s.rhythm
        if r is not None:
            w = r.window
            kw = dict(hr_bpm=_num(f.hr_bpm), rr_ms=_num(1000 * r.rr_s), mean_rr_ms=_num(w.mean_rr_ms),
                      sdnn_ms=_num(w.sdnn_ms), rmssd_ms=_num(w.rmssd_ms), pnn50_pct=_num(w.pnn50_pct),
                      cosen=_num(w.cosen), n_rr=int(w.n_rr))  # fmt: skip
        stream = s.stream_counters()
        stream["dropped_backpressure"] = self.stats.dropped.get((s.device, s.stream), 0)
        return Vitals(
            site=self.site,
            device=s.name,
            kind=s.kind.name.lower(),
            device_time_us=int(round(f.time * 1e6)),
            quality_score=_num(f.quality_score),
            quality_flags=_qflag_names(f.quality_flags),
            lead_off=bool(f.lead_off),
            eeg=dict(s.eeg),
            emg=dict(s.emg),
            stream=stream,
            networks={k: dict(v) if isinstance(v, dict) else v for k, v in s.net_summary.items()},
            **kw,
        )

    # -- models --------------------------------------------------------------------------

    def set_model(self, kind: str, fn: ModelFn | None, window_s: float = 10.0, every_s: float = 1.0) -> None:
        """Register (or with ``fn=None`` remove) the model of one modality; see the module docstring."""
        k = _KINDS[kind.lower()]
        if fn is None:
            self._models.pop(k, None)
            for s in self.sessions.values():
                if s.kind == k:
                    s.detach_ring()
            return
        if not (window_s > 0 and every_s > 0):
            raise ValueError("window_s and every_s must be > 0")
        self._models[k] = _Model(fn, float(window_s), float(every_s))
        for s in self.sessions.values():
            if s.kind == k:
                s.attach_ring(window_s)

    def _feed_networks(self, s: DeviceSession, feats: Features) -> None:
        try:
            self.networks.feed(s, s.chunk_x, s.chunk_beats, feats.quality_score, is_lead_off(feats))
        except Exception:  # a network's preprocessing must never take the monitor down
            self.stats.model_errors += 1
            log.exception("%s: network preprocessing failed; its state restarts", s.name)
            s.net_state = {}

    def _run_models(self, now: float) -> None:
        if self.networks is not None:
            self.networks.run()
        for kind, m in self._models.items():
            if now - m.last < m.every_s:
                continue
            m.last = now
            groups: dict[tuple[float, int], list[DeviceSession]] = {}
            for s in self.sessions.values():
                if s.kind == kind and s.ring is not None and s.ring.full:
                    groups.setdefault((s.fs, len(s.channels)), []).append(s)
            for group in groups.values():
                batch = np.stack([s.ring.window() for s in group])
                self.stats.model_calls += 1
                try:
                    outs = list(m.fn(batch, [s.name for s in group]))
                    if len(outs) != len(group):
                        raise ValueError(f"model returned {len(outs)} outputs for {len(group)} devices")
                except Exception:  # a model must never take the monitor down
                    self.stats.model_errors += 1
                    log.exception("%s model failed on %d devices", kind.name, len(group))
                    continue
                for s, out in zip(group, outs, strict=True):
                    s.model_pending.update(out)

    # -- running -------------------------------------------------------------------------

    def session(self, device: int, stream: int = 0) -> DeviceSession | None:
        return self.sessions.get((device, stream))

    def _step(self, events: list[LinkEvent], frames: list[Received], tick: bool) -> None:
        """One batch (worker thread): link events, frames per device, then a tick if due."""
        self.stats.batches += 1
        self.handle_many(events)
        for r in frames:
            self.handle(r)
            if self._frontier >= self._next_data_tick:  # data faster than real time
                self._next_data_tick = self._frontier + self.tick_s
                self.tick()
        if tick or self.now() - self._last_tick >= self.tick_s:
            self.tick()

    async def _pump(self, transport: Transport, queue: FrameQueue, wait: bool) -> None:
        try:
            async for item in transport:
                if wait:
                    await queue.put_wait(item)
                else:
                    queue.put(item)
        except asyncio.CancelledError:
            raise
        except Exception:  # a failing link ends its own pump only
            self.stats.transport_failures[transport.name] += 1
            log.exception("transport %s failed", transport.name)

    async def run(
        self,
        transports: Sequence[Transport],
        seconds: float | None = None,
        lossless: Sequence[bool] | bool = False,
    ) -> MonitorStats:
        """Consume ``transports`` concurrently until they all end or ``seconds`` (wall clock) pass.

        ``lossless`` (one flag, or one per transport): that transport's pump waits for room instead of
        the queue dropping frames; only for sources that can wait (replays, simulators), never for
        live links, whose frames would then pile up in socket buffers or be lost there, uncounted.
        """
        queue = FrameQueue(self.per_device_blocks, self.total_blocks, self.stats)
        flags = [lossless] * len(transports) if isinstance(lossless, bool) else list(lossless)
        pumps = [asyncio.create_task(self._pump(t, queue, w)) for t, w in zip(transports, flags, strict=True)]
        deadline = math.inf if seconds is None else time.monotonic() + seconds
        try:
            while True:
                done = all(p.done() for p in pumps)
                left = deadline - time.monotonic()
                if left <= 0 or (done and not len(queue)):
                    break
                if not len(queue):
                    try:
                        await asyncio.wait_for(queue.ready.wait(), min(self.tick_s, left))
                    except TimeoutError:
                        pass
                events, frames = queue.take()
                await asyncio.to_thread(self._step, events, frames, False)
        finally:
            for t in transports:
                await t.close()
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        events, frames = queue.take()
        self._step(events, frames, True)
        return self.stats
