"""EMG features, envelope and onsets against numpy/scipy references on real MYO armband sEMG."""

from __future__ import annotations

from itertools import cycle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from vigil.kernels.emg import (
    FEATURES,
    EMGEnvelope,
    EMGFeatureStream,
    OnsetDetector,
    detect_onsets,
    emg_envelope,
    emg_features,
)

FS = 1000.0  # UCI gestures data: one row per ms
DATA = Path(__file__).resolve().parents[1] / "data" / "emg_gestures_uci"
REST_END, FIST_END = 2115, 5931  # first row after rest (class 1) and after fist (class 2)


@pytest.fixture(scope="module")
def emg() -> np.ndarray:
    """Subject 01, series 1, rest -> fist: 6500 samples x 8 channels (V)."""
    rows = np.loadtxt(DATA / "01_1_raw_data_13-12_22.03.16_lines2289-8788.txt.gz", skiprows=1)
    return np.ascontiguousarray(rows[:, 1:9])


def feed(stream, x: np.ndarray, sizes) -> np.ndarray:
    """Feed ``x`` to ``stream`` in chunks whose sizes cycle through ``sizes``."""
    out, i = [], 0
    for n in cycle(sizes):
        if i >= len(x):
            break
        out.append(stream.process(x[i : i + n]))
        i += n
    return np.concatenate(out)


def hold(x: np.ndarray) -> np.ndarray:
    """Reference of the hold policy: non-finite -> last finite value of the channel (0.0 first)."""
    y = x.copy()
    for c in range(y.shape[1]):
        last = 0.0
        for i in range(len(y)):
            if np.isfinite(y[i, c]):
                last = y[i, c]
            else:
                y[i, c] = last
    return y


def features_reference(x, fs, window_s, hop_s, thr):
    """RMS, MAV, WL, ZC, SSC per window in vectorised numpy: [k, 5, ch]."""
    w = np.lib.stride_tricks.sliding_window_view(x, round(window_s * fs), axis=0)
    w = w[:: round(hop_s * fs)]  # [k, ch, N]
    d = np.diff(w, axis=-1)
    zc = (w[..., :-1] * w[..., 1:] < 0) & (np.abs(d) >= thr)
    dl, dr = d[..., :-1], -d[..., 1:]  # x[i] - x[i-1], x[i] - x[i+1]
    ssc = (dl * dr > 0) & ((np.abs(dl) >= thr) | (np.abs(dr) >= thr))
    feats = [
        np.sqrt(np.mean(w**2, axis=-1)),
        np.mean(np.abs(w), axis=-1),
        np.abs(d).sum(-1),
        zc.sum(-1),
        ssc.sum(-1),
    ]
    return np.stack(feats, axis=1)


def onsets_reference(env, fs, k, min_duration_s, baseline_s):
    """Plain-Python run-length detector; events sorted by confirmation time, then channel."""
    nb, min_run = round(baseline_s * fs), round(min_duration_s * fs)
    thr = env[:nb].mean(0) + k * env[:nb].std(0)
    events = []
    for c in range(env.shape[1]):
        active, run, start = False, 0, 0
        for i in range(nb, len(env)):
            above = bool(env[i, c] > thr[c])
            if above == active:
                run = 0
                continue
            start = i if run == 0 else start
            run += 1
            if run == min_run:
                events.append((i, c, start, 1 if above else -1))
                active, run = above, 0
    events.sort()
    return np.array([(s, c, kind) for _, c, s, kind in events], dtype=np.int64).reshape(-1, 3)


