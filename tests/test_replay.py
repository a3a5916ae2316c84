"""Recordings replayed as Vigil frames: WFDB (MIT-BIH 100) and an EDF written from it."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from vigil.firmware_bridge.protocol import ChannelKind, SampleFormat
from vigil.firmware_bridge.replay import (
    ReplayTransport,
    choose_scale,
    quantise,
    read_annotations,
    read_edf,
    read_recording,
    read_wfdb,
    to_standard_units,
)
from vigil.firmware_bridge.transport import LinkEvent, LinkState, Received


@pytest.fixture(scope="module")
def rec100(data_dir):
    return read_wfdb(data_dir / "mitdb" / "100")


@pytest.fixture(scope="module")
def edf_path(tmp_path_factory, rec100):
    """Two minutes of record 100 written as EDF+ (ECG in mV) with two annotations."""
    pyedflib = pytest.importorskip("pyedflib")
    path = tmp_path_factory.mktemp("edf") / "r100.edf"
    x = rec100.signal[: 120 * 360]
    with pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_EDFPLUS) as w:
        hdr = []
        for c in range(2):
            h = pyedflib.highlevel.make_signal_header(
                f"ECG {rec100.channel_names[c]}", dimension="mV", sample_frequency=360,
                physical_min=-5.12, physical_max=5.12, digital_min=-32768, digital_max=32767,
            )  # fmt: skip
            hdr.append(h)
        w.setSignalHeaders(hdr)
        w.writeSamples([np.ascontiguousarray(x[:, c]) for c in range(2)])
        w.writeAnnotation(10.0, -1, "arousal")
        w.writeAnnotation(30.5, 2.0, "artifact")
    return path


async def _collect(transport):
    return [item async for item in transport]


def _frames(items):
    return [i.frame for i in items if isinstance(i, Received)]


def test_read_wfdb_keeps_annotations(rec100, data_dir):
    ann = rec100.annotations
    samples, symbols = read_annotations(data_dir / "mitdb" / "100")
    np.testing.assert_array_equal(ann.sample, samples)
    assert list(ann.symbol) == symbols
    assert ann.aux_note[0] == "(N" and rec100.fs == 360.0 and rec100.signal.shape == (650000, 2)
    seg = rec100.segment(60, 120)
    assert len(seg.signal) == 60 * 360
    assert np.all((seg.annotations.sample >= 0) & (seg.annotations.sample < 60 * 360))
    np.testing.assert_array_equal(
        seg.annotations.sample + 60 * 360, ann.sample[(ann.sample >= 21600) & (ann.sample < 43200)]
    )


def test_read_edf(edf_path, rec100):
    rec = read_recording(edf_path)
    assert rec.fs == 360.0 and rec.units == ("mV", "mV") and rec.signal.shape == (120 * 360, 2)
    step = 10.24 / 65535
    assert np.abs(rec.signal - rec100.signal[: 120 * 360]).max() <= step
    assert rec.annotations.aux_note == ("arousal", "artifact")
    np.testing.assert_array_equal(rec.annotations.sample, [3600, 10980])
    np.testing.assert_array_equal(rec.annotations.duration, [0, 720])
    with pytest.raises(ValueError):
        read_edf(edf_path, channels=[5])


def test_units_and_kinds(rec100):
    t = ReplayTransport(rec100.segment(0, 1))
    assert t.kinds == (ChannelKind.ECG, ChannelKind.ECG)
    seg = rec100.segment(0, 1)
    mv = to_standard_units(replace(seg, units=("uV", "uV")), t.kinds)
    assert mv.units == ("mV", "mV")
    np.testing.assert_allclose(mv.signal, seg.signal * 1e-3)


def test_quantise_nan_and_range():
    x = np.array([[-2.0], [0.0], [3.0], [np.nan]])
    for fmt in (SampleFormat.INT16, SampleFormat.INT24):
        scale, offset = choose_scale(np.array([-2.0]), np.array([3.0]), fmt)
        raw = quantise(x, scale, offset, fmt)
        back = raw[:3] * scale.astype(float) + offset.astype(float)
        assert np.abs(back - x[:3]).max() <= scale[0] / 2 * 1.001
        assert raw[3, 0] == -(1 << (8 * fmt.width - 1))


@pytest.mark.parametrize("fmt", list(SampleFormat))
async def test_wfdb_frames_reassemble(rec100, fmt):
    seg = rec100.segment(0, 30)
    t = ReplayTransport(seg, device_id=100, frame_samples=36, sample_format=fmt, speed=0,
                        start_us=5_000_000, first_sequence=2**32 - 3)  # fmt: skip
    items = await _collect(t)
    assert isinstance(items[0], LinkEvent) and items[0].state == LinkState.CONNECTED
    assert isinstance(items[-1], LinkEvent) and items[-1].state == LinkState.CLOSED
    frames = _frames(items)
    assert len(frames) == 30 * 10 and t.stats.frames == 300 and t.stats.bytes > 0
    x = np.concatenate([f.physical() for f in frames])
    tol = t.step / 2 * 1.001 + (0 if fmt != SampleFormat.FLOAT32 else 1e-6)
    assert np.all(np.abs(x - seg.signal) <= tol)
    if fmt == SampleFormat.INT16:
        assert t.step.max() < 1e-3 * 0.2  # far finer than MIT-BIH's 5 µV ADC step
    seq = np.array([f.sequence for f in frames])
    np.testing.assert_array_equal(seq, (2**32 - 3 + np.arange(300)) % 2**32)
    ts = np.array([f.timestamp_us for f in frames])
    np.testing.assert_array_equal(ts, 5_000_000 + np.round(np.arange(300) * 36 * 1e6 / 360).astype(np.int64))
    assert all(f.device_id == 100 and f.sample_rate == 360.0 for f in frames)
    # annotations in the device clock line up with the frame carrying their sample
    ann_ts = t.annotation_times_us
    k = t.annotations.sample // 36
    np.testing.assert_array_equal(ts[k] + np.round((t.annotations.sample % 36) * 1e6 / 360), ann_ts)
    assert len(t.annotations_sent()) == len(t.annotations)


async def test_edf_frames_reassemble(edf_path):
    rec = read_edf(edf_path)
    t = ReplayTransport(rec, frame_samples=90, sample_format=SampleFormat.INT24, speed=0)
    frames = _frames(await _collect(t))
    assert sum(f.n_samples for f in frames) == len(rec.signal)
    x = np.concatenate([f.physical() for f in frames])
    assert np.all(np.abs(x - rec.signal) <= t.step / 2 * 1.001)
    assert frames[-1].timestamp_us == round((len(frames) - 1) * 90 * 1e6 / 360)
    assert list(t.annotation_times_us) == [10_000_000, 30_500_000]


async def test_speed_zero_is_fast(rec100):
    seg = rec100.segment(0, 300)  # 5 minutes of signal
    t0 = time.perf_counter()
    frames = _frames(await _collect(ReplayTransport(seg, frame_samples=90, speed=0)))
    assert len(frames) == 1200
    assert time.perf_counter() - t0 < 10.0


@pytest.mark.parametrize("speed", [20.0, 50.0])
async def test_speed_pacing(rec100, speed):
    """2 s of signal at N x real time takes ~2/N s (loose bounds)."""
    seg = rec100.segment(0, 2)
    t0 = time.perf_counter()
    items = await _collect(ReplayTransport(seg, frame_samples=36, speed=speed))
    elapsed = time.perf_counter() - t0
    expected = 2.0 / speed
    assert 0.5 * expected <= elapsed <= 2.0 * expected + 0.3
    frames = [i for i in items if isinstance(i, Received)]
    arrivals = np.array([i.arrival for i in frames])
    # the first frame is due after 0.1 s of signal, the last after 2 s
    assert arrivals[-1] - arrivals[0] >= 0.5 * 1.9 / speed


async def test_close_stops_replay(rec100):
    t = ReplayTransport(rec100.segment(0, 60), frame_samples=36, speed=0)
    n = 0
    async for item in t:
        if isinstance(item, Received):
            n += 1
            if n == 10:
                await t.close()
        elif item.state == LinkState.CLOSED:
            break
    assert n == 10 and t.closed


async def test_loop_continues_one_stream_until_closed(rec100):
    """A looped replay starts again at the end with sequence numbers and timestamps going on."""
    seg = rec100.segment(0, 1.0)  # 360 samples: 10 frames of 36
    t = ReplayTransport(seg, frame_samples=36, speed=0, loop=True, first_sequence=2**32 - 3)
    frames = []
    async for item in t:
        if isinstance(item, Received):
            frames.append(item.frame)
            if len(frames) == 25:
                await t.close()
    assert len(frames) == 25
    seqs = [f.sequence for f in frames]
    assert seqs == [(2**32 - 3 + k) % 2**32 for k in range(25)]
    ts = np.array([f.timestamp_us for f in frames])
    np.testing.assert_array_equal(ts, np.round(np.arange(25) * 36 * (1e6 / 360)).astype(np.int64))
    first = np.concatenate([f.physical()[:, 0] for f in frames[:10]])
    second = np.concatenate([f.physical()[:, 0] for f in frames[10:20]])
    np.testing.assert_array_equal(first, second)
    assert t.samples_sent == 25 * 36


def test_loop_source_string(tmp_path, data_dir):
    from vigil.firmware_bridge.sources import open_source

    assert open_source(f"replay://{data_dir / 'mitdb' / '100'}?loop=1&speed=0").loop
    assert not open_source(f"replay://{data_dir / 'mitdb' / '100'}").loop
    with pytest.raises(ValueError, match="loop must be 0 or 1"):
        open_source(f"replay://{data_dir / 'mitdb' / '100'}?loop=yes")
