"""Signal quality: against a pure-numpy/scipy reference, chunk invariance, real ECG, corruptions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from vigil.kernels import quality as Q
from vigil.kernels.quality import QualityFlag as F

DATA = Path(__file__).resolve().parents[1] / "data" / "mitdb"
FS = 360.0


# ---------------------------------------------------------------------------------------------
# Pure-numpy reference (scipy filters)


def ref_metrics(x, fs, window_s=5.0, band=(1.0, 40.0), hf_hz=40.0, lf_hz=0.5, eps=0.0, rails=None):
    """Metrics [w, 5, ch] recomputed window by window from whole-signal arrays."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n, nch = x.shape
    size = round(window_s * fs)
    w = n // size
    ok = np.isfinite(x)
    idx = np.where(ok, np.arange(n)[:, None], -1)
    idx = np.maximum.accumulate(idx, axis=0)
    held = np.where(idx >= 0, x[np.maximum(idx, 0), np.arange(nch)], 0.0)  # hold, 0 before any
    first = np.where(ok[0], x[0], 0.0)

    def filt(sos):
        zi = signal.sosfilt_zi(sos)[:, :, None] * first[None, None, :]
        return signal.sosfilt(sos, held, axis=0, zi=zi)[0]

    yb = filt(signal.butter(2, band, "bandpass", fs=fs, output="sos"))
    yh = filt(signal.butter(4, hf_hz, "highpass", fs=fs, output="sos"))
    yl = filt(signal.butter(2, lf_hz, "lowpass", fs=fs, output="sos"))
    run = np.zeros((n, nch))
    for c in range(nch):  # flat run length at each finite sample
        f = np.flatnonzero(ok[:, c])
        v = x[f, c]
        same = np.r_[False, np.abs(np.diff(v)) <= eps]
        start = np.maximum.accumulate(np.where(same, 0, np.arange(len(v))))
        run[f, c] = np.arange(len(v)) - start + 1
    out = np.full((w, 5, nch), np.nan)
    for k in range(w):
        s = slice(k * size, (k + 1) * size)
        for c in range(nch):
            xs, m = x[s, c], ok[s, c]
            out[k, 0, c] = (~m).sum()
            if not m.any():
                continue
            v = xs[m]
            out[k, 1, c] = run[s, c].max() / fs
            if rails is not None:
                out[k, 2, c] = np.mean((v <= rails[0]) | (v >= rails[1]))
            else:
                out[k, 2, c] = np.mean((v == v.max()) | (v == v.min())) if np.ptp(v) > 0 else 0.0
            if np.ptp(v) > eps:
                out[k, 3, c] = np.sum(yh[s, c] ** 2) / np.sum(yb[s, c] ** 2)
                out[k, 4, c] = np.ptp(yl[s, c]) / np.ptp(yb[s, c])
    return out


def load_100(seconds: float = 120.0, channels: int = 2) -> np.ndarray:
    wfdb = pytest.importorskip("wfdb")
    rec = wfdb.rdrecord(str(DATA / "100"), sampto=int(seconds * FS), channels=list(range(channels)))
    return rec.p_signal.astype(np.float64)


@pytest.fixture(scope="module")
def ecg() -> np.ndarray:
    return load_100()


def check_score_matches_flags(q: Q.QualityWindows) -> None:
    assert np.all((q.score >= 0) & (q.score <= 1))
    np.testing.assert_array_equal(q.flags != 0, q.score < 0.5)


# ---------------------------------------------------------------------------------------------
# Reference and streaming


