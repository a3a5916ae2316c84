"""``vigil run``: the production monitor, wired from a :class:`~vigil.edge.config.Config`.

Sources: every distinct ``[[devices]].source`` string is opened once with
:func:`~vigil.firmware_bridge.sources.open_source`. Device numbers of different sources may collide
(every ``sim://`` numbers its devices 1..N), so each transport's frames are tagged with the source's
index (device id ``index * 2**32 + device number``) before the monitor sees them.

**Device names** (what alerts, vitals and commands call a device), per source:

* one ``[[devices]]`` entry on a single-device source (``udp``, ``serial``, ``ble``, ``replay``,
  ``sim://?devices=1``): the entry's ``id``, whatever device number the frames carry;
* one entry on a multi-device source (``tcp://``, ``sim://?devices=N`` with N > 1, N defaulting to
  10): ``<id>-<device number from its frames>``, e.g. ``sim-ecg-1`` .. ``sim-ecg-4``;
* several entries with the same source string: the k-th entry (config order) names device number k;
  any other device number is ``<first id>-<device number>``.

A stream other than 0 adds ``-s<stream>``.

Sink: the durable :class:`~vigil.edge.outbox.Outbox` at ``[storage]`` always. With ``mqtt.enabled``
an :class:`~vigil.edge.publisher.MQTTPublisher` drains it (alerts and vitals, and with ``mqtt.fhir``
their HL7 FHIR copies on ``.../alert/fhir`` and ``.../vitals/fhir``) and receives commands,
which are parsed, de-duplicated by id and applied to the alarm engine in the processing thread,
between batches. Without MQTT, alerts are committed to the outbox and printed, one line each; vitals
are counted only. Replay and simulator sources run lossless (they wait for queue room). The run ends
after ``seconds``, on Ctrl-C or on SIGTERM (each a clean stop: publisher flushed, outbox closed);
when every source has ended before, the alarm engine keeps ticking (device lost, escalation) and
commands are still applied, so latched alarms can be acknowledged.

Networks: ``[models]`` names the shipped (or ``models.dir``) networks the monitor runs
(:mod:`vigil.edge.networks`: beat classes, rhythm, EEG seizure), each verified against its card; one
that is missing or refused is logged and left out, and the rule-only alarms go on. SIGHUP reloads
them between two batches; a refused model keeps the running one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import queue
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from vigil.firmware_bridge.sources import open_source
from vigil.firmware_bridge.transport import Item, Received, Transport

from .commands import Command, SeenIds
from .config import Config, DeviceConfig
from .fhir import FHIRSink
from .messages import Alert
from .networks import Networks
from .outbox import Outbox
from .pipeline import Monitor, MonitorStats
from .publisher import MQTTPublisher, TLSConfig

log = logging.getLogger(__name__)

SPAN = 2**32
"""Device numbers of one source live in ``[index * SPAN, (index + 1) * SPAN)``."""
LOSSLESS_SCHEMES = ("replay", "sim")
MULTI_DEVICE_SCHEMES = ("tcp",)


# -- sources and names -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One distinct source string and the ``[[devices]]`` entries that name it."""

    index: int
    source: str
    entries: tuple[DeviceConfig, ...]

    @property
    def scheme(self) -> str:
        return urlsplit(self.source).scheme.lower()

    @property
    def lossless(self) -> bool:
        return self.scheme in LOSSLESS_SCHEMES

    @property
    def multi_device(self) -> bool:
        if self.scheme == "sim":
            devices = parse_qs(urlsplit(self.source).query).get("devices", ["10"])[-1]
            return int(devices) > 1
        return self.scheme in MULTI_DEVICE_SCHEMES

    def name(self, number: int, stream: int) -> str:
        """The configured name of device ``number`` of this source (rules: module docstring)."""
        first = self.entries[0].id
        if len(self.entries) > 1:
            base = self.entries[number - 1].id if 1 <= number <= len(self.entries) else f"{first}-{number}"
        else:
            base = f"{first}-{number}" if self.multi_device else first
        return base if stream == 0 else f"{base}-s{stream}"


