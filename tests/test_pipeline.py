"""The monitor end to end: transports -> queue -> checker -> sessions -> alarms -> sink."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vigil.edge.alarms import is_technical
from vigil.edge.config import config_from_dict
from vigil.edge.messages import AlarmState, Alert, Vitals
from vigil.edge.pipeline import FrameQueue, Monitor
from vigil.firmware_bridge.protocol import ChannelKind, SampleFormat, make_frame
from vigil.firmware_bridge.replay import ReplayTransport, read_wfdb
from vigil.firmware_bridge.simulator import DeviceSpec, Episode, SimulatorTransport
from vigil.firmware_bridge.transport import LinkEvent, LinkState, Received, Transport
from vigil.kernels.quality import QualityFlag

DATA = Path(__file__).resolve().parent.parent / "data" / "mitdb"


def _config(**monitor):
    return config_from_dict({"monitor": monitor} if monitor else {})


def _alerts(out, device=None):
    return [a for a in out if isinstance(a, Alert) and (device is None or a.device == device)]


def _raised(out, device=None):
    return [(a.alarm, a.device_time_us * 1e-6) for a in _alerts(out, device) if a.state is AlarmState.RAISED]


class Rewrite(Transport):
    """Wraps a transport: ``fn(received) -> list of items`` rewrites, drops or injects frames."""

    name = "rewrite"

    def __init__(self, inner: Transport, fn):
        super().__init__()
        self.inner, self.fn = inner, fn

    async def items(self):
        async for item in self.inner:
            for out in self.fn(item) if isinstance(item, Received) else [item]:
                yield out

    async def close(self) -> None:
        await self.inner.close()
        await super().close()


def test_asystole_alert_within_condition_delay_of_onset():
    onset, threshold = 40.0, 4.0
    spec = DeviceSpec(fs=250.0, seed=11, heart_rate=72.0, episodes=(Episode("asystole", onset, 10.0),))
    out: list = []
    mon = Monitor(_config(), out.append)
    asyncio.run(mon.run([SimulatorTransport([spec], speed=0, duration_s=60.0)], lossless=True))
    s = mon.session(1)
    assert s.n == 60 * 250 and s.gaps == 0
    raised = _raised(out)
    t_asys = [t - s.anchor for a, t in raised if a == "asystole"]
    delay = mon.config.alarms.asystole.condition_delay_s
    assert len(t_asys) == 1 and onset < t_asys[0] <= onset + threshold + delay + 2.0
    assert {a for a, _ in raised} <= {"asystole", "pause"}
    assert mon.stats.frames_dropped == 0 and mon.stats.frames_processed == 60 * 25


def test_mitdb_100_replay_gives_its_heart_rate_and_no_alarms():
    rec = read_wfdb(DATA / "100", channels=[0]).segment(0, 600)
    out: list = []
    mon = Monitor(_config(), out.append)
    asyncio.run(mon.run([ReplayTransport(rec, speed=0)], lossless=True))
    vitals = [v for v in out if isinstance(v, Vitals)]
    assert len(vitals) >= 30
    hr = np.array([v.hr_bpm for v in vitals if v.hr_bpm is not None])
    assert abs(np.median(hr) - 75.0) < 4.0 and hr.min() > 60 and hr.max() < 95
    last = vitals[-1]
    assert last.kind == "ecg" and last.n_rr == 60 and abs(60000 / last.mean_rr_ms - 75) < 8
    assert last.quality_score > 0.7 and last.quality_flags == [] and not last.lead_off
    assert [a for a in _alerts(out) if not is_technical(a.alarm)] == []
    assert mon.session(1).rhythm.n_beats == pytest.approx(750, abs=25)  # 2273 beats in 30:05
    assert Vitals.from_json(last.to_json()) == last


def _garbage(rng: np.random.Generator, k: int) -> Received:
    """A frame of device 99: random sequence, absurd rates, NaN/inf/huge samples, layout changes."""
    fs = float(rng.choice([250.0, 1.0, 100_000.0]))
    raw = rng.normal(0, 1e6, (int(rng.integers(1, 64)), 1)).astype(np.float32)
    raw[rng.random(len(raw)) < 0.3] = np.nan
    raw[0] = np.inf
    kind = ChannelKind.ECG if k % 3 else ChannelKind.IMU_ACC
    f = make_frame(99, int(rng.integers(0, 2**32)), int(rng.integers(0, 2**40)), fs, raw, (kind,),
                   SampleFormat.FLOAT32)  # fmt: skip
    return Received(f, "garbage", 0.0)


def _fleet_rewrite(cut_us: int):
    """Device 2 vanishes at ``cut_us``; device 3 reconnects there with its sequence reset to 0;
    device 99 floods garbage (three frames for every real one)."""
    rng = np.random.default_rng(5)
    pool = [_garbage(rng, k) for k in range(64)]
    seq = rng.integers(0, 2**32, 100_000)
    k = [0]

    def fn(r: Received) -> list:
        f = r.frame
        out: list = []
        for _ in range(3):
            k[0] += 1
            g = pool[k[0] % len(pool)]
            g = dataclasses.replace(g.frame, sequence=int(seq[k[0] % len(seq)]))
            out.append(Received(g, "garbage", r.arrival))
        if f.device_id == 2 and f.timestamp_us >= cut_us:
            return out
        if f.device_id == 3 and f.timestamp_us >= cut_us:
            seq0 = cut_us // int(f.duration_us)
            f = dataclasses.replace(f, sequence=f.sequence - seq0)  # its clock runs on (an RTC)
            r = Received(f, r.source, r.arrival)
        return [r, *out]

    return fn


def _run_healthy(with_others: bool):
    specs = [DeviceSpec(fs=250.0, seed=21, heart_rate=66.0, device_id=1)]
    if with_others:
        specs += [DeviceSpec(fs=250.0, seed=22, heart_rate=80.0, device_id=2),
                  DeviceSpec(fs=250.0, seed=23, heart_rate=90.0, device_id=3)]  # fmt: skip
    sim = SimulatorTransport(specs, speed=0, duration_s=60.0)
    src = Rewrite(sim, _fleet_rewrite(20_000_000)) if with_others else sim
    out: list = []
    mon = Monitor(_config(), out.append)
    asyncio.run(mon.run([src], lossless=True))
    return mon, out, sim


def test_garbage_lost_and_rebooted_devices_do_not_disturb_a_healthy_one():
    alone, out_alone, _ = _run_healthy(False)
    mon, out, sim = _run_healthy(True)
    a, b = alone.session(1), mon.session(1)
    # device 1 sees exactly what it sees alone: same samples, beats, rhythm; no gaps, no alarms
    assert (b.n, b.gaps, b.resets) == (a.n, 0, 0)
    assert b.rhythm.n_beats == a.rhythm.n_beats == pytest.approx(len(sim.truth(1).beat_samples), abs=2)
    assert b.rhythm.window == a.rhythm.window
    assert _alerts(out, "1") == [] == _alerts(out_alone, "1")
    hr = [v.hr_bpm for v in out if isinstance(v, Vitals) and v.device == "1" and v.hr_bpm]
    assert hr and all(abs(h - 66.0) < 8 for h in hr)
    # device 2 vanished: device lost, nothing physiological
    assert [x for x, _ in _raised(out, "2")] == ["device_lost"]
    # device 3 rebooted: one reset, beats after it, no alarms
    s3 = mon.session(3)
    assert s3.resets == 1 and s3.rhythm.n_beats > 30 and _alerts(out, "3") == []
    # the garbage was counted, not processed into alarms
    st = mon.stats
    assert st.session_errors[(99, 0)] + st.unsupported[(99, 0)] > 0
    assert {x.device for x in _alerts(out)} <= {"2", "99"}
    assert mon.checker.stats(99).resets + mon.checker.stats(99).late > 0


def test_backpressure_drops_are_counted_and_become_explicit_gaps():
    specs = [DeviceSpec(fs=250.0, seed=31, device_id=1), DeviceSpec(fs=250.0, seed=32, device_id=2)]
    sim = SimulatorTransport(specs, speed=0, duration_s=30.0)
    out: list = []
    mon = Monitor(_config(queue_blocks=4), out.append, total_blocks=6)
    asyncio.run(mon.run([sim]))  # a simulator at full speed outruns the processing
    st = mon.stats
    assert st.frames_dropped > 0 and st.frames_dropped == sum(st.dropped.values())
    assert st.frames_received == st.frames_processed + st.frames_dropped == 2 * 30 * 25
    assert st.queue_high_water <= 6
    for dev in (1, 2):
        s, c = mon.session(dev), mon.checker.stats(dev)
        assert 0 < c.frames_lost <= st.dropped[(dev, 0)]  # drops after the last frame leave no gap
        # every lost frame became NaN fill of its exact length: the timeline is never stitched
        assert s.gap_samples == 10 * c.frames_lost and s.gaps == c.gaps
        if s.restarts == 0:  # a gap over max_gap_fill_s (a loaded machine) restarts the kernels instead
            assert s.n + s._n_buf == 10 * s.frames + s.gap_samples
    flags = [mon.session(1).features.quality_flags]
    assert any(f & QualityFlag.GAP for f in flags) or mon.session(1).quality_flags & QualityFlag.GAP


def test_frame_queue_policy():
    q = FrameQueue(per_device=3, total=5)

    def rx(dev, seq):
        return Received(make_frame(dev, seq, seq * 40_000, 250.0, np.zeros((10, 1), np.int16)), "x", 0.0)

    for s in range(5):
        q.put(rx(1, s))  # per-device bound: device 1 keeps its newest 3
    q.put(rx(2, 0))
    q.put(rx(2, 1))
    q.put(rx(3, 0))  # total bound: device 1 is furthest behind, loses its oldest
    q.put(LinkEvent("x", LinkState.CONNECTED))
    events, frames = q.take()
    assert len(events) == 1 and len(q) == 0
    assert [(r.frame.device_id, r.frame.sequence) for r in frames] == [(1, 3), (1, 4), (2, 0), (2, 1), (3, 0)]
    assert q.stats.dropped == {(1, 0): 3} and q.stats.frames_dropped == 3 and q.stats.queue_high_water == 5


def test_model_hook_gets_batched_windows_and_fills_features():
    calls = []

    def model(batch, devices):
        calls.append((batch.shape, batch.dtype, list(devices)))
        return [{"beat_classes": []} for _ in devices]

    specs = [DeviceSpec(fs=250.0, seed=s, device_id=s) for s in (1, 2)]
    mon = Monitor(_config(), None)
    mon.set_model("ecg", model, window_s=2.0, every_s=1.0)
    asyncio.run(mon.run([SimulatorTransport(specs, speed=0, duration_s=10.0)], lossless=True))
    assert all(shape[1:] == (500, 1) and dt == np.float32 and shape[0] == len(d) for shape, dt, d in calls)
    assert ((2, 500, 1), np.float32, ["1", "2"]) in calls  # one call for all devices of the kind
    assert mon.stats.model_calls == len(calls) and mon.stats.model_errors == 0
    mon.set_model("ecg", lambda b, d: 1 / 0, window_s=2.0)
    mon.tick(mon.now() + 5)
    assert mon.stats.model_errors == 1


def test_a_failing_transport_does_not_stop_the_others():
    class Broken(Transport):
        name = "broken"

        async def items(self):
            yield LinkEvent("broken", LinkState.CONNECTED)
            raise OSError("link died")

    spec = DeviceSpec(fs=250.0, seed=3, device_id=7)
    mon = Monitor(_config(), None)
    asyncio.run(mon.run([Broken(), SimulatorTransport([spec], speed=0, duration_s=10.0)], lossless=True))
    assert mon.stats.transport_failures["broken"] == 1 and mon.session(7).n == 2500
    assert math.isfinite(mon.session(7).features.hr_bpm)


class SingleSink:
    """A sink with publish_alert and publish only (as run.LocalSink); records the hand-overs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list]] = []

    def publish_alert(self, alert: Alert) -> None:
        self.calls.append(("alert", [(alert.topic, alert.to_json(), alert.priority, "alert")]))

    def publish(self, topic: str, payload: bytes, priority, kind: str) -> None:
        self.calls.append(("one", [(topic, payload, priority, kind)]))


