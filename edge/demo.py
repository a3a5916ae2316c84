"""``vigil demo``: the whole monitor on a built-in ward of simulated and recorded wearables.

Twelve devices stream into one :class:`~vigil.edge.run.RunMonitor` (the production monitor of
``vigil run``): stream checks, per-device kernels, the alarm engine, vitals, the durable outbox and,
when a broker is reachable, MQTT (commands from ``vigil alarms --ack`` included).

* Simulated (:mod:`~vigil.firmware_bridge.simulator`; caricatures for showing the pipeline, not for
  accuracy): six 250 Hz ECG patches with scripted atrial fibrillation, a pause then asystole,
  bradycardia, ventricular tachycardia, a lead-off episode and motion, and clean sinus rhythm; an
  EEG headband with a seizure; an EMG sleeve with a sustained high-amplitude burst.
* Recorded (the real records bundled in ``data/``, looped): MIT-BIH 100 (normal sinus rhythm) and
  208 (frequent PVCs, couplets), lead MLII at 360 Hz; Bonn EEG segments Z001, O001, Z001 (healthy,
  surface) then S001 (ictal, intracranial) at 173.61 Hz; UCI MYO armband sEMG, 8 channels at 1 kHz,
  rest then a fist.

Every device has a *script*: what is going on in its signal at each moment (the simulator's
episodes, the MIT-BIH rhythm annotations, the Bonn set, the UCI gesture label), shown beside what
the monitor says, so a newcomer can see each alarm come and go with its cause.

Output: on a terminal, a live view (rich) of devices, vitals, active alarms and the latest alarm
events; otherwise (or with ``--plain``) one line per alarm event and a status line every 10 s. Both
end with a per-device summary. Alarms are always committed to the local outbox first; with a
reachable broker (``--broker``; ``auto`` tries ``mqtt://127.0.0.1:1883``) the publisher drains the
outbox to it. Everything runs ``speed`` x faster than real time (default 4), so a 60 s demo covers
four minutes of signal.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import numpy as np

from vigil.firmware_bridge.protocol import ChannelKind, SampleFormat
from vigil.firmware_bridge.replay import Recording, ReplayTransport, read_wfdb
from vigil.firmware_bridge.simulator import DeviceSpec, Episode, Impairments, SimulatorTransport
from vigil.firmware_bridge.transport import Transport

from .config import Config, load_config
from .messages import AlarmState, Alert, Priority
from .outbox import Outbox
from .publisher import MQTTPublisher
from .run import CommandInbox, RunMonitor, alert_line, make_publisher, open_outbox, sigterm_as_interrupt

DATA = Path(__file__).resolve().parent.parent / "data"
AUTO_BROKER = "mqtt://127.0.0.1:1883"
#: Interval of a script: (start s, stop s, what is happening), in the device's signal time.
Span = tuple[float, float, str]


# -- the ward ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoDevice:
    """One demo device: its name, where its signal comes from, and its script."""

    device_id: int
    name: str
    kind: str  # "ecg", "eeg", "emg"
    origin: str
    script: tuple[Span, ...] = ()
    idle: str = ""  # what is happening outside the script's spans
    period_s: float = math.inf  # a looped recording's length: the script repeats

    def happening(self, t: float) -> str:
        """The script's label at signal time ``t`` (seconds since the device's first sample)."""
        if math.isfinite(self.period_s):
            t %= self.period_s
        for a, b, what in self.script:
            if a <= t < b:
                return what
        return self.idle


_EPISODE_TEXT = {
    "af": "atrial fibrillation",
    "vt": "ventricular tachycardia",
    "pause": "sinus pause",
    "asystole": "asystole",
    "brady": "bradycardia",
    "tachy": "tachycardia",
    "seizure": "seizure",
    "burst": "tonic-clonic EMG burst",
    "lead_off": "lead off",
    "motion": "motion artifact",
}


def _episode_label(e: Episode) -> str:
    text = _EPISODE_TEXT[e.kind]
    return f"{text} {e.rate_bpm:g} bpm" if e.rate_bpm else text


def simulated_ward(seed: int = 7) -> tuple[list[DeviceSpec], list[DemoDevice]]:
    """Six ECG patches, an EEG headband and an EMG sleeve with scripted episodes (signal seconds)."""
    ecg = DeviceSpec(
        kind=ChannelKind.ECG,
        fs=250.0,
        impairments=Impairments(white_noise=0.01, baseline_wander=0.05),
    )
    plan: list[tuple[str, DeviceSpec, tuple[Episode, ...]]] = [
        ("patch-af", ecg, (Episode("af", 20, 180, rate_bpm=115),)),
        ("patch-pause", ecg, (Episode("pause", 30, 3.2), Episode("asystole", 100, 10))),
        ("patch-brady", ecg, (Episode("brady", 40, 50, rate_bpm=34),)),
        ("patch-vt", ecg, (Episode("vt", 60, 30, rate_bpm=175),)),
        ("patch-leads", replace(ecg, sample_format=SampleFormat.FLOAT32),  # lead off travels as NaN
         (Episode("lead_off", 30, 20), Episode("motion", 130, 10))),
        ("patch-sinus", ecg, ()),
        ("headband", DeviceSpec(kind=ChannelKind.EEG, fs=256.0, frame_samples=32),
         (Episode("seizure", 90, 60),)),
        ("sleeve", DeviceSpec(kind=ChannelKind.EMG, fs=1000.0, frame_samples=50),
         (Episode("burst", 100, 40),)),
    ]  # fmt: skip
    rng = np.random.default_rng(seed)
    specs, devices = [], []
    for i, (name, base, episodes) in enumerate(plan, start=1):
        kind = ChannelKind(base.kind)
        seed, heart_rate = int(rng.integers(2**31)), float(rng.uniform(62, 84))
        specs.append(replace(base, episodes=episodes, device_id=i, seed=seed, heart_rate=heart_rate))
        script = tuple((e.start_s, e.stop_s, _episode_label(e)) for e in episodes)
        idle = {ChannelKind.ECG: "sinus rhythm", ChannelKind.EEG: "background", ChannelKind.EMG: "rest"}[kind]
        devices.append(DemoDevice(i, name, kind.name.lower(), "simulated", script, idle))
    return specs, devices


def _rhythm_script(rec: Recording) -> tuple[Span, ...]:
    """MIT-BIH rhythm annotations (``(N``, ``(B``, ``(AFIB`` ...) as spans of signal time."""
    a = rec.annotations
    marks = [
        (int(s), str(t).strip("(\x00 "))
        for s, t in zip(a.sample, a.aux_note, strict=True)
        if str(t).startswith("(")
    ]
    spans = []
    for k, (s, label) in enumerate(marks):
        stop = marks[k + 1][0] if k + 1 < len(marks) else len(rec.signal)
        spans.append((s / rec.fs, stop / rec.fs, _RHYTHMS.get(label, label)))
    return tuple(spans)


_RHYTHMS = {"N": "normal sinus", "B": "ventricular bigeminy", "T": "ventricular trigeminy",
            "AFIB": "atrial fibrillation", "AFL": "atrial flutter", "VT": "ventricular tachycardia",
            "SVTA": "SV tachyarrhythmia", "SBR": "sinus bradycardia", "IVR": "idioventricular"}  # fmt: skip


def bonn_recording(data: Path = DATA) -> tuple[Recording, tuple[Span, ...]]:
    """Bonn segments Z001, O001, Z001 then S001 as one 94 s EEG recording (µV), with its script."""
    parts = [("Z001", "healthy, eyes open"), ("O001", "healthy, eyes closed"), ("Z001", "healthy, eyes open"),
             ("S001", "seizure (ictal, intracranial)")]  # fmt: skip
    fs = 173.61
    x = [np.loadtxt(data / "bonn_eeg" / f"{name}.txt") for name, _ in parts]
    edges = np.cumsum([0] + [len(v) for v in x]) / fs
    script = tuple((float(edges[k]), float(edges[k + 1]), what) for k, (_, what) in enumerate(parts))
    rec = Recording("bonn", fs, np.concatenate(x)[:, None], ("EEG",), ("uV",))
    return rec, script


_GESTURES = {0: "unmarked movement", 1: "rest", 2: "fist"}


def myo_recording(data: Path = DATA) -> tuple[Recording, tuple[Span, ...]]:
    """The bundled UCI MYO slice (8 channels, 1 kHz, V -> mV) with its gesture labels as the script."""
    path = next((data / "emg_gestures_uci").glob("*.txt.gz"))
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, skiprows=1)
    fs = 1000.0
    labels = rows[:, 9].astype(int)
    change = np.flatnonzero(np.diff(labels)) + 1
    starts, stops = np.r_[0, change], np.r_[change, len(labels)]
    spans = zip(starts.tolist(), stops.tolist(), strict=True)
    script = tuple((a / fs, b / fs, _GESTURES.get(int(labels[a]), str(labels[a]))) for a, b in spans)
    names = tuple(f"EMG{k + 1}" for k in range(8))
    return Recording("myo", fs, 1000.0 * rows[:, 1:9], names, ("mV",) * 8), script


def recorded_ward(speed: float, data: Path = DATA) -> tuple[list[Transport], list[DemoDevice]]:
    """The bundled real records as four looped wearables (ids 101..104)."""
    transports: list[Transport] = []
    devices: list[DemoDevice] = []

    def add(rec: Recording, name: str, kind: ChannelKind, origin: str, script, idle: str = "") -> None:
        dev_id = 101 + len(devices)
        frame = max(1, round(rec.fs * 0.04))  # 40 ms frames, as the patches send
        transports.append(
            ReplayTransport(rec, device_id=dev_id, frame_samples=frame, speed=speed, loop=True,
                            kinds=(kind,) * rec.signal.shape[1], sample_format=SampleFormat.INT24)
        )  # fmt: skip
        devices.append(
            DemoDevice(dev_id, name, kind.name.lower(), origin, tuple(script), idle, rec.duration_s)
        )

    for number in ("100", "208"):
        rec = read_wfdb(data / "mitdb" / number, channels=[0])
        add(rec, f"mitdb-{number}", ChannelKind.ECG, f"MIT-BIH {number} (real)", _rhythm_script(rec))
    rec, script = bonn_recording(data)
    add(rec, "bonn-eeg", ChannelKind.EEG, "Bonn EEG (real)", script)
    rec, script = myo_recording(data)
    add(rec, "myo-emg", ChannelKind.EMG, "UCI MYO sEMG (real)", script)
    return transports, devices


# -- the monitor, seen from the demo -------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One device as the view shows it."""

    name: str
    kind: str
    origin: str
    happening: str
    signal_s: float
    vitals: str
    quality: str
    alarms: tuple[tuple[str, Priority, str], ...]  # (alarm, priority, note)


@dataclass
class Snapshot:
    rows: list[Row] = field(default_factory=list)
    signal_s: float = 0.0


def _network_text(s: Any) -> str:
    """What the networks said of the device: beats per class (N/S/V...), rhythm, P(seizure)."""
    n = s.net_summary
    parts = []
    if n.get("beats"):
        parts.append(
            " ".join(f"{c}{k}" for c, k in sorted(n["beats"].items(), key=lambda x: "NSVFQ".find(x[0])))
        )
    if "rhythm" in n:
        parts.append(f"rhythm {n['rhythm']} (AF {n.get('af_probability', math.nan):.2f})")
    if "seizure_probability" in n:
        parts.append(f"P(seizure) {n['seizure_probability']:.2f}")
    return ("  net: " + ", ".join(parts)) if parts else ""


def _vitals_text(s: Any) -> str:
    if s.kind == ChannelKind.ECG:
        r = s.rhythm
        if r is None:
            return "-"
        hr = s.features.hr_bpm if s.features is not None else math.nan
        w = r.window
        parts = [f"HR {hr:3.0f}" if math.isfinite(hr) else "HR  -"]
        if math.isfinite(w.sdnn_ms):
            parts.append(f"SDNN {w.sdnn_ms:3.0f} ms")
        if math.isfinite(w.cosen):
            parts.append(f"COSEn {w.cosen:+.2f}")
        return "  ".join(parts) + _network_text(s)
    if s.kind == ChannelKind.EEG:
        e = s.eeg
        if not e:
            return "-"
        return f"line length {e['line_length']:6.1f}  theta {e.get('theta', math.nan):7.1f}" + _network_text(
            s
        )
    e = s.emg
    return f"RMS {e['rms']:.3f} mV" if "rms" in e else "-"


class DemoMonitor(RunMonitor):
    """:class:`RunMonitor` that keeps a snapshot for the view after each processing step (the
    view must not read sessions and alarms while the worker thread changes them)."""

    def __init__(self, *args: Any, ward: Sequence[DemoDevice], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ward = {d.device_id: d for d in ward}
        self.snapshot = Snapshot()

    def _step(self, events: list, frames: list, tick: bool) -> None:
        super()._step(events, frames, tick)
        self.snapshot = self.take_snapshot()

    def take_snapshot(self) -> Snapshot:
        rows, now = [], self.now()
        sessions = {key[0]: s for key, s in self.sessions.items()}
        for dev in self.ward.values():
            s = sessions.get(dev.device_id)
            t = s.n / s.fs if s is not None else 0.0
            alarms = []
            for a in self.engine.active(dev.name):
                note = "latched" if not a.condition_present else ""
                note = "acknowledged" if a.acknowledged else "silenced" if a.silenced(now) else note
                alarms.append((a.alarm, a.priority, note))
            if s is None:
                vitals, quality = "waiting for data", "-"
            else:
                vitals = _vitals_text(s)
                q = s.quality_score
                quality = f"{q:.2f}" if math.isfinite(q) else "-"
            rows.append(
                Row(dev.name, dev.kind, dev.origin, dev.happening(t), t, vitals, quality, tuple(alarms))
            )
        return Snapshot(rows, max((r.signal_s for r in rows), default=0.0))


class DemoSink:
    """Alerts to the outbox (and MQTT through the publisher when there is one); every alert is
    also handed to ``on_alert`` for the terminal. Vitals go to MQTT only (nothing to keep them for)."""

    def __init__(self, outbox: Outbox, publisher: MQTTPublisher | None, on_alert: Callable[[Alert], None]):
        self.outbox, self.publisher, self.on_alert = outbox, publisher, on_alert

    def publish_alert(self, alert: Alert) -> int:
        if self.publisher is not None:
            row = self.publisher.publish_alert(alert)
        else:
            row = self.outbox.put(alert.topic, alert.to_json(), alert.priority, "alert")
        self.on_alert(alert)
        return row

    def publish(self, topic: str, payload: bytes, priority: Any, kind: str) -> None:
        if self.publisher is not None:
            self.publisher.publish(topic, payload, priority, kind)


# -- broker --------------------------------------------------------------------------------------


def broker_reachable(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connection to the broker of ``url`` opens within ``timeout_s``."""
    u = urlsplit(url)
    try:
        with socket.create_connection((u.hostname or "localhost", u.port or 1883), timeout=timeout_s):
            return True
    except OSError:
        return False


def demo_config(broker: str | None, outbox: str | None, overrides: Sequence[str] = ()) -> Config:
    """The embedded profile (site ``demo``) with MQTT at ``broker`` (None: disabled)."""
    sets = ["mqtt.enabled=false"] if broker is None else ["mqtt.enabled=true", f"mqtt.url={broker}"]
    if outbox:
        sets.append(f"storage.outbox_path={outbox}")
    return load_config(None, [*sets, "mqtt.vitals_period_s=5", *overrides])


# -- views ---------------------------------------------------------------------------------------

_STYLE = {Priority.HIGH: "bold red", Priority.MEDIUM: "yellow", Priority.LOW: "cyan"}
_STATE_STYLE = {AlarmState.RAISED: "", AlarmState.ESCALATED: "bold", AlarmState.CLEARED: "green",
                AlarmState.ACKNOWLEDGED: "green", AlarmState.SILENCED: "dim"}  # fmt: skip


@dataclass
class Status:
    """What the header line says besides the devices."""

    speed: float
    mqtt: str
    outbox: Path
    started: float = field(default_factory=time.monotonic)
    events: deque = field(default_factory=lambda: deque(maxlen=12))
    counts: Counter = field(default_factory=Counter)  # raised alarms per type


def render(snap: Snapshot, monitor: DemoMonitor, status: Status, sink: DemoSink) -> Any:
    """The live view: a header, the device table and the latest alarm events (rich renderables)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    st = monitor.stats
    pending = sink.outbox.counts().pending
    mqtt = status.mqtt if sink.publisher is None else f"{status.mqtt} ({sink.publisher.state.value})"
    head = Text.assemble(
        ("Vigil demo", "bold"),
        f"  {time.monotonic() - status.started:5.0f} s wall, {snap.signal_s:6.0f} s signal "
        f"({status.speed:g}x)"
        f"  frames {st.frames_processed}  dropped {st.frames_dropped}  alerts {st.alerts}"
        f"  outbox pending {pending}  mqtt {mqtt}",
    )
    table = Table(expand=True, header_style="bold")
    for col in (
        "device",
        "kind",
        "source",
        "what is happening (script)",
        "vitals",
        "quality",
        "active alarms",
    ):
        table.add_column(col, overflow="fold")
    for r in snap.rows:
        alarms = Text()
        for k, (name, prio, note) in enumerate(r.alarms):
            alarms.append((", " if k else "") + name + (f" ({note})" if note else ""), style=_STYLE[prio])
        table.add_row(r.name, r.kind, r.origin, r.happening, r.vitals, r.quality, alarms)
    log = Table(expand=True, show_header=True, header_style="bold", title="latest alarm events")
    for col in ("time", "device", "priority", "state", "alarm", "message"):
        log.add_column(col, no_wrap=True, overflow="ellipsis")
    for a in list(status.events)[::-1]:
        log.add_row(a.monitor_time[11:19], a.device, Text(a.priority.value, _STYLE[a.priority]),
                    Text(a.state.value, _STATE_STYLE[a.state]), a.alarm, a.message)  # fmt: skip
    hint = Text(
        "Ctrl-C stops. Acknowledge from another terminal: "
        "vigil alarms --broker URL --site demo --ack DEVICE ALARM",
        style="dim",
    )
    return Group(head, table, log, hint)


def summary_text(snap: Snapshot, monitor: DemoMonitor, status: Status, sink: DemoSink) -> str:
    """The closing summary: one line per device, then totals."""
    lines = [f"{'device':<12} {'source':<22} {'signal s':>8}  {'vitals':<38} {'quality':>7}  active alarms"]
    for r in snap.rows:
        active = ", ".join(a for a, _, _ in r.alarms) or "-"
        lines.append(
            f"{r.name:<12} {r.origin:<22} {r.signal_s:8.0f}  {r.vitals:<38} {r.quality:>7}  {active}"
        )
    st = monitor.stats
    raised = ", ".join(f"{k} {v}" for k, v in sorted(status.counts.items())) or "none"
    c = sink.outbox.counts()
    lines += [
        f"alarms raised: {raised}",
        f"frames {st.frames_processed}, dropped by backpressure {st.frames_dropped}, alert events "
        f"{st.alerts}, vitals {st.vitals}, suppressed while signal was poor: "
        f"{sum(monitor.engine.suppressed.values())}",
        f"outbox {status.outbox}: {c.pending} pending; mqtt {status.mqtt}",
    ]
    return "\n".join(lines)


# -- running ---------------------------------------------------------------------------------------


def run_demo(
    seconds: float | None = 60.0,
    speed: float = 4.0,
    broker: str | None = "auto",
    outbox: str | None = None,
    live: bool | None = None,
    out: TextIO = sys.stdout,
    overrides: Sequence[str] = (),
) -> int:
    """Run the demo ward for ``seconds`` of wall time (None: until Ctrl-C); return the exit code.

    ``broker``: an ``mqtt://HOST:PORT`` URL, ``"auto"`` (:data:`AUTO_BROKER` when reachable) or
    None (no MQTT). ``live``: the rich view (default: when ``out`` is a terminal).
    """
    if not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed must be > 0, got {speed!r}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    if broker == "auto":
        broker = AUTO_BROKER if broker_reachable(AUTO_BROKER) else None
        mqtt_text = AUTO_BROKER if broker else "no broker at " + AUTO_BROKER + " (alarms stay in the outbox)"
    else:
        mqtt_text = broker or "off (alarms stay in the outbox)"
    if broker is not None and not broker_reachable(broker):
        mqtt_text = f"{broker} not reachable now (alarms wait in the outbox; resent when it is)"
    config = demo_config(broker, outbox, overrides)
    live = out.isatty() if live is None else live
    specs, sim_devices = simulated_ward()
    rec_transports, rec_devices = recorded_ward(speed)
    ward = sim_devices + rec_devices
    by_id = {d.device_id: d.name for d in ward}
    transports: list[Transport] = [SimulatorTransport(specs, speed=speed), *rec_transports]
    box = open_outbox(config)
    status = Status(speed, mqtt_text, config.storage.outbox)

    def on_alert(alert: Alert) -> None:
        status.events.append(alert)
        if alert.state == AlarmState.RAISED:
            status.counts[alert.alarm] += 1
        if not live:
            print(alert_line(alert), file=out, flush=True)

    publisher = make_publisher(config, box) if config.mqtt.enabled else None
    sink = DemoSink(box, publisher, on_alert)
    inbox = CommandInbox()
    monitor = DemoMonitor(
        config, sink, names=lambda dev, stream: by_id.get(dev, f"device-{dev}"), commands=inbox, ward=ward
    )
    if publisher is not None:
        publisher.on_command(inbox.submit)
        publisher.start()
    if not live:
        print(f"vigil demo: {len(ward)} devices at {speed:g}x real time; mqtt {mqtt_text}; outbox "
              f"{config.storage.outbox}", file=out, flush=True)  # fmt: skip
    try:
        with sigterm_as_interrupt():
            asyncio.run(_run(monitor, transports, seconds, status, sink, live, out))
    except KeyboardInterrupt:
        pass
    finally:
        if publisher is not None:
            publisher.flush(2.0)
            publisher.stop()
        print(summary_text(monitor.take_snapshot(), monitor, status, sink), file=out, flush=True)
        box.close()
    return 0


async def _run(
    monitor: DemoMonitor,
    transports: list[Transport],
    seconds: float | None,
    status: Status,
    sink: DemoSink,
    live: bool,
    out: TextIO,
) -> None:
    lossless = [True] * len(transports)
    if live:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=out)
        with Live(console=console, refresh_per_second=4, transient=False) as view:

            async def refresh() -> None:
                while True:
                    view.update(render(monitor.snapshot, monitor, status, sink))
                    await asyncio.sleep(0.25)

            task = asyncio.create_task(refresh())
            try:
                await monitor.run(transports, seconds=seconds, lossless=lossless)
            finally:
                task.cancel()
        return

    async def report() -> None:
        while True:
            await asyncio.sleep(10.0)
            snap, st = monitor.snapshot, monitor.stats
            active = sum(len(r.alarms) for r in snap.rows)
            print(f"[{time.monotonic() - status.started:5.0f} s wall, {snap.signal_s:5.0f} s signal] "
                  f"frames {st.frames_processed} dropped {st.frames_dropped} | alert events {st.alerts} "
                  f"| active alarms {active} | outbox pending {sink.outbox.counts().pending}",
                  file=out, flush=True)  # fmt: skip

    task = asyncio.create_task(report())
    try:
        await monitor.run(transports, seconds=seconds, lossless=lossless)
    finally:
        task.cancel()