def group_sources(devices: Sequence[DeviceConfig]) -> list[Source]:
    """Distinct source strings in config order, each with its entries."""
    groups: dict[str, list[DeviceConfig]] = {}
    for dev in devices:
        groups.setdefault(dev.source, []).append(dev)
    return [Source(i, src, tuple(entries)) for i, (src, entries) in enumerate(groups.items())]


class Namer:
    """Monitor ``names`` hook: tagged device id and stream -> configured device name."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = list(sources)

    def __call__(self, device: int, stream: int) -> str:
        index, number = divmod(device, SPAN)
        return self.sources[index].name(number, stream)


class TaggedTransport(Transport):
    """Wraps a transport; frames come out with device id ``index * SPAN + device number``."""

    def __init__(self, inner: Transport, index: int) -> None:
        super().__init__()
        self.inner, self.offset = inner, index * SPAN
        self.name = inner.name
        self.stats = inner.stats

    async def items(self) -> AsyncIterator[Item]:
        async for item in self.inner:
            if isinstance(item, Received):
                frame = replace(item.frame, device_id=self.offset + item.frame.device_id)
                item = Received(frame, item.source, item.arrival)
            yield item

    async def close(self) -> None:
        await self.inner.close()
        await super().close()


def open_sources(sources: Sequence[Source]) -> list[Transport]:
    """One tagged transport per source (nothing is opened for a malformed source list)."""
    return [TaggedTransport(open_source(s.source), s.index) for s in sources]


# -- commands ----------------------------------------------------------------------------------


@dataclass
class CommandStats:
    received: int = 0
    applied: int = 0
    duplicate: int = 0
    malformed: int = 0
    events: int = 0


class CommandInbox:
    """Commands from the MQTT thread, applied later in the monitor's processing thread."""

    def __init__(self) -> None:
        self.stats = CommandStats()
        self.seen = SeenIds()
        self._queue: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()

    def submit(self, device: str, payload: bytes) -> None:
        """``MQTTPublisher.on_command`` callback (paho thread): queue only."""
        self.stats.received += 1
        self._queue.put((device, bytes(payload)))

    def drain(self, monitor: Monitor) -> list[Alert]:
        """Apply every queued command to ``monitor.engine``; never raises for a bad command."""
        out: list[Alert] = []
        while True:
            try:
                device, payload = self._queue.get_nowait()
            except queue.Empty:
                return out
            out += self._apply(monitor, device, payload)

    def _apply(self, monitor: Monitor, device: str, payload: bytes) -> list[Alert]:
        try:
            cmd = Command.from_json(payload)
            if not self.seen.add(cmd.id):
                self.stats.duplicate += 1
                return []
            events = cmd.apply(monitor.engine, device, monitor.now())
        except ValueError as exc:
            self.stats.malformed += 1
            log.warning("command for %s ignored: %s", device, exc)
            return []
        self.stats.applied += 1
        self.stats.events += len(events)
        log.info("%s %s for %s: %d events", cmd.action, cmd.alarm, device, len(events))
        return events


