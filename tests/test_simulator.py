"""Simulated wearables: ground truth matches the signal, episodes appear where scheduled, link
faults happen at the configured rates, and a 2000-device fleet runs fast. Sanity checks of the
simulator, not accuracy claims about the kernels."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np
import pytest

from vigil.firmware_bridge.protocol import ChannelKind, SampleFormat
from vigil.firmware_bridge.simulator import (
    DeviceSpec,
    Episode,
    Impairments,
    SimulatorTransport,
    make_devices,
    simulate,
)
from vigil.firmware_bridge.transport import LinkEvent, LinkState, Received
from vigil.kernels import qrs, rhythm
from vigil.kernels.beat_match import match_beats
from vigil.kernels.eeg import welch_psd

FS = 250.0


async def _frames(transport) -> list:
    return [i.frame async for i in transport if isinstance(i, Received)]


@pytest.mark.parametrize("hr, seed", [(50, 1), (75, 2), (110, 3)])
def test_qrs_finds_the_simulated_beats(hr, seed):
    spec = DeviceSpec(fs=FS, heart_rate=hr, seed=seed, impairments=Impairments(white_noise=0.01))
    x, truth = simulate(spec, 120)
    beats = qrs.detect(x[:, 0], FS)
    m = match_beats(truth.beat_samples, beats, FS, start_s=10)
    assert m.se > 0.99 and m.ppv > 0.99, m
    assert abs(60 / np.mean(np.diff(truth.beat_samples) / FS) - hr) < 0.05 * hr


def test_rhythm_episodes_appear_where_scheduled():
    episodes = (
        Episode("af", 60, 60),
        Episode("asystole", 150, 6),
        Episode("vt", 170, 10),
        Episode("pause", 200, 3),
        Episode("brady", 220, 40),
        Episode("tachy", 270, 30),
    )
    spec = DeviceSpec(fs=FS, heart_rate=70, seed=5, episodes=episodes)
    x, truth = simulate(spec, 300)
    bt = truth.beat_samples

    def inside(a, b):
        return truth.beats_between(a, b)

    # AF: irregular RR inside, regular sinus outside (COSEn, Lake & Moorman's AF score)
    assert rhythm.cosen(inside(62, 120), FS) > rhythm.AF_COSEN_THRESHOLD
    assert rhythm.cosen(inside(0, 60), FS) < rhythm.AF_COSEN_THRESHOLD
    # asystole and pause: no beats, and the detector finds none either
    assert len(inside(150, 156)) == 0 and len(inside(200, 203)) == 0
    det = qrs.detect(x[:, 0], FS)
    assert not np.any((det > 150.2 * FS) & (det < 155.8 * FS))
    pauses = np.array(rhythm.find_pauses(bt, FS, 2.5)) / FS
    np.testing.assert_allclose(pauses, [(149.5, 156.0), (199.5, 203.0)], atol=1.0)
    # VT: ventricular beats at ~170 bpm, labelled V, only there
    vt = truth.beat_labels == "V"
    assert np.all((bt[vt] >= 170 * FS) & (bt[vt] < 181 * FS)) and vt.sum() >= 25
    assert 60 / np.mean(np.diff(inside(171, 180)) / FS) == pytest.approx(170, rel=0.05)
    # rates
    assert 60 / np.mean(np.diff(inside(222, 260)) / FS) == pytest.approx(40, rel=0.08)
    assert 60 / np.mean(np.diff(inside(272, 300)) / FS) == pytest.approx(140, rel=0.08)
    assert [k for k, _, _ in truth.episodes] == [e.kind for e in episodes]


def test_eeg_seizure_and_emg_burst():
    eeg = DeviceSpec(kind=ChannelKind.EEG, fs=256, channels=2, seed=7, episodes=(Episode("seizure", 20, 20),))
    x, truth = simulate(eeg, 60)
    assert truth.intervals("seizure") == [(20, 40)]
    f, p_in = welch_psd(x[22 * 256 : 38 * 256], 256)
    _, p_out = welch_psd(x[: 18 * 256], 256)
    band = (f >= 3) & (f <= 8)
    assert np.all(p_in[band].sum(0) > 20 * p_out[band].sum(0))
    assert 5 < np.std(x[: 18 * 256]) < 60  # µV background

    emg = DeviceSpec(
        kind=ChannelKind.EMG, fs=1000, seed=8, episodes=(Episode("burst", 2, 1), Episode("burst", 5, 1.5))
    )
    y, _ = simulate(emg, 8)
    rms = np.sqrt(
        [np.mean(y[int(a * 1000) : int(b * 1000)] ** 2) for a, b in [(0, 2), (2.1, 2.9), (5.1, 6.4)]]
    )
    assert rms[1] > 20 * rms[0] and rms[2] > 20 * rms[0]


def test_lead_off_and_impairments():
    imp = Impairments(white_noise=0.02, emg_noise=0.05, baseline_wander=0.3, motion_per_min=10)
    spec = DeviceSpec(
        fs=FS, seed=9, impairments=imp, episodes=(Episode("lead_off", 10, 2), Episode("motion", 20, 1))
    )
    x, truth = simulate(spec, 60)
    bad = np.isnan(x[:, 0])
    assert np.array_equal(np.flatnonzero(bad), np.arange(10 * 250, 12 * 250))
    assert 3 <= len(truth.intervals("motion")) <= 30
    rail = replace(spec, impairments=replace(imp, lead_off_value="rail", lead_off_per_min=3))
    y, t2 = simulate(rail, 60)
    assert not np.isnan(y).any() and np.all(y[10 * 250 : 12 * 250] == 10.0)
    offs = t2.intervals("lead_off")
    assert len(offs) >= 2 and all(np.all(y[int(np.ceil(a * FS)) : int(b * FS)] == 10.0) for a, b in offs)


def test_beats_depend_only_on_the_device_spec():
    devs = make_devices(5, DeviceSpec(fs=FS), seed=11)
    assert len({d.seed for d in devs}) == 5 and [d.device_id for d in devs] == [1, 2, 3, 4, 5]
    _, alone = simulate(devs[3], 30)
    fleet = SimulatorTransport(devs, speed=0, duration_s=30)
    asyncio.run(_frames(fleet))
    np.testing.assert_array_equal(fleet.truth(4).beat_samples, alone.beat_samples)


@pytest.mark.parametrize("wire", [False, True])
async def test_frames_reassemble_the_signal(wire):
    spec = DeviceSpec(fs=FS, seed=12, device_id=42, start_us=123_456, first_sequence=2**32 - 5,
                      episodes=(Episode("af", 3, 4),))  # fmt: skip
    x, _ = simulate(spec, 10)
    t = SimulatorTransport([spec], speed=0, duration_s=10, wire=wire)
    items = [i async for i in t]
    assert items[0] == LinkEvent("sim:42", LinkState.CONNECTED, items[0].detail, items[0].at)
    assert isinstance(items[-1], LinkEvent) and items[-1].state == LinkState.CLOSED
    frames = [i.frame for i in items if isinstance(i, Received)]
    assert len(frames) == 250 and (t.stats.bytes > 0) == wire
    y = np.concatenate([f.physical() for f in frames])
    assert np.abs(y - x).max() <= frames[0].scale[0] * 0.51
    np.testing.assert_array_equal([f.sequence for f in frames], (2**32 - 5 + np.arange(250)) % 2**32)
    np.testing.assert_array_equal([f.timestamp_us for f in frames], 123_456 + np.arange(250) * 40_000)


async def test_packet_loss_and_jitter():
    imp = Impairments(packet_loss=0.05, jitter_s=0.1)
    devs = make_devices(100, DeviceSpec(fs=FS, impairments=imp, sample_format=SampleFormat.INT24), seed=13)
    t = SimulatorTransport(devs, speed=0, duration_s=20)
    frames = await _frames(t)
    per = 20 * 25
    by_dev: dict[int, list[int]] = {}
    for f in frames:
        by_dev.setdefault(f.device_id, []).append(f.sequence)
    missing = 0
    reordered = 0
    for d in devs:
        seqs = np.array(by_dev[d.device_id], dtype=np.int64)
        idx = (seqs - d.first_sequence) % 2**32
        assert len(np.unique(idx)) == len(idx) and idx.max() < per
        lost = np.setdiff1d(np.arange(per), idx)
        np.testing.assert_array_equal(
            (lost + d.first_sequence) % 2**32, np.sort(t.truth(d.device_id).dropped_sequences)
        )
        missing += len(lost)
        reordered += int(np.sum(np.diff(idx) < 0))
    rate = missing / (per * len(devs))
    assert 0.04 < rate < 0.06
    assert reordered > 0  # 100 ms mean extra delay over 40 ms frames reorders some


async def test_real_time_pacing():
    t = SimulatorTransport(make_devices(50, DeviceSpec(fs=FS)), speed=10.0, duration_s=2.0)
    t0 = time.perf_counter()
    frames = await _frames(t)
    elapsed = time.perf_counter() - t0
    assert len(frames) == 50 * 50
    assert 0.1 <= elapsed <= 0.6  # 0.2 s expected


async def test_2000_devices_as_fast_as_possible():
    n, seconds = 2000, 3.0
    devs = make_devices(n, DeviceSpec(fs=FS, frame_samples=10, impairments=Impairments(white_noise=0.02)))
    t = SimulatorTransport(devs, speed=0, duration_s=seconds)
    t0 = time.perf_counter()
    count = 0
    async for item in t:
        count += isinstance(item, Received)
    elapsed = time.perf_counter() - t0
    assert count == n * 75 == t.stats.frames
    assert elapsed < 30
    rate = count / elapsed
    print(f"\n{n} devices x {seconds:g} s: {rate:,.0f} frames/s, {rate * 10:,.0f} samples/s")
