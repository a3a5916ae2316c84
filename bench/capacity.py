"""Monitor capacity: how many 250 Hz ECG wearables one core keeps in real time, end to end.

Four processes, nothing outside 127.0.0.1 (all read the same system-wide ``time.monotonic()``):

* **monitor**, pinned to one core (``--cpu``, default the last allowed CPU): the wiring of ``vigil run``,
  a :class:`~vigil.firmware_bridge.net.UDPTransport` -> :class:`~vigil.edge.run.RunMonitor` (stream
  checks, filters, QRS, rhythm features, quality, the shipped networks unless ``--no-networks``: a
  class per beat, a rhythm label per 10 s; alarm rules, vitals every 1 s) -> the durable
  :class:`~vigil.edge.outbox.Outbox` -> :class:`~vigil.edge.publisher.MQTTPublisher`. All the monitor
  does is on that core and counted: reading and decoding datagrams, processing, SQLite commits, the
  publisher's sender and paho network threads. Before t0 it loads its kernels once (Numba caches), as a
  monitor started before its devices does. Its one addition is a sampler (once a second: lag over the
  sessions, CPU time, RSS; about 1 ms a second).
* **load generator** (a separate process on the other cores, so its cost is not the monitor's): N
  single-lead ECG devices of :class:`~vigil.firmware_bridge.simulator.SimulatorTransport`
  (``--frame-samples`` samples per frame, 25 by default: 100 ms frames, 10 a second per device),
  generated ahead in a thread, encoded to Vigil frames and sent as UDP datagrams, each when its last
  sample exists (t0 + its signal time), from one socket per ``--per-socket`` devices (gateways). How late
  it sent is printed.
* **subscriber** (other cores): paho-mqtt, QoS 1, on ``vigil/<site>/+/alert`` and ``+/vitals``,
  time-stamping every message as it arrives.
* **mosquitto** (other cores) on a free loopback port.

**Real time**: frames sent, received, processed and lost (backpressure drops, the transport's full
queue, the socket's own drops from ``/proc/net/udp``, sent minus processed); lag, the wall clock minus
the signal time of each device's newest processed frame (t0 + frames x frame length; max and median over
devices, sampled every second); CPU of the monitor process (user + system, every thread) over wall time,
and how busy its core was with other processes (a shared machine shows here). The verdict is "keeps real
time" iff no frame was lost anywhere and the lag stayed under ``--max-lag``. ``--find-max`` runs ``-n``,
``-n`` + ``--step``, ... devices (fresh processes each) until a run falls behind, and reports the largest
that did not.

**Alarm latency**: ``--episodes`` of the devices (5 %) get one episode each, in turn asystole (8 s),
tachycardia (170 bpm, 20 s) and bradycardia (35 bpm, 20 s), starting between 10 s and ``--seconds`` - 25 s
of signal. Latency is the arrival of the alarm's first RAISED alert at the subscriber minus the onset
(t0 + onset in signal time): p50/p99 per alarm beside its configured condition delay and threshold.
"Beyond the rule" also subtracts the time the signal took to meet the threshold (from the simulator's
ground-truth beats: last beat + threshold for asystole and pause, the first beat whose RR interval is
past the limit for tachycardia and bradycardia) and the condition delay: what is left is the pipeline's
own share (QRS report delay, chunking, alarm engine, outbox, MQTT).

**Memory**: the monitor's RSS (``/proc/self/status`` VmRSS), printed every ``--rss-every`` seconds;
means of the first and the last minute; least-squares slope (MB/min) after the first minute (after the
first quarter of runs under 4 minutes). Flat iff the slope is at most ``--max-slope``, judged on runs of
5 minutes or more.

Examples::

    .venv/bin/python bench/capacity.py                        # 1,000 devices for 60 s
    .venv/bin/python bench/capacity.py --find-max             # 1,000, 1,500, ... until one falls behind
    .venv/bin/python bench/capacity.py --seconds 600          # the 10-minute memory run
    .venv/bin/python bench/capacity.py -n 400 --frame-samples 10 --find-max --step 100
    .venv/bin/python bench/capacity.py -n 300 --seconds 30 --profile cpu.txt   # needs yappi
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import math
import multiprocessing as mp
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

SITE = "bench"
FS = 250.0
#: (simulator episode kind, rate bpm, duration s), in turn, for the devices with an episode.
EPISODES = (("asystole", 0.0, 8.0), ("tachy", 170.0, 20.0), ("brady", 35.0, 20.0))
#: The alarms each episode must raise.
EXPECTED = {"asystole": ("asystole", "pause"), "tachy": ("tachycardia",), "brady": ("bradycardia",)}
FLOOR_DEVICES = 1000
FLOOR_RSS_MB = 256.0
LEAD_S = 1.0  # t0 is this long after every process is ready
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: What the monitor's sampler records once a second.
SAMPLE_COLUMNS = ("t", "cpu", "core_busy", "core_total", "rss", "lag_max", "lag_p50", "socket_drops")


@dataclass(frozen=True)
class Options:
    devices: int = 1000
    seconds: float = 60.0
    frame_samples: int = 25
    seed: int = 1
    episodes: float = 0.05
    cpu: int | None = None  # None: the last allowed CPU; -1: no pinning
    per_socket: int = 50
    drain_s: float = 5.0  # the monitor runs this long after the last frame is due
    max_lag_s: float = 1.0
    max_slope: float = 0.2  # MB/min
    rss_every_s: float = 10.0
    progress: bool = True
    profile: str = ""  # write the monitor's CPU profile (yappi) to this path
    gc_freeze: bool = True  # gc.freeze() after start-up, as vigil run does (False: the experiment without)
    networks: bool = True  # the shipped networks, as vigil run loads them ([models])


# -- helpers ------------------------------------------------------------------------------------


def cpu_split(cpu: int | None) -> tuple[set[int] | None, set[int] | None]:
    """(the monitor's CPUs, everyone else's); (None, None) without pinning (or with one CPU)."""
    allowed = sorted(os.sched_getaffinity(0))
    if cpu == -1 or len(allowed) < 2:
        return None, None
    mon = allowed[-1] if cpu is None else cpu
    if mon not in allowed:
        raise SystemExit(f"--cpu {mon} is not one of the allowed CPUs {allowed}")
    return {mon}, set(allowed) - {mon}


def pin(cpus: set[int] | None, pid: int = 0) -> None:
    if cpus:
        os.sched_setaffinity(pid, cpus)


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return math.nan


def udp_socket_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP socket bound to ``port`` (its receive buffer was full)."""
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 12 and int(parts[1].rsplit(":", 1)[1], 16) == port:
                total += int(parts[-1])
    return total