@pytest.mark.parametrize(
    "window_s, hop_s, thr", [(0.2, 0.1, 0.0), (0.2, 0.1, 1e-5), (0.25, 0.05, 2e-5), (0.1, 0.1, 0.0)]
)
def test_features_match_numpy_on_real_emg(emg, window_s, hop_s, thr):
    out = emg_features(emg, FS, window_s, hop_s, thr)
    ref = features_reference(emg, FS, window_s, hop_s, thr)
    assert out.shape == ref.shape == (len(ref), len(FEATURES), 8)
    np.testing.assert_allclose(out[:, :3], ref[:, :3], rtol=1e-12)
    np.testing.assert_array_equal(out[:, 3:], ref[:, 3:])
    assert ref[:, 3:].sum() > 0  # the counts are exercised


def test_features_separate_rest_from_fist(emg):
    out = emg_features(emg, FS, threshold=1e-5)  # windows of 200 ms every 100 ms
    start = np.arange(len(out)) * 100
    rest = out[(start + 200) <= REST_END].mean(0)
    fist = out[(start >= 4200) & (start + 200 <= FIST_END)].mean(0)
    for name in ("rms", "mav", "wl"):
        assert (fist[FEATURES.index(name)] > 3 * rest[FEATURES.index(name)]).all()


def test_zero_crossing_and_slope_sign_change_definitions():
    x = np.array([0.0, 1.0, -1.0, -0.5, -0.6, 2.0, 2.0, 1.9, 1.95, 0.1, -0.1])
    n = len(x)  # one window of the whole signal at fs = 1 Hz
    zc, ssc = FEATURES.index("zc"), FEATURES.index("ssc")
    strict = emg_features(x, 1.0, window_s=n, hop_s=n, threshold=0.3)[0, :, 0]
    assert (strict[zc], strict[ssc]) == (2, 5)  # the 0.1 -> -0.1 crossing and 1.9 wiggle are noise
    loose = emg_features(x, 1.0, window_s=n, hop_s=n, threshold=0.0)[0, :, 0]
    assert (loose[zc], loose[ssc]) == (3, 6)
    assert loose[FEATURES.index("mav")] == pytest.approx(np.abs(x).mean())
    assert loose[FEATURES.index("rms")] == pytest.approx(np.sqrt((x**2).mean()))
    assert loose[FEATURES.index("wl")] == pytest.approx(np.abs(np.diff(x)).sum())


def test_envelope_matches_scipy(emg):
    for cutoff, order in [(6.0, 2), (50.0, 4)]:
        sos = signal.butter(order, cutoff, fs=FS, output="sos")
        ref = signal.sosfilt(sos, np.abs(emg), axis=0)
        np.testing.assert_allclose(emg_envelope(emg, FS, cutoff, order), ref, rtol=1e-9, atol=1e-15)


def test_onsets_match_reference_and_physiology(emg):
    env = emg_envelope(emg, FS)
    for k, min_s in [(3.0, 0.025), (5.0, 0.05), (2.0, 0.01)]:
        events = detect_onsets(env, FS, k=k, min_duration_s=min_s, baseline_s=1.0)
        np.testing.assert_array_equal(events, onsets_reference(env, FS, k, min_s, 1.0))
    events = detect_onsets(env, FS)
    for c in range(8):  # each channel: first event is an onset after rest, before the fist ends
        first = events[events[:, 1] == c][0]
        assert first[2] == 1 and REST_END < first[0] < FIST_END


def test_onset_detector_state(emg):
    env = emg_envelope(emg, FS)
    det = OnsetDetector(FS, 8)
    assert det.threshold is None and not det.active.any()
    det.process(env[:1000])
    np.testing.assert_allclose(det.threshold, env[:1000].mean(0) + 3 * env[:1000].std(0), rtol=1e-9)
    det.process(env[1000:])
    assert det.active.sum() >= 1