def corrupted(ecg: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(5)
    x = ecg.copy()
    x[3000:3400, 0] = np.nan  # gap
    x[9000:12000, 1] = x[9000, 1]  # flat line
    x[20000:, 0] = np.minimum(x[20000:, 0], 0.6)  # clipped
    x[30000:, 1] += rng.normal(0, 0.2, len(x) - 30000)  # noise
    return x


def test_metrics_match_reference(ecg):
    x = corrupted(ecg)
    q = Q.signal_quality(x, FS)
    assert len(q) == len(x) // 1800
    np.testing.assert_allclose(q.metrics, ref_metrics(x, FS), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(q.start, np.arange(len(q)) * 1800)
    check_score_matches_flags(q)


def test_metrics_match_reference_with_rails_and_eps(ecg):
    x = np.clip(ecg[:20000], -0.5, 0.8)
    x[5000:5200] += 1e-4 * np.sin(np.arange(200))[:, None]  # nearly flat with flat_eps = 1e-3
    kw = dict(window_s=2.0, flat_eps=1e-3, rails=(-0.5, 0.8))
    q = Q.signal_quality(x, FS, **kw)
    ref = ref_metrics(x, FS, window_s=2.0, eps=1e-3, rails=(-0.5, 0.8))
    np.testing.assert_allclose(q.metrics, ref, rtol=1e-9, atol=1e-12)
    assert np.any(q.flags & F.CLIP)


def test_chunks_equal_batch(ecg):
    x = corrupted(ecg)[:40000]
    batch = Q.signal_quality(x, FS)
    rng = np.random.default_rng(1)
    for trial in range(4):
        mon = Q.SignalQuality(FS, 2)
        cuts = np.sort(rng.integers(0, len(x), size=5 + 40 * trial))
        parts = [mon.process(c) for c in np.split(x, cuts)]  # includes empty and 1-sample chunks
        np.testing.assert_array_equal(np.concatenate([p.start for p in parts]), batch.start)
        for name in ("flags", "score", "metrics"):
            got = np.concatenate([getattr(p, name) for p in parts])
            np.testing.assert_array_equal(got, getattr(batch, name))
        assert mon.n_seen == len(x)


# ---------------------------------------------------------------------------------------------
# Real ECG and corruptions of it


def test_record_100_scores_good():
    q = Q.signal_quality(load_100(seconds=1805.0), FS)
    assert len(q) == 361
    assert np.mean(q.flags == 0) > 0.95  # in fact every window
    assert np.median(q.score) > 0.8
    check_score_matches_flags(q)


def test_flatline_flagged(ecg):
    x = ecg.copy()
    x[int(20 * FS) : int(40 * FS), 0] = x[int(20 * FS), 0]
    q = Q.signal_quality(x, FS)
    inside = (q.start >= 20 * FS) & (q.start + 1800 <= 40 * FS)
    assert inside.sum() == 4
    assert np.all(q.flags[inside, 0] & F.FLAT) and np.all(q.score[inside, 0] == 0)
    assert not np.any(q.flags[:, 1]) and not np.any(q.flags[q.start + 1800 <= 20 * FS, 0])
    assert np.all(np.isnan(q.metric("noise_ratio")[inside, 0]))  # no CLIP/NOISE on a flat line
    check_score_matches_flags(q)


@pytest.mark.parametrize("level", [0.7, 0.5])
def test_clipping_flagged(ecg, level):
    x = ecg.copy()
    hi = np.median(x[:, 0]) + level * (np.quantile(x[:, 0], 0.999) - np.median(x[:, 0]))
    x[:, 0] = np.minimum(x[:, 0], hi)
    q = Q.signal_quality(x, FS)
    assert np.mean(q.flags[:, 0] & F.CLIP != 0) >= 0.9
    assert not np.any(q.flags[:, 1])
    check_score_matches_flags(q)


def test_nan_run_flagged_and_not_poisoning(ecg):
    x = ecg.copy()
    x[int(31 * FS) : int(32 * FS), :] = np.nan  # 1 s lead-off in window 6 (30-35 s)
    q = Q.signal_quality(x, FS)
    assert np.all(q.flags[6] == F.GAP)
    np.testing.assert_array_equal(q.metric("nonfinite")[6], [360, 360])
    assert 0 < q.score[6, 0] < 0.5
    assert not np.any(q.flags[np.arange(len(q)) != 6])
    assert np.all(np.isfinite(q.metrics[:, 1:]))
    check_score_matches_flags(q)


def test_all_nan_channel(ecg):
    x = ecg[:9000].copy()
    x[:, 1] = np.nan
    q = Q.signal_quality(x, FS)
    assert np.all(q.flags[:, 1] == F.GAP) and np.all(q.score[:, 1] == 0)
    assert np.all(np.isnan(q.metrics[:, 1:, 1]))
    assert not np.any(q.flags[:, 0])


def test_noise_flagged(ecg):
    rng = np.random.default_rng(2)
    x = ecg.copy()
    x[:, 0] += rng.normal(0, 0.15, len(x))
    q = Q.signal_quality(x, FS)
    assert np.all(q.flags[:, 0] & F.NOISE) and not np.any(q.flags[:, 1])
    check_score_matches_flags(q)


def test_wander_flagged(ecg):
    t = np.arange(len(ecg)) / FS
    x = ecg.copy()
    x[:, 0] += 1.5 * np.sin(2 * np.pi * 0.3 * t)  # breathing/motion drift, 3 mV peak-to-peak
    q = Q.signal_quality(x, FS)
    assert np.all(q.flags[:, 0] & F.WANDER) and not np.any(q.flags[:, 1])
    check_score_matches_flags(q)


# ---------------------------------------------------------------------------------------------
# Score and misuse


def test_badness_shape():
    np.testing.assert_allclose(
        Q.badness([0.0, 0.5, 1.0, 1.5, 2.0, 5.0, np.nan], 1.0, 2.0),
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.0],
    )
    np.testing.assert_allclose(Q.badness([0.0, 0.1, 0.5], 0.0, 0.5), [0.0, 0.6, 1.0])


def ref_score(metric, size, thresholds):
    """Flags and score of windows ``metric`` [w, 5, ch] in numpy (the module docstring's rule)."""
    frac = metric.copy()
    frac[:, 0, :] /= size
    flags = np.zeros(metric.shape[::2], dtype=np.int64)
    worst = np.zeros(metric.shape[::2])
    for j, (flag, name) in enumerate(zip(Q._FLAGS, Q._THRESHOLD_NAMES, strict=True)):
        t, s = getattr(thresholds, name)
        v = frac[:, j, :]
        flags |= np.where(np.nan_to_num(v, nan=0.0) > t, int(flag), 0)
        worst = np.maximum(worst, Q.badness(v, t, s))
    score = np.where(flags != 0, np.minimum(1.0 - worst, np.nextafter(0.5, 0.0)), 1.0 - worst)
    return flags, score


@pytest.mark.parametrize("gap", [(0.0, 0.5), (0.1, 0.5)])
def test_score_kernel_matches_numpy(gap):
    rng = np.random.default_rng(3)
    metric = rng.exponential(0.5, (400, 5, 3)) * rng.choice([0.0, 1.0, 3.0], (400, 5, 3))
    metric[:, 0, :] = rng.integers(0, 1800, (400, 3))
    specials = [np.nan, np.inf, -np.inf, 0.0, 1e308]
    idx = rng.integers(0, metric.size, 200)
    metric.reshape(-1)[idx] = rng.choice(specials, 200)
    th = Q.QualityThresholds(gap=gap)
    th_arr = np.array([getattr(th, n) for n in Q._THRESHOLD_NAMES])
    flags = np.empty((400, 3), dtype=np.int64)
    score = np.empty((400, 3))
    Q._score(metric, 1800.0, th_arr, Q._FLAG_BITS, flags, score)
    with np.errstate(over="ignore"):  # 1e308 / a threshold below 1: inf, clipped to 1 by both
        want_flags, want_score = ref_score(metric, 1800, th)
    np.testing.assert_array_equal(flags, want_flags)
    np.testing.assert_array_equal(score, want_score)


def test_misuse_raises():
    with pytest.raises(ValueError, match="fs"):
        Q.SignalQuality(-1.0, 1)
    with pytest.raises(ValueError, match="n_channels"):
        Q.SignalQuality(FS, 0)
    for bad in (0.001, float("inf"), "5 s"):
        with pytest.raises(ValueError, match="window_s"):
            Q.SignalQuality(FS, 1, window_s=bad)
    with pytest.raises(ValueError, match="flat_eps"):
        Q.SignalQuality(FS, 1, flat_eps=-1.0)
    with pytest.raises(ValueError, match="rails"):
        Q.SignalQuality(FS, 1, rails=(1.0, -1.0))
    with pytest.raises(ValueError, match="rails"):
        Q.SignalQuality(FS, 2, rails=(0.0, [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="cut-off"):
        Q.SignalQuality(60.0, 1)  # 40 Hz needs fs > 80 Hz
    with pytest.raises(ValueError, match="noise"):
        Q.QualityThresholds(noise=(0.5, 0.2))
    mon = Q.SignalQuality(FS, 2)
    with pytest.raises(ValueError, match="channels"):
        mon.process(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="real numeric"):
        mon.process(np.zeros((10, 2), dtype=complex))


def test_fused_chunk_kernel_matches_filters_then_accumulate():
    """_filter_accumulate == the three SOSFilter.process calls then _accumulate, state included."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3000, 2))
    x[100:140, 0] = np.nan  # held by the filters, counted as bad
    a, b = Q.SignalQuality(250.0, 2, window_s=2.0), Q.SignalQuality(250.0, 2, window_s=2.0)
    got, want = [], []
    for chunk in np.array_split(x, 37):
        got.append(a.process(chunk))
        yb, yh, yl = b._band.process(chunk), b._hf.process(chunk), b._lf.process(chunk)
        out = np.empty(((b._pos + len(chunk)) // b.size, 5, 2))
        k, b._pos = Q._accumulate(
            chunk, yb, yh, yl, b._acc, b._run, b._prev, b._pos, b.size, b._lo, b._hi, b.flat_eps, b.fs, out
        )
        b.n_seen += len(chunk)
        want.append(out[:k])
    np.testing.assert_array_equal(np.concatenate([w.metrics for w in got]), np.concatenate(want))
    for fa, fb in ((a._band, b._band), (a._hf, b._hf), (a._lf, b._lf)):
        np.testing.assert_array_equal(fa.zi, fb.zi)
        assert fa.n_bad == fb.n_bad == 40