class RunMonitor(Monitor):
    """A :class:`Monitor` that applies queued commands at the start of every processing batch and
    runs the networks ``config.models`` names (unless ``networks`` is given); :meth:`request_reload`
    (SIGHUP in ``vigil run``) reloads them between two batches."""

    def __init__(self, *args: Any, commands: CommandInbox, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = commands
        self._reload = threading.Event()
        if self.networks is None and self.config.models.tasks():
            paced = tuple(d.id for d in self.config.devices if d.paced)
            self.networks = Networks(poor_quality=self.config.alarms.poor_signal.threshold, paced=paced)
            self.reload_models()

    def request_reload(self) -> None:
        """Reload the models at the start of the next processing batch (signal-handler safe)."""
        self._reload.set()

    def reload_models(self) -> dict[str, bool]:
        """(Re)load every configured network from ``models.dir``: task -> loaded; a refused model
        keeps the running one (see :meth:`vigil.edge.networks.Networks.load`)."""
        m = self.config.models
        if self.networks is None:
            return {}
        return self.networks.load_all(m.dir or None, m.tasks(), m.precision, m.providers, m.threads)

    def _step(self, events: list, frames: list, tick: bool) -> None:
        if self._reload.is_set():
            self._reload.clear()
            self.reload_models()
        self._emit_alerts(self.commands.drain(self))
        super()._step(events, frames, tick)

    async def idle(self, deadline: float) -> None:
        """After every source ended: keep ticking (device lost, escalation) and applying commands
        until ``deadline`` (``time.monotonic()``; inf: until cancelled)."""
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(self.tick_s, left))
            await asyncio.to_thread(self._step, [], [], True)


# -- sinks and output --------------------------------------------------------------------------


def alert_line(alert: Alert) -> str:
    """One terminal line: time, device, priority, state, message."""
    text = alert.message or alert.alarm
    return f"{alert.monitor_time}  {alert.device}  {alert.priority.value}  {alert.state.value}  {text}"


class LocalSink:
    """No broker: alerts are committed to the outbox, then printed; vitals are only counted."""

    def __init__(self, outbox: Outbox, out: TextIO) -> None:
        self.outbox, self.out = outbox, out

    def publish_alert(self, alert: Alert) -> int:
        row = self.outbox.put(alert.topic, alert.to_json(), alert.priority, "alert")
        print(alert_line(alert), file=self.out, flush=True)
        return row

    def publish(self, topic: str, payload: bytes, priority: Any, kind: str) -> None:
        pass


def stats_line(elapsed: float, s: MonitorStats, m: Monitor, c: CommandStats, sink: Any) -> str:
    """One plain-text status line."""
    line = (
        f"[{elapsed:7.1f} s] frames {s.frames_received} processed {s.frames_processed} "
        f"dropped {s.frames_dropped} | devices {len(m.sessions)} | alerts {s.alerts} vitals {s.vitals} "
        f"| queue max {s.queue_high_water} | session errors {sum(s.session_errors.values())} "
        f"| commands {c.applied} (dup {c.duplicate} malformed {c.malformed})"
    )
    if m.networks is not None:
        nets = m.networks
        line += " | nets " + " ".join(f"{t} {st.rows}" for t, st in nets.stats.items() if t in nets.nets)
        line += (
            f" (skipped {sum(nets.skipped.values())}, errors {sum(st.errors for st in nets.stats.values())})"
        )
    outbox: Outbox = sink.outbox
    line += f" | outbox pending {outbox.counts().pending}"
    if isinstance(sink, MQTTPublisher):
        line += f" | mqtt {sink.state.value}"
    return line


def _print_stats(elapsed: float, monitor: Monitor, inbox: CommandInbox, sink: Any, out: TextIO) -> None:
    print(stats_line(elapsed, monitor.stats, monitor, inbox.stats, sink), file=out, flush=True)


async def _report(monitor: Monitor, inbox: CommandInbox, sink: Any, every_s: float, out: TextIO) -> None:
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        _print_stats(time.monotonic() - t0, monitor, inbox, sink, out)


async def _run_async(
    monitor: RunMonitor,
    transports: list[Transport],
    lossless: list[bool],
    seconds: float | None,
    report: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    reporter = asyncio.create_task(report())
    deadline = math.inf if seconds is None else time.monotonic() + seconds
    try:
        await monitor.run(transports, seconds=seconds, lossless=lossless)
        if time.monotonic() < deadline:
            log.warning("every source has ended; alarms and commands go on until --seconds or Ctrl-C")
            await monitor.idle(deadline)
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)


# -- wiring --------------------------------------------------------------------------------------