@pytest.mark.parametrize("size", [1, 7, 360, 6500])
def test_chunked_equals_batch(emg, size):
    batch = emg_features(emg, FS, threshold=1e-5)
    np.testing.assert_array_equal(feed(EMGFeatureStream(FS, 8, threshold=1e-5), emg, [size]), batch)
    env = emg_envelope(emg, FS)
    np.testing.assert_array_equal(feed(EMGEnvelope(FS, 8), emg, [size]), env)
    np.testing.assert_array_equal(feed(OnsetDetector(FS, 8), env, [size]), detect_onsets(env, FS))


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 700), min_size=1, max_size=20))
def test_random_chunks_equal_batch(emg, sizes):
    x = emg[1500:4500]
    batch = emg_features(x, FS, 0.15, 0.05, 1e-5)
    np.testing.assert_array_equal(feed(EMGFeatureStream(FS, 8, 0.15, 0.05, 1e-5), x, sizes), batch)
    env = emg_envelope(x, FS)
    np.testing.assert_array_equal(feed(EMGEnvelope(FS, 8), x, sizes), env)
    events = detect_onsets(env, FS, baseline_s=0.5)
    np.testing.assert_array_equal(feed(OnsetDetector(FS, 8, baseline_s=0.5), env, sizes), events)


def test_nonfinite_samples_are_held_and_do_not_poison(emg):
    x = emg[:4000].copy()
    x[0, 0], x[100:150, 3], x[2000, 5], x[3000, 7] = np.nan, np.inf, -np.inf, np.nan
    held = hold(x)
    stream = EMGFeatureStream(FS, 8, threshold=1e-5)
    out = feed(stream, x, [33])
    assert np.isfinite(out).all() and stream.n_bad == 53
    np.testing.assert_array_equal(out, emg_features(held, FS, threshold=1e-5))

    envelope = EMGEnvelope(FS, 8)
    env = feed(envelope, x, [33])
    assert np.isfinite(env).all() and envelope.n_bad == 53
    sos = signal.butter(2, 6.0, fs=FS, output="sos")
    ref = signal.sosfilt(sos, np.abs(held), axis=0)
    np.testing.assert_allclose(env, ref, rtol=1e-9, atol=1e-15)

    env_bad = env.copy()
    env_bad[500, 1], env_bad[3500:3510, 2] = np.nan, np.inf
    det = OnsetDetector(FS, 8)
    events = feed(det, env_bad, [33])
    assert det.n_bad == 11
    np.testing.assert_array_equal(events, onsets_reference(hold(env_bad), FS, 3.0, 0.025, 1.0))


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (EMGFeatureStream, {"fs": 0.0}),
        (EMGFeatureStream, {"fs": "1 kHz"}),
        (EMGFeatureStream, {"n_channels": 0}),
        (EMGFeatureStream, {"window_s": -0.2}),
        (EMGFeatureStream, {"hop_s": 0.0}),
        (EMGFeatureStream, {"threshold": -1e-5}),
        (EMGFeatureStream, {"threshold": float("nan")}),
        (EMGEnvelope, {"fs": float("inf")}),
        (EMGEnvelope, {"n_channels": 0}),
        (EMGEnvelope, {"cutoff": 600.0}),  # above fs/2
        (EMGEnvelope, {"cutoff": 0.0}),
        (OnsetDetector, {"fs": -FS}),
        (OnsetDetector, {"n_channels": 2.5}),
        (OnsetDetector, {"k": -1.0}),
        (OnsetDetector, {"k": float("nan")}),
        (OnsetDetector, {"k": "3"}),
        (OnsetDetector, {"min_duration_s": 0.0}),
        (OnsetDetector, {"baseline_s": float("nan")}),
    ],
)
def test_misuse_raises(cls, kwargs):
    args = {"fs": FS, "n_channels": 2, **kwargs}
    with pytest.raises(ValueError):
        cls(**args)


def test_bad_input_raises():
    for obj in (EMGFeatureStream(FS, 2), EMGEnvelope(FS, 2), OnsetDetector(FS, 2)):
        for x in (np.zeros((10, 3)), np.zeros((2, 10, 2)), np.zeros((10, 2), complex)):
            with pytest.raises(ValueError):
                obj.process(x)
