"""bench/capacity.py at toy scale, so the bench cannot rot: every process starts, frames flow end to end,
the numbers come back and the report prints. No timing is asserted (the bench itself measures that)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from broker import require_mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import capacity  # noqa: E402  (bench/ is not a package; spawned processes find it on sys.path too)


def test_capacity_machinery_end_to_end():
    require_mosquitto()
    opts = capacity.Options(devices=20, seconds=6.0, cpu=-1, drain_s=2.0, progress=False, rss_every_s=1.0)
    r = capacity.run_once(opts)
    m = r.mon
    assert r.gen["sent"] == 20 * 6 * 10  # 25 samples a frame: 10 frames a second per device
    # every frame sent is accounted for: processed, or counted as lost somewhere
    assert m["frames_processed"] + r.lost == r.gen["sent"] and m["udp_frames"] <= r.gen["sent"]
    assert m["frames_processed"] > 0 and len(r.stream_samples) >= 2
    assert r.cpu_pct > 0 and np.isfinite(r.lag_max)
    assert r.sub["vitals_devices"] > 0 and len(r.sub["vitals_at"]) == len(r.sub["vitals_age"]) > 0
    assert m["acked"] > 0 and m["outbox_pending"] == 0
    out = io.StringIO()
    s = capacity.report(r, out)
    text = out.getvalue() + capacity.summary_block(s, "bench/capacity.py -n 20")
    for part in ("Real time", "verdict", "Vitals at the subscriber", "Memory (monitor RSS, MB)", "Summary"):
        assert part in text
    assert s["devices"] == 20 and s["rss_max"] > 0 and s["memory_flat"] is None


def test_episode_schedule_and_latency_bookkeeping():
    opts = capacity.Options(devices=60, seconds=60.0, episodes=0.05)
    specs = capacity.make_specs(opts)
    eps = [(s.device_id, s.episodes[0]) for s in specs if s.episodes]
    assert sorted(e.kind for _, e in eps) == ["asystole", "brady", "tachy"]  # one of each, in turn
    assert all(10.0 <= e.start_s <= 35.0 for _, e in eps)
    # ground truth at 1 beat/s, then each episode's beats: when did the signal meet each rule?
    beats = np.arange(0.0, 30.0, 1.0)
    assert capacity._met("asystole", beats, 20.5, 4.0) == 24.0  # last beat before onset + threshold
    fast = np.concatenate([np.arange(0.0, 20.0, 1.0), 20.0 + np.arange(1, 20) * 0.35])
    assert capacity._met("tachycardia", fast, 20.0, 150.0) == pytest.approx(20.7)  # RR 0.35 s from there
    slow = np.concatenate([np.arange(0.0, 20.0, 1.0), 19.0 + np.arange(1, 10) * 1.7])
    assert capacity._met("bradycardia", slow, 19.5, 40.0) == pytest.approx(20.7)
    # latencies: onset to the first RAISED alert at the subscriber, per alarm; a missing alert is missed
    dev, ep = next((d, e) for d, e in eps if e.kind == "asystole")
    t0 = 100.0
    r = capacity.Result(
        opts,
        None,
        None,
        gen={"truth": {dev: beats.tolist()}},
        mon={"t0": t0},
        sub={"alerts": [(t0 + ep.start_s + 3.0, f"ecg{dev}", "asystole", "raised")]},
        episodes={dev: (ep.kind, ep.start_s)},
    )
    lat = r.latencies()
    assert lat["asystole"]["onset"] == [pytest.approx(3.0)] and lat["pause"]["missed"] == [dev]
    assert not r.unexpected()