def core_ticks(cpus: set[int] | None) -> tuple[float, float]:
    """(busy, total) jiffies of ``cpus`` (every CPU when None), from /proc/stat."""
    busy = total = 0.0
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if not name.startswith("cpu") or name == "cpu" or (cpus and int(name[3:]) not in cpus):
                continue
            v = [float(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(v)
            busy += sum(v) - v[3] - v[4]
    return busy, total


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def percentile(values: Any, q: float) -> float:
    a = np.asarray(values, dtype=np.float64)
    return float(np.percentile(a, q)) if len(a) else math.nan


def make_specs(opts: Options) -> list:
    """The fleet: ``opts.devices`` ECG devices (ids 1..N), ``opts.episodes`` of them with an episode."""
    from vigil.firmware_bridge.protocol import ChannelKind
    from vigil.firmware_bridge.simulator import DeviceSpec, Episode, make_devices

    base = DeviceSpec(kind=ChannelKind.ECG, fs=FS, frame_samples=opts.frame_samples)
    specs = make_devices(opts.devices, base, seed=opts.seed)
    n_ep = int(round(opts.episodes * opts.devices))
    if n_ep == 0 or opts.seconds < 40:
        return specs
    rng = np.random.default_rng(opts.seed + 7)
    rows = rng.choice(opts.devices, n_ep, replace=False)
    onsets = rng.uniform(10.0, opts.seconds - 25.0, n_ep)
    for i, (row, onset) in enumerate(zip(rows.tolist(), onsets.tolist(), strict=True)):
        kind, rate, dur = EPISODES[i % len(EPISODES)]
        specs[row] = replace(specs[row], episodes=(Episode(kind, round(onset, 3), dur, rate_bpm=rate),))
    return specs


def device_name(device: int, stream: int = 0) -> str:
    return f"ecg{device}" if stream == 0 else f"ecg{device}-s{stream}"


def _expect(conn: Any, what: str, timeout: float, procs: list) -> Any:
    """The next message on ``conn``; an error when a process died, reported one or time ran out."""
    deadline = time.monotonic() + timeout
    while not conn.poll(0.2):
        dead = [p.name for p in procs if not p.is_alive()]
        if dead or time.monotonic() > deadline:
            why = f"exited: {', '.join(dead)}" if dead else "timed out"
            raise RuntimeError(f"waiting for {what}: {why}")
    msg = conn.recv()
    if isinstance(msg, dict) and "error" in msg:
        raise RuntimeError(f"{what}: {msg['error']}")
    return msg


# -- broker -------------------------------------------------------------------------------------


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


class Broker:
    """A private mosquitto on a free 127.0.0.1 port (as tests/broker.py does), on ``cpus``; its
    in-flight and queue limits are those of deploy/mosquitto/mosquitto.conf."""

    def __init__(self, workdir: Path, cpus: set[int] | None):
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto not found (apt-get install mosquitto)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "max_inflight_messages 100\nmax_queued_messages 100000\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        pin(cpus, self.proc.pid)
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- load generator (other cores) ---------------------------------------------------------------


def _generator(conn: Any, opts: Options, udp_port: int, cpus: set[int] | None) -> None:
    try:
        pin(cpus)
        _generate(conn, opts, udp_port)
    except BaseException as exc:  # report it rather than leave the parent waiting
        conn.send({"error": f"generator: {type(exc).__name__}: {exc}"})
        raise


def _generate(conn: Any, opts: Options, udp_port: int) -> None:
    from vigil.firmware_bridge.protocol import encode
    from vigil.firmware_bridge.simulator import SimulatorTransport
    from vigil.firmware_bridge.transport import Received

    specs = make_specs(opts)
    sim = SimulatorTransport(specs, speed=0, duration_s=opts.seconds, block_s=1.0)
    index = {s.device_id: i for i, s in enumerate(specs)}
    start_us = [s.start_us for s in specs]
    chunks: queue.Queue = queue.Queue(maxsize=8)  # a quarter second each: at most 2 s generated ahead
    per_chunk = max(1, opts.devices * int(FS) // opts.frame_samples // 4)

    def produce() -> None:
        async def go() -> None:
            due: list[float] = []  # signal time at which each frame's last sample exists
            rows: list[int] = []
            data: list[bytes] = []
            async for item in sim:
                if not isinstance(item, Received):
                    continue
                f = item.frame
                r = index[f.device_id]
                due.append((f.timestamp_us - start_us[r]) * 1e-6 + f.n_samples / FS)
                rows.append(r)
                data.append(encode(f))
                if len(data) >= per_chunk:
                    chunks.put((due, rows, data))
                    due, rows, data = [], [], []
            chunks.put((due, rows, data))
            chunks.put(None)

        asyncio.run(go())

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    while chunks.qsize() < 4 and producer.is_alive():  # a head start before t0
        time.sleep(0.05)
    n_sock = max(1, -(-opts.devices // opts.per_socket))
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n_sock)]
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    addr = ("127.0.0.1", udp_port)
    conn.send("ready")
    t0 = conn.recv()
    sent = 0
    late = array.array("d")
    errors = 0
    while (chunk := chunks.get()) is not None:
        for d, r, b in zip(*chunk, strict=True):
            wait = t0 + d - time.monotonic()
            if wait > 0.0005:
                time.sleep(wait)
            try:
                socks[r // opts.per_socket].sendto(b, addr)
            except OSError:
                errors += 1
                continue
            sent += 1
            late.append(time.monotonic() - t0 - d)
    for s in socks:
        s.close()
    truth = {}
    for s in specs:
        if s.episodes:
            g = sim.truth(s.device_id)
            truth[s.device_id] = (g.beat_samples / g.fs).tolist()
    lat = np.frombuffer(late)
    conn.send(
        {
            "sent": sent,
            "send_errors": errors,
            "late_p50": percentile(lat, 50),
            "late_p99": percentile(lat, 99),
            "late_max": float(lat.max()) if len(lat) else math.nan,
            "truth": truth,
            "sockets": n_sock,
        }
    )


# -- subscriber (other cores) -------------------------------------------------------------------


def _subscriber(conn: Any, port: int, cpus: set[int] | None) -> None:
    try:
        pin(cpus)
        _subscribe(conn, port)
    except BaseException as exc:
        conn.send({"error": f"subscriber: {type(exc).__name__}: {exc}"})
        raise


def _subscribe(conn: Any, port: int) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    alerts: list[tuple] = []  # (arrival, device, alarm, state)
    vitals_at = array.array("d")  # arrival of each vitals message
    vitals_age = array.array("d")  # its arrival minus its device time (on the monitor's clock)
    vitals_devices: set[str] = set()
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        t = time.monotonic()
        d = json.loads(msg.payload)
        if msg.topic.endswith("/alert"):
            alerts.append((t, d["device"], d["alarm"], d["state"]))
        else:
            vitals_at.append(t)
            vitals_age.append(t - d["device_time_us"] * 1e-6)
            vitals_devices.add(d["device"])

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="capacity-subscriber", protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(
        [(f"vigil/{SITE}/+/alert", 1), (f"vigil/{SITE}/+/vitals", 1)]
    )
    c.on_subscribe = lambda cl, u, mid, rcs, p: subscribed.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not subscribed.wait(20):
        raise RuntimeError("did not subscribe")
    conn.send("ready")
    conn.recv()  # stop
    c.disconnect()
    c.loop_stop()
    conn.send(
        {
            "alerts": alerts,
            "vitals_at": np.frombuffer(vitals_at),
            "vitals_age": np.frombuffer(vitals_age),
            "vitals_devices": len(vitals_devices),
        }
    )


# -- monitor (its own core) ---------------------------------------------------------------------


def _monitor(conn: Any, opts: Options, broker_port: int, workdir: str, cpus: set[int] | None) -> None:
    try:
        pin(cpus)
        if opts.profile:
            _profiled(conn, opts, broker_port, Path(workdir))
        else:
            _monitor_main(conn, opts, broker_port, Path(workdir))
    except BaseException as exc:
        conn.send({"error": f"monitor: {type(exc).__name__}: {exc}"})
        raise


def _profiled(conn: Any, opts: Options, broker_port: int, workdir: Path) -> None:
    """:func:`_monitor_main` under yappi (CPU time per function, every thread); slow, for finding
    what to speed up, not for the numbers."""
    import yappi

    yappi.set_clock_type("cpu")
    yappi.start()
    try:
        _monitor_main(conn, opts, broker_port, workdir)
    finally:
        yappi.stop()
        stats = sorted(yappi.get_func_stats(), key=lambda f: -f.tsub)
        total = sum(f.tsub for f in stats) or 1.0
        with open(opts.profile, "w") as out:
            out.write("own %   own s   total s      calls  function\n")
            for f in stats[:100]:
                where = f"{Path(f.module).name}:{f.lineno} {f.name}"
                out.write(f"{100 * f.tsub / total:5.1f} {f.tsub:7.3f} {f.ttot:9.3f} {f.ncall:10d}  {where}\n")


def _warm_up() -> None:
    """Load every kernel once (Numba caches), as a monitor that starts before its devices does."""
    from vigil.edge.pipeline import Monitor
    from vigil.firmware_bridge.protocol import ChannelKind, decode, encode, make_frame
    from vigil.firmware_bridge.transport import Received

    m = Monitor(None, None, names=device_name)
    x = (np.sin(np.arange(2500) / 20) * 1000).astype(np.int16)
    for k in range(0, 2500, 25):
        f = make_frame(1, k // 25, 1_000_000 + k * 4000, FS, x[k : k + 25], kinds=(ChannelKind.ECG,))
        m.handle(Received(decode(encode(f)), "warm-up", 1.0 + k / FS))
    m.tick()


def _monitor_main(conn: Any, opts: Options, broker_port: int, workdir: Path) -> None:
    from vigil.edge.config import config_from_dict
    from vigil.edge.run import CommandInbox, RunMonitor, freeze_start_up, make_publisher, open_outbox
    from vigil.firmware_bridge.net import UDPTransport

    mon_cpus = None if opts.cpu == -1 else os.sched_getaffinity(0)
    _warm_up()
    config = config_from_dict(
        {
            "monitor": {"site": SITE, "id": "capacity"},
            "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "vitals_period_s": 1.0},
            "storage": {"outbox_path": str(workdir / "outbox.db")},
            "models": {"enabled": opts.networks, "providers": "cpu"},
        }
    )
    outbox = open_outbox(config)
    pub = make_publisher(config, outbox)
    inbox = CommandInbox()
    pub.on_command(inbox.submit)
    pub.start()
    if not pub.wait_connected(20):
        raise RuntimeError("publisher did not connect")
    monitor = RunMonitor(config, pub, names=device_name, commands=inbox)
    if opts.gc_freeze:
        freeze_start_up()  # as vigil run does
    ids = range(1, opts.devices + 1)  # make_devices numbers them so (no simulator import here)
    frame_s = opts.frame_samples / FS
    # fixed-size bookkeeping only, so that the bench adds nothing to the RSS it measures over time
    store = array.array("d")  # SAMPLE_COLUMNS, one row a second
    gc_count, gc_longest, gc_start = [0, 0, 0], [0.0, 0.0, 0.0], [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            g = info["generation"]
            gc_count[g] += 1
            gc_longest[g] = max(gc_longest[g], time.perf_counter() - gc_start[0])

    gc.callbacks.append(on_gc)

    async def sample(udp: UDPTransport, t0: float) -> None:
        next_t, last_print = t0 + 1.0, t0
        while True:
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            now = time.monotonic()
            next_t += 1.0
            sessions = monitor.sessions
            lag = np.array([now - t0 - (s.frames * frame_s if s else 0.0) for s in map(sessions.get, keys)])
            busy, total = core_ticks(mon_cpus)
            st = monitor.stats
            values = (now - t0, cpu_seconds(), busy / CLK_TCK, total / CLK_TCK, rss_mb(),
                      float(lag.max()), float(np.median(lag)), udp_socket_drops(udp.port))  # fmt: skip
            store.extend(values)
            row = dict(zip(SAMPLE_COLUMNS, values, strict=True))
            if opts.progress and now - last_print >= opts.rss_every_s - 0.5:
                last_print = now
                print(
                    f"  [{row['t']:5.0f} s] processed {st.frames_processed:,}, dropped {st.frames_dropped} "
                    f"(queue full {udp.stats.n_rejected}, socket {row['socket_drops']}) | lag max "
                    f"{row['lag_max']:.2f} s | alerts {st.alerts}, vitals {st.vitals} | "
                    f"RSS {row['rss']:.0f} MB",
                    flush=True,
                )

    keys = [(d, 0) for d in ids]

    async def main() -> dict[str, Any]:
        udp = UDPTransport("127.0.0.1", 0)
        await udp.start()
        conn.send({"port": udp.port, "rss_ready": rss_mb(), "pid": os.getpid()})
        t0 = await asyncio.to_thread(conn.recv)
        sampler = asyncio.create_task(sample(udp, t0))
        wall0 = time.monotonic()
        await monitor.run([udp], seconds=t0 + opts.seconds + opts.drain_s - time.monotonic())
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        drops = int(store[-1]) if store else 0  # the last column: socket drops
        return {
            "t0": t0,
            "wall_total": time.monotonic() - wall0,
            "udp_frames": udp.stats.frames,
            "queue_full": udp.stats.n_rejected,
            "socket_drops": drops,
        }

    res = asyncio.run(main())
    pub.flush(30)
    acked = pub.stats().acked
    counts = outbox.counts()
    pub.stop()
    outbox.close()
    st = monitor.stats
    k = len(SAMPLE_COLUMNS)
    res.update(
        samples=[dict(zip(SAMPLE_COLUMNS, store[i : i + k], strict=True)) for i in range(0, len(store), k)],
        frames_processed=st.frames_processed,
        frames_dropped=st.frames_dropped,
        queue_high_water=st.queue_high_water,
        batches=st.batches,
        process_s=st.process_s,
        ticks=st.ticks,
        tick_s_max=st.tick_s_max,
        session_errors=sum(st.session_errors.values()),
        acked=acked,
        outbox_pending=counts.pending,
        outbox_dropped=counts.dropped_total,
        rss_end=rss_mb(),
        gc={g: (gc_count[g], gc_longest[g]) for g in (0, 1, 2)},
        networks=monitor.networks.summary() if monitor.networks is not None else {},
    )
    conn.send(res)


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Result:
    """What the processes reported, and the numbers derived from it."""

    opts: Options
    mon_cpus: set[int] | None
    other_cpus: set[int] | None
    gen: dict[str, Any]
    mon: dict[str, Any]
    sub: dict[str, Any]
    episodes: dict[int, tuple[str, float]] = field(default_factory=dict)

    # real time

    @property
    def lost(self) -> int:
        return self.gen["sent"] - self.mon["frames_processed"]

    @property
    def stream_samples(self) -> list[dict[str, Any]]:
        """Samples from 1 s after t0 to the last frame (the drain after it excluded)."""
        return [r for r in self.mon["samples"] if 1.0 <= r["t"] <= self.opts.seconds + 0.5]

    @property
    def lag_max(self) -> float:
        return max((r["lag_max"] for r in self.stream_samples), default=math.nan)

    @property
    def lag_p50(self) -> float:
        s = self.stream_samples
        return float(np.median([r["lag_p50"] for r in s])) if s else math.nan

    @property
    def cpu_pct(self) -> float:
        """CPU time of the monitor process while the devices stream, % of one core."""
        s = self.stream_samples
        if len(s) < 2:
            return math.nan
        return 100.0 * (s[-1]["cpu"] - s[0]["cpu"]) / (s[-1]["t"] - s[0]["t"])

    @property
    def core_pct(self) -> tuple[float, float]:
        """(% of the monitor's core busy with anything, % busy with other processes)."""
        s = self.stream_samples
        total = s[-1]["core_total"] - s[0]["core_total"] if len(s) > 1 else 0.0
        if total <= 0:
            return math.nan, math.nan
        busy = 100 * (s[-1]["core_busy"] - s[0]["core_busy"]) / total
        n = len(self.mon_cpus) if self.mon_cpus else os.cpu_count() or 1
        return busy, max(0.0, busy - self.cpu_pct / n)

    @property
    def keeps_real_time(self) -> bool:
        m = self.mon
        lossless = m["frames_dropped"] == m["queue_full"] == m["socket_drops"] == self.lost == 0
        return lossless and self.gen["send_errors"] == 0 and self.lag_max <= self.opts.max_lag_s

    # latency

    def latencies(self) -> dict[str, dict[str, list]]:
        """Per alarm: seconds from onset to arrival ("onset"), beyond the rule ("beyond"), devices
        whose alarm never came ("missed")."""
        from vigil.edge.config import Config

        alarms = Config().alarms
        first: dict[tuple[str, str], float] = {}
        t0 = self.mon["t0"]
        for t, dev, alarm, state in sorted(self.sub["alerts"]):
            if state == "raised":
                first.setdefault((dev, alarm), t)
        out: dict[str, dict[str, list]] = {}
        for dev, (kind, onset) in sorted(self.episodes.items()):
            beats = np.asarray(self.gen["truth"].get(dev, []))
            for alarm in EXPECTED[kind]:
                rec = out.setdefault(alarm, {"onset": [], "beyond": [], "missed": []})
                rule = getattr(alarms, alarm)
                t = first.get((device_name(dev), alarm))
                if t is None or t < t0 + onset - 0.5:
                    rec["missed"].append(dev)
                    continue
                rec["onset"].append(t - (t0 + onset))
                met = _met(alarm, beats, onset, rule.threshold)
                if met is not None:
                    rec["beyond"].append(t - (t0 + met) - rule.condition_delay_s)
        return out

    def unexpected(self) -> Counter:
        """RAISED alerts that no episode explains, per alarm."""
        want = {(device_name(d), a) for d, (k, _) in self.episodes.items() for a in EXPECTED[k]}
        return Counter(a for _, dev, a, s in self.sub["alerts"] if s == "raised" and (dev, a) not in want)

    # memory

    def rss_series(self) -> list[tuple[float, float]]:
        """(t, RSS MB) while streaming, every ``rss_every_s``."""
        every = max(1, int(round(self.opts.rss_every_s)))
        rows = [(r["t"], r["rss"]) for r in self.mon["samples"] if r["t"] <= self.opts.seconds + 0.5]
        return [(t, v) for t, v in rows if int(round(t)) % every == 0]

    def rss_stats(self) -> dict[str, float]:
        rows = [(r["t"], r["rss"]) for r in self.mon["samples"] if r["t"] <= self.opts.seconds + 0.5]
        if not rows:
            return {}
        t, v = np.array(rows).T
        warm = 60.0 if self.opts.seconds >= 240 else self.opts.seconds / 4
        after = t >= warm
        slope = float(np.polyfit(t[after] / 60.0, v[after], 1)[0]) if after.sum() >= 3 else math.nan
        return {
            "first_min": float(v[t < 60].mean()) if (t < 60).any() else float(v[0]),
            "last_min": float(v[t >= t[-1] - 60].mean()),
            "max": float(v.max()),
            "slope": slope,
            "warm": warm,
        }

    @property
    def memory_flat(self) -> bool | None:
        """Slope within ``max_slope`` (None: a run under 5 minutes does not tell)."""
        if self.opts.seconds < 300:
            return None
        return self.rss_stats().get("slope", math.inf) <= self.opts.max_slope


def _met(alarm: str, beats: np.ndarray, onset: float, threshold: float) -> float | None:
    """Signal time at which the true beats met ``alarm``'s threshold after ``onset`` (None: never)."""
    if alarm in ("asystole", "pause"):
        before = beats[beats < onset]
        return float(before[-1] + threshold) if len(before) else None
    rr, ends = np.diff(beats), beats[1:]
    past = 60.0 / rr >= threshold if alarm == "tachycardia" else 60.0 / rr <= threshold
    ok = (ends >= onset) & past
    return float(ends[ok][0]) if ok.any() else None


def run_once(opts: Options) -> Result:
    """One measurement: broker, subscriber, monitor and generator, in that order; t0; the results."""
    mon_cpus, other = cpu_split(opts.cpu)
    ctx = mp.get_context("spawn")
    episodes = {
        s.device_id: (s.episodes[0].kind, s.episodes[0].start_s) for s in make_specs(opts) if s.episodes
    }
    procs: list = []
    with tempfile.TemporaryDirectory(prefix="vigil-capacity-") as tmp:
        broker = Broker(Path(tmp), other)
        try:

            def start(target: Any, name: str, *args: Any) -> Any:
                parent, child = ctx.Pipe()
                p = ctx.Process(target=target, args=(child, *args), name=name)
                procs.append(p)
                p.start()
                return parent

            sub_c = start(_subscriber, "subscriber", broker.port, other)
            _expect(sub_c, "the subscriber", 60, procs)
            mon_c = start(_monitor, "monitor", opts, broker.port, tmp, mon_cpus)
            ready = _expect(mon_c, "the monitor", 120, procs)
            if opts.progress:
                print(
                    f"  monitor pid {ready['pid']}, RSS {ready['rss_ready']:.0f} MB before any device",
                    flush=True,
                )
            gen_c = start(_generator, "generator", opts, ready["port"], other)
            _expect(gen_c, "the generator", 300, procs)
            t0 = time.monotonic() + LEAD_S
            mon_c.send(t0)
            gen_c.send(t0)
            budget = LEAD_S + opts.seconds + opts.drain_s + 120
            gen = _expect(gen_c, "the generator's result", budget, procs[2:])
            mon = _expect(mon_c, "the monitor's result", budget, procs[1:2])
            sub_c.send("stop")
            sub = _expect(sub_c, "the subscriber's result", 60, procs[:1])
            for p in procs:
                p.join(30)
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
            broker.stop()
    return Result(opts, mon_cpus, other, gen, mon, sub, episodes)


# -- report -------------------------------------------------------------------------------------


def _cpus(c: set[int] | None) -> str:
    return "any (unpinned)" if c is None else ",".join(map(str, sorted(c)))


def _autogroup() -> str:
    """The scheduler autogroup's nice (what decides CPU shares between sessions), when there is one."""
    try:
        return ", autogroup nice " + Path("/proc/self/autogroup").read_text().split()[-1]
    except (OSError, IndexError):
        return ""


def _unit(alarm: str) -> str:
    from vigil.edge.alarms import unit_of

    return unit_of(alarm)


def report(r: Result, out: Any = sys.stdout) -> dict[str, Any]:
    """Print the run's tables; return the summary numbers."""
    from vigil.edge.config import Config

    o, m, g = r.opts, r.mon, r.gen
    wall = m["wall_total"]

    def p(*a: Any) -> None:
        print(*a, file=out)

    p(
        f"\n{o.devices:,} ECG devices at {FS:g} Hz, {o.frame_samples} samples a frame "
        f"({o.devices * FS / o.frame_samples:,.0f} frames/s), {o.seconds:g} s. Monitor on CPU "
        f"{_cpus(r.mon_cpus)}; "
        f"generator (separate process, {g['sockets']} UDP sockets), subscriber and mosquitto on CPU "
        f"{_cpus(r.other_cpus)}; niceness {os.getpriority(os.PRIO_PROCESS, 0)}{_autogroup()}"
    )
    p("\nReal time")
    p(
        f"  frames sent {g['sent']:,}, received {m['udp_frames']:,}, processed {m['frames_processed']:,}; "
        f"lost {r.lost:,} (backpressure drops {m['frames_dropped']}, transport queue full "
        f"{m['queue_full']}, socket drops {m['socket_drops']})"
    )
    p(
        f"  lag (wall clock - newest processed signal): median {r.lag_p50:.2f} s, max {r.lag_max:.2f} s "
        f"(bound {o.max_lag_s:g} s); queue high water {m['queue_high_water']:,} frames"
    )
    busy, other = r.core_pct
    p(
        f"  monitor CPU {r.cpu_pct:.0f} % of one core (process user + system, every thread); its core "
        f"busy {busy:.0f} %: other processes {other:.0f} % (time the monitor left idle, or lost to them)"
    )
    p(
        f"  {m['batches'] / wall:.1f} batches/s, {m['ticks'] / wall:.1f} ticks/s (longest "
        f"{1000 * m['tick_s_max']:.0f} ms); garbage collections: "
        + ", ".join(f"gen{k} {n} (longest {1000 * d:.0f} ms)" for k, (n, d) in sorted(m["gc"].items()))
    )
    p(
        f"  generator sent late by p50 {1000 * g['late_p50']:.1f} ms, p99 {1000 * g['late_p99']:.1f} ms, "
        f"max {1000 * g['late_max']:.0f} ms; session errors {m['session_errors']}"
    )
    if not o.gc_freeze:
        p("  (experiment: no gc.freeze() after start-up, which vigil run does)")
    nets = m.get("networks", {})
    beats = nets.get("ecg-beats", {})
    if beats.get("rows"):
        rate = beats["rows"] / wall
        per_core = rate / max(1e-9, r.cpu_pct / 100)
        p(
            f"  networks: ecg-beats classified {beats['rows']:,} beats ({rate:,.0f} beats/s) in "
            f"{beats['calls']:,} calls (largest batch {beats['largest_batch']}), inference "
            f"{100 * beats['seconds'] / wall:.1f} % of a core; whole pipeline {per_core:,.0f} beats/s "
            f"per core (rate / monitor CPU); not classified {beats['skipped']}"
        )
    for task, st in nets.items():
        if task != "ecg-beats" and st.get("rows"):
            p(f"  networks: {task} {st['rows']:,} windows in {st['calls']:,} calls, "
              f"inference {100 * st['seconds'] / wall:.1f} % of a core")  # fmt: skip
    if not o.networks:
        p("  (networks off: --no-networks)")
    p(f"  verdict: {'KEEPS REAL TIME' if r.keeps_real_time else 'FALLS BEHIND'}")

    alarms = Config().alarms
    latency: dict[str, Any] = {}
    lat = r.latencies()
    if lat:
        p("\nAlarm latency: episode onset (signal time) -> RAISED alert at the MQTT subscriber")
        p(
            f"  {'alarm':<12} {'episodes':>8} {'raised':>6} {'p50 s':>6} {'p99 s':>6} {'max s':>6}   "
            f"{'condition delay':>15} {'threshold':>10}   beyond the rule p50 / p99 s"
        )
        for alarm, rec in lat.items():
            rule = getattr(alarms, alarm)
            on, be = rec["onset"], rec["beyond"]
            n = len(on) + len(rec["missed"])
            p(
                f"  {alarm:<12} {n:>8} {len(on):>6} {percentile(on, 50):>6.2f} {percentile(on, 99):>6.2f} "
                f"{max(on, default=math.nan):>6.2f}   {rule.condition_delay_s:>13g} s "
                f"{rule.threshold:>6g} {_unit(alarm):<3}   "
                f"{percentile(be, 50):.2f} / {percentile(be, 99):.2f}"
            )
            latency[alarm] = (percentile(on, 50), percentile(on, 99), rule.condition_delay_s, len(on), n)
        unexpected = r.unexpected()
        p(f"  alarms raised on devices without that episode: {dict(unexpected) if unexpected else 'none'}")

    t0 = m["t0"]
    during = (r.sub["vitals_at"] >= t0 + 2.0) & (r.sub["vitals_at"] <= t0 + o.seconds)
    age = r.sub["vitals_age"][during]
    rate = during.sum() / max(1, o.devices) / max(1e-9, o.seconds - 2.0)
    p(
        f"\nVitals at the subscriber: {rate:.2f} a device-second while streaming "
        f"({r.sub['vitals_devices']:,} devices); arrival - the vitals' device time "
        f"p50 {percentile(age, 50):.2f} s, p99 "
        f"{percentile(age, 99):.2f} s. Outbox: acked {m['acked']:,}, pending {m['outbox_pending']}, "
        f"dropped {m['outbox_dropped']}"
    )

    rs = r.rss_stats()
    p("\nMemory (monitor RSS, MB)")
    series = r.rss_series()
    for i in range(0, len(series), 8):
        p("  " + "   ".join(f"{t:4.0f} s {v:6.1f}" for t, v in series[i : i + 8]))
    flat = r.memory_flat
    if rs:
        p(
            f"  first minute {rs['first_min']:.1f}, last minute {rs['last_min']:.1f}, max {rs['max']:.1f}; "
            f"slope {rs['slope']:+.2f} MB/min after {rs['warm']:.0f} s"
            + ("" if flat is None else f" ({'flat' if flat else 'GROWING'}: limit {o.max_slope:g} MB/min)")
        )
    return {
        "devices": o.devices,
        "frame_samples": o.frame_samples,
        "keeps_real_time": r.keeps_real_time,
        "cpu_pct": r.cpu_pct,
        "core_other_pct": other,
        "lag_max": r.lag_max,
        "lost": r.lost,
        "latency": latency,
        "rss_max": rs.get("max", math.nan),
        "rss_first": rs.get("first_min", math.nan),
        "rss_last": rs.get("last_min", math.nan),
        "rss_slope": rs.get("slope", math.nan),
        "memory_flat": flat,
        "networks": nets,
        "beats_per_s": beats.get("rows", 0) / wall,
        "beats_per_s_per_core": beats.get("rows", 0) / wall / max(1e-9, r.cpu_pct / 100),
    }


def summary_block(s: dict[str, Any], cmd: str, max_devices: int | None = None) -> str:
    ok_rt = s["keeps_real_time"] and s["devices"] >= FLOOR_DEVICES
    lines = [
        "",
        "Summary",
        f"  capacity: {s['devices']:,} devices ({s['frame_samples']} samples a frame) "
        f"{'kept' if s['keeps_real_time'] else 'NOT kept'} in real time on one core: "
        f"CPU {s['cpu_pct']:.0f} % (other processes on that core {s['core_other_pct']:.0f} %), "
        f"max lag {s['lag_max']:.2f} s, "
        f"lost {s['lost']:,} -> {'PASS' if ok_rt else 'FAIL'} (floor {FLOOR_DEVICES:,})",
    ]
    if max_devices is not None:
        lines.append(f"  find-max: {max_devices:,} devices kept in real time (the largest passing step)")
    for alarm, (p50, p99, delay, n, of) in s["latency"].items():
        lines.append(
            f"  latency {alarm:<12} p50 {p50:5.2f} s, p99 {p99:5.2f} s (condition delay {delay:g} s; "
            f"{n}/{of} raised)"
        )
    ok_mem = s["rss_max"] <= FLOOR_RSS_MB
    flat = {None: "flatness needs a run of 5 min or more", True: "flat", False: "GROWING"}[s["memory_flat"]]
    lines.append(
        f"  memory: RSS max {s['rss_max']:.1f} MB (<= {FLOOR_RSS_MB:g} MB: {'PASS' if ok_mem else 'FAIL'}), "
        f"first minute {s['rss_first']:.1f} MB, last minute {s['rss_last']:.1f} MB, slope "
        f"{s['rss_slope']:+.2f} MB/min ({flat})"
    )
    if s.get("beats_per_s"):
        lines.append(
            f"  networks: {s['beats_per_s']:,.0f} beats/s classified inside the full pipeline, "
            f"{s['beats_per_s_per_core']:,.0f} beats/s per core of monitor CPU"
        )
    lines.append(f"  command: {cmd}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--devices", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0, help="signal seconds streamed (per run)")
    ap.add_argument("--frame-samples", type=int, default=25, help="samples a frame (25: 10 frames/s)")
    ap.add_argument("--episodes", type=float, default=0.05, help="fraction of devices with an episode")
    ap.add_argument("--cpu", type=int, help="the monitor's CPU (default: the last allowed; -1: no pinning)")
    ap.add_argument("--per-socket", type=int, default=50, help="devices per generator UDP socket")
    ap.add_argument("--max-lag", type=float, default=1.0, help="lag bound of the real-time verdict (s)")
    ap.add_argument("--max-slope", type=float, default=0.2, help="RSS slope bound of 'flat' (MB/min)")
    ap.add_argument("--rss-every", type=float, default=10.0, help="seconds between printed RSS samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--find-max", action="store_true", help="step the devices up from -n until one falls behind"
    )
    ap.add_argument("--step", type=int, default=500, help="--find-max step")
    ap.add_argument("--json", type=Path, help="also write the summary numbers here")
    ap.add_argument("--profile", type=Path, help="write the monitor's CPU profile here (needs yappi; slow)")
    ap.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="experiment: without vigil run's gc.freeze() after start-up",
    )
    ap.add_argument(
        "--no-networks", action="store_true", help="rules only: without the shipped networks ([models])"
    )
    args = ap.parse_args(argv)
    cmd = shlex.join([sys.executable, *(sys.argv if argv is None else ["bench/capacity.py", *argv])])
    opts = Options(
        devices=args.devices,
        seconds=args.seconds,
        frame_samples=args.frame_samples,
        seed=args.seed,
        episodes=args.episodes,
        cpu=args.cpu,
        per_socket=args.per_socket,
        max_lag_s=args.max_lag,
        max_slope=args.max_slope,
        rss_every_s=args.rss_every,
        profile=str(args.profile.resolve()) if args.profile else "",
        gc_freeze=not args.no_gc_freeze,
        networks=not args.no_networks,
    )
    if not args.find_max:
        s = report(run_once(opts))
        print(summary_block(s, cmd))
        if args.json:
            args.json.write_text(json.dumps({"options": asdict(opts), **s}, indent=2))
        ok = s["keeps_real_time"] and s["rss_max"] <= FLOOR_RSS_MB and s["memory_flat"] is not False
        return 0 if ok and opts.devices >= FLOOR_DEVICES else 1

    steps: list[dict[str, Any]] = []
    n = opts.devices
    while True:
        print(f"\n=== find-max: {n:,} devices ===", flush=True)
        steps.append(report(run_once(replace(opts, devices=n))))
        if not steps[-1]["keeps_real_time"]:
            break
        n += args.step
    print("\nfind-max steps")
    for s in steps:
        print(
            f"  {s['devices']:>6,} devices: {'kept' if s['keeps_real_time'] else 'FELL BEHIND'}, CPU "
            f"{s['cpu_pct']:.0f} % (other processes {s['core_other_pct']:.0f} %), "
            f"max lag {s['lag_max']:.2f} s, lost {s['lost']:,}, RSS max {s['rss_max']:.0f} MB"
        )
    kept = [s for s in steps if s["keeps_real_time"]]
    top = kept[-1]["devices"] if kept else 0
    print(summary_block(kept[-1] if kept else steps[-1], cmd, max_devices=top))
    if args.json:
        args.json.write_text(
            json.dumps({"options": asdict(opts), "max_devices": top, "steps": steps}, indent=2)
        )
    return 0 if top >= FLOOR_DEVICES else 1


if __name__ == "__main__":
    sys.exit(main())