def read_password(path: str) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().rstrip("\r\n")


def make_publisher(config: Config, outbox: Outbox) -> MQTTPublisher:
    """The publisher ``[mqtt]`` describes (not started)."""
    m = config.mqtt
    tls = None
    if m.tls_enabled:
        tls = TLSConfig(m.tls.ca or None, m.tls.cert or None, m.tls.key or None)
    return MQTTPublisher(
        outbox,
        m.host,
        m.port,
        site=config.monitor.site,
        monitor_id=config.monitor.name,
        client_id=config.mqtt_client_id,
        username=m.username or None,
        password=read_password(m.password_file),
        tls=tls,
        window=m.inflight,
        keepalive_s=m.keepalive_s,
        session_expiry_s=m.session_expiry_s,
    )


def open_outbox(config: Config) -> Outbox:
    path = config.storage.outbox
    path.parent.mkdir(parents=True, exist_ok=True)
    return Outbox(path, max_bytes=config.storage.max_bytes)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``systemctl stop``, ``docker stop``) ends a run as Ctrl-C does:
    sources closed, the publisher given its flush time, the outbox closed. Main thread only (Python
    delivers signals there); elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def sighup_reloads(monitor: RunMonitor) -> Iterator[None]:
    """Within the block, SIGHUP asks ``monitor`` to reload its models (where the platform has it)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        yield
        return
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: monitor.request_reload())
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def freeze_start_up() -> None:
    """Move every object alive now (modules, Numba dispatchers, kernels, models) out of the garbage
    collector's generations: they live as long as the process, and without this each full
    collection walks them all (measured by bench/capacity.py with 1,000 devices: longest
    collection pause 126 ms without, 27 ms with)."""
    gc.collect()
    gc.freeze()


def run_monitor(
    config: Config, seconds: float | None = None, report_s: float = 5.0, out: TextIO = sys.stdout
) -> CommandStats:
    """Run the monitor ``config`` describes until ``seconds``, Ctrl-C or the end of every source."""
    if not config.devices:
        raise ValueError("no [[devices]] configured; nothing to monitor")
    sources = group_sources(config.devices)
    transports = open_sources(sources)
    inbox = CommandInbox()
    outbox = open_outbox(config)
    try:
        sink: Any = make_publisher(config, outbox) if config.mqtt.enabled else LocalSink(outbox, out)
        to_monitor = FHIRSink(sink) if config.mqtt.enabled and config.mqtt.fhir else sink
        monitor = RunMonitor(config, to_monitor, names=Namer(sources), commands=inbox)
        freeze_start_up()
        if isinstance(sink, MQTTPublisher):
            sink.on_command(inbox.submit)
            sink.start()
        print(_banner(config, sources), file=out, flush=True)
        t0 = time.monotonic()
        try:
            lossless = [s.lossless for s in sources]
            report = lambda: _report(monitor, inbox, sink, report_s, out)  # noqa: E731
            with sigterm_as_interrupt(), sighup_reloads(monitor):
                asyncio.run(_run_async(monitor, transports, lossless, seconds, report))
        except KeyboardInterrupt:
            pass
        finally:
            if isinstance(sink, MQTTPublisher):
                sink.flush(2.0)
                sink.stop()
        _print_stats(time.monotonic() - t0, monitor, inbox, sink, out)
        return inbox.stats
    finally:
        outbox.close()


def _banner(config: Config, sources: Sequence[Source]) -> str:
    mqtt = config.mqtt.url if config.mqtt.enabled else "disabled (alerts stay in the outbox)"
    lines = [f"vigil run: site {config.monitor.site}, monitor {config.monitor.name}, mqtt {mqtt}"]
    lines += [f"  outbox {config.storage.outbox}"]
    for s in sources:
        ids = ", ".join(e.id for e in s.entries)
        lines.append(f"  {s.source} -> {ids}{' (lossless)' if s.lossless else ''}")
    return "\n".join(lines)