class BatchSink(SingleSink):
    """MQTTPublisher-shaped: publish_many too."""

    def publish_many(self, items: list) -> None:
        self.calls.append(("many", list(items)))


def _two_devices_with_asystole(sink) -> Monitor:
    """40 s of two devices (one with asystole at 20 s) through handle(), ticking every 0.1 s."""
    specs = [
        DeviceSpec(fs=250.0, seed=21, device_id=1, episodes=(Episode("asystole", 20.0, 8.0),)),
        DeviceSpec(fs=250.0, seed=22, device_id=2),
    ]
    items: list = []

    async def collect() -> None:
        async for it in SimulatorTransport(specs, speed=0, duration_s=40.0):
            if isinstance(it, Received):
                items.append(it)

    asyncio.run(collect())
    clock = [0.0]
    mon = Monitor(config_from_dict({"mqtt": {"vitals_period_s": 1.0}}), sink, clock=lambda: clock[0])
    for i in range(0, len(items), 5):  # 5 frames = 0.1 s of two devices
        clock[0] = (i + 5) / 50
        for r in items[i : i + 5]:
            mon.handle(Received(r.frame, r.source, clock[0]))
        mon.tick(clock[0])
    return mon


def test_publish_many_sink_gets_each_batch_in_one_call_alerts_first():
    sink = BatchSink()
    mon = _two_devices_with_asystole(sink)
    assert sink.calls and {how for how, _ in sink.calls} == {"many"}  # never one by one
    items = [it for _, batch in sink.calls for it in batch]
    kinds = [kind for *_, kind in items]
    assert kinds.count("alert") == mon.stats.alerts > 0 and kinds.count("vitals") == mon.stats.vitals >= 70
    for _, batch in sink.calls:  # within a batch every alert precedes every vitals message
        k = [kind for *_, kind in batch]
        assert k == sorted(k)  # "alert" < "vitals"
    raised = [Alert.from_json(p) for _, p, _, kind in items if kind == "alert"]
    assert any(a.alarm == "asystole" and a.device == "1" for a in raised)


def test_sink_without_publish_many_gets_messages_one_by_one_in_order():
    batched, single = BatchSink(), SingleSink()
    a, b = _two_devices_with_asystole(batched), _two_devices_with_asystole(single)
    assert {how for how, _ in single.calls} == {"alert", "one"}
    assert (a.stats.alerts, a.stats.vitals) == (b.stats.alerts, b.stats.vitals)

    def summary(calls):
        return [(t, kind, _id_free(p)) for _, batch in calls for t, p, _, kind in batch]

    assert summary(single.calls) == summary(batched.calls)


def _id_free(payload: bytes) -> dict:
    """A payload without its per-message id and publication time."""
    d = json.loads(payload)
    d.pop("id"), d.pop("monitor_time")
    return d
