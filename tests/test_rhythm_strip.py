"""kernels/rhythm_strip.py: "rhythm-strip/1" preprocessing against numpy/scipy references and on real
CinC 2017 strips (vendored in data/cinc2017)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
from scipy.special import softmax

from vigil.firmware_bridge.replay import read_wfdb
from vigil.kernels.qrs import detect
from vigil.kernels.rhythm import hrv
from vigil.kernels.rhythm_strip import (
    PREPROCESSING_ID,
    RR_FEATURES,
    StripParams,
    band_pass,
    cut_windows,
    normalise,
    prepare_strip,
    rate_ratio,
    record_probabilities,
    resample_poly,
    rr_features,
    strip_windows,
    window_starts,
    windows_from_signal,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "cinc2017"
P = StripParams()


def _record(name: str) -> tuple[np.ndarray, float]:
    rec = read_wfdb(DATA / name, channels=[0], annotator=None)
    return rec.signal[:, 0], rec.fs


@pytest.mark.parametrize("up,down", [(1, 3), (5, 18), (25, 32), (10, 13), (1, 5), (2, 1), (1, 10)])
def test_resample_poly_matches_scipy(up: int, down: int):
    x = np.random.default_rng(up * 100 + down).standard_normal(3001)
    want = ss.resample_poly(x, up, down)
    got = resample_poly(x, up, down)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_rate_ratio():
    assert rate_ratio(300.0, 100.0) == (1, 3) and rate_ratio(128.0, 100.0) == (25, 32)
    assert rate_ratio(130.0, 100.0) == (10, 13) and rate_ratio(50.0, 100.0) == (2, 1)


def test_strip_chain_matches_scipy():
    x, fs = _record("A00004")
    s = prepare_strip(x, fs, P)
    sos = ss.butter(2, [0.5, 40.0], "bandpass", fs=100.0, output="sos")
    np.testing.assert_allclose(band_pass(P), sos, rtol=1e-9, atol=1e-12)
    r = ss.resample_poly(x - np.median(x), 1, 3)
    ref = ss.sosfilt(sos, r, zi=ss.sosfilt_zi(sos) * r[0])[0]
    assert len(s.x) == len(ref) == 3000
    np.testing.assert_allclose(s.x, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert np.array_equal(s.beats, detect(ref, 100.0))


def test_frequency_response_passes_ecg_and_stops_mains():
    fs = 300.0
    t = np.arange(int(20 * fs)) / fs

    def gain_db(f0: float) -> float:
        y = prepare_strip(np.sin(2 * np.pi * f0 * t), fs).x[300:]
        return 20 * np.log10(np.std(y) / np.sqrt(0.5))

    assert abs(gain_db(10.0)) < 0.1 and abs(gain_db(40.0) + 3) < 0.2  # -3 dB at the band edge
    assert gain_db(60.0) < -50 and gain_db(50.0) < -20  # 60 Hz would alias to 40 Hz at 100 Hz


@pytest.mark.parametrize("fs_dev", [250.0, 360.0, 500.0, 128.0, 130.0, 1000.0])
def test_any_device_rate_gives_the_same_windows(fs_dev: float):
    x, fs = _record("A00008")
    q = Fraction(fs_dev / fs).limit_denominator(100)
    other = ss.resample_poly(x, q.numerator, q.denominator)  # the strip as that device would send it
    a, b = strip_windows(x, fs), strip_windows(other, fs_dev)
    assert a.n_windows == b.n_windows and a.n_skipped == b.n_skipped == 0
    for wa, wb in zip(a.ecg[:, 0], b.ecg[:, 0], strict=True):
        assert np.corrcoef(wa, wb)[0, 1] > 0.999
    np.testing.assert_allclose(a.rr, b.rr, atol=0.02)


def test_normalise_against_plain_numpy():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(1000) * 0.1 + 5.0
    w[::80] += 3.0  # "R peaks" every 0.8 s
    w[500] = 400.0  # an artefact spike
    got = normalise(w.copy(), 900, 100.0, 0.25, 5.0)
    c = w[:900] - np.median(w[:900])
    scale = np.median([np.abs(c[i : i + 200]).max() for i in range(0, 800, 200)])
    np.testing.assert_allclose(got[:900], np.clip(np.arcsinh(c / scale / 0.25), -5, 5))
    assert np.all(got[900:] == 0) and got[500] == 5.0  # the spike is clipped
    r = got[np.arange(0, 900, 80)]  # R peaks: about asinh(1 / 0.25)
    assert np.allclose(r, np.arcsinh(4.0), atol=0.3)


def test_rr_features_against_numpy_formulas():
    fs = 100.0
    rng = np.random.default_rng(1)
    rr = rng.uniform(0.45, 1.1, 20)  # irregular, AF-like
    beats = np.round(np.cumsum(np.r_[0.2, rr]) * fs).astype(np.int64)
    f = dict(zip(RR_FEATURES, rr_features(beats, 2000, fs), strict=True))
    r = np.diff(beats) / fs
    d = np.diff(r)
    m = r.mean()
    want = {
        "has_beats": 1.0, "hr_100bpm": 0.6 / m, "cv_rr": r.std(ddof=1) / m,
        "rmssd_rel": np.sqrt(np.mean(d**2)) / m, "pnn50": np.mean(np.abs(d) > 0.05),
        "cosen_rel": hrv(beats, fs).cosen + 1.4, "has_cosen": 1.0, "min_rr_rel": r.min() / m,
        "max_rr_rel": r.max() / m, "med_drr_rel": np.median(np.abs(d)) / m,
        "big_drr": np.mean(np.abs(d) > 0.15 * m), "coverage": (beats[-1] - beats[0]) / 2000,
        "max_rr_s": r.max() / 2,
    }  # fmt: skip
    for k, v in want.items():
        assert f[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert f["cosen_rel"] > 0  # irregular: COSEn above the AF cut-off
    regular = rr_features(np.arange(0, 1000, 80), 1000, fs)
    assert regular[1] == pytest.approx(0.75) and regular[6] == 1
    assert regular[2] == pytest.approx(0, abs=1e-9) and regular[3] == pytest.approx(0, abs=1e-9)
    assert not rr_features(np.array([10, 90, 170]), 1000, fs).any()  # too few beats: all zero


def test_window_starts_cover_the_strip():
    w, hop = P.window, P.hop
    assert hop == 250 and w == 1000
    assert window_starts(3000, P).tolist() == list(range(0, 2001, 250))
    assert window_starts(3100, P).tolist() == [*range(0, 2001, 250), 2100]  # the last one ends the strip
    assert window_starts(w - 1, P).tolist() == [0]


def test_short_strip_is_padded():
    x, fs = _record("A01364")  # 9.3 s: shorter than one window
    win = strip_windows(x, fs)
    assert win.ecg.shape == (1, 1, P.window) and win.n_windows == 1 and win.n_skipped == 0
    n = int(len(x) / 3)
    assert np.all(win.ecg[0, 0, n + 1 :] == 0) and np.abs(win.ecg[0, 0, :n]).max() > 0.5


def test_nan_windows_are_skipped_and_counted():
    x, fs = _record("A00008")  # 60 s -> windows starting every 2.5 s, 0-50 s
    clean = strip_windows(x, fs)
    bad = x.copy()
    bad[int(31.0 * fs) : int(31.5 * fs)] = np.nan  # in the windows starting at 22.5, 25, 27.5 and 30 s
    bad[int(58.0 * fs)] = np.inf  # in the last window (50-60 s)
    got = strip_windows(bad, fs)
    assert got.n_windows == clean.n_windows == 21
    assert got.n_skipped == 5
    assert sorted(set(clean.start.tolist()) - set(got.start.tolist())) == [2250, 2500, 2750, 3000, 5000]
    assert np.all(np.isfinite(got.ecg)) and np.all(np.isfinite(got.rr))
    before = clean.start < 2250  # before the gap: the same windows (up to the strip median's shift)
    np.testing.assert_allclose(got.ecg[: before.sum()], clean.ecg[before], atol=1e-3)
    np.testing.assert_array_equal(got.rr[: before.sum()], clean.rr[before])
    edge = x.copy()
    edge[int(35.05 * fs)] = np.nan  # 0.05 s after the window 25-35 s: inside its anti-alias filter's reach
    assert 2500 not in strip_windows(edge, fs).start
    nothing = strip_windows(np.full(3000, np.nan), fs)
    assert nothing.n_windows == nothing.n_skipped == 1 and nothing.ecg.shape == (0, 1, P.window)


def test_live_buffers_give_the_strip_windows_at_any_device_rate():
    """A batch of 10-s ring buffers (one per device), each prepared on its own, gives the windows the
    whole strip gives at the same place (band-pass and QRS detector started fresh on each buffer),
    and the same windows whether the device sends 300 Hz or 250 Hz."""
    x, fs = _record("A00008")
    ends = np.arange(10.0, 60.0, 5.0)
    bufs = np.stack([x[int((e - 10) * fs) : int(e * fs)] for e in ends])
    live = windows_from_signal(bufs, fs, P)
    ref = cut_windows(prepare_strip(x, fs, P), (ends * P.fs).astype(np.int64) - P.window)
    assert live.ecg.shape == (len(ends), 1, P.window) and live.rr.shape == (len(ends), len(RR_FEATURES))
    assert live.ok.all()
    for a, b in zip(live.ecg[:, 0], ref.ecg[:, 0], strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.98  # the fresh filter's start-up is the only difference
        assert np.corrcoef(a[100:], b[100:])[0, 1] > 0.999
    np.testing.assert_allclose(live.rr, ref.rr, atol=1e-6)  # the same beats
    patch = windows_from_signal(ss.resample_poly(bufs, 5, 6, axis=1), 250.0, P)  # a 250 Hz patch
    for a, b in zip(live.ecg[:, 0], patch.ecg[:, 0], strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.999
    np.testing.assert_allclose(patch.rr, live.rr, atol=0.02)
    one = windows_from_signal(bufs[3], fs, P)  # a single 1-D buffer
    np.testing.assert_array_equal(one.ecg, live.ecg[3:4])


def test_live_buffers_with_bad_samples_are_flagged_not_classified():
    x, fs = _record("A00001")
    bufs = np.stack([x[:3000], x[3000:6000], x[6000:9000]]).copy()
    bufs[1, 1500] = np.nan
    live = windows_from_signal(bufs, fs, P)
    assert live.ok.tolist() == [True, False, True]
    assert not live.ecg[1].any() and not live.rr[1].any()
    inp = live.inputs()
    np.testing.assert_array_equal(inp["ecg"], live.ecg[[0, 2]])
    assert inp["rr"].shape == (2, len(RR_FEATURES))
    longer = windows_from_signal(x[:4500], fs, P)  # 15 s: the window is the last 10 s
    ref = cut_windows(prepare_strip(x[:4500], fs, P), np.array([500]))
    np.testing.assert_array_equal(longer.ecg, ref.ecg)
    short = windows_from_signal(x[:1500], fs, P)  # 5 s: zero-padded like a short strip
    assert short.ok[0] and not short.ecg[0, 0, 501:].any()
    with pytest.raises(ValueError, match="buffers, samples"):
        windows_from_signal(np.zeros((2, 3, 100)), fs, P)


def test_cut_windows_rejects_starts_outside_the_strip():
    s = prepare_strip(_record("A00001")[0], 300.0)
    with pytest.raises(ValueError, match="outside the strip"):
        cut_windows(s, np.array([len(s)]))
    with pytest.raises(ValueError, match="one lead"):
        prepare_strip(np.zeros((100, 2)), 300.0)


def test_record_probabilities_is_the_softmax_of_the_mean_logits():
    z = np.random.default_rng(2).standard_normal((7, 4)) * 5
    got = record_probabilities(z)
    np.testing.assert_allclose(got, softmax(z.mean(0)))
    geo = np.exp(np.log(softmax(z, axis=1)).mean(0))  # the normalised geometric mean of the windows'
    np.testing.assert_allclose(got, geo / geo.sum())
    np.testing.assert_allclose(record_probabilities(z + 1000.0), got)  # no overflow
    assert np.isnan(record_probabilities(np.zeros((0, 4)))).all()


def test_params_round_trip_through_the_card():
    pre = P.to_card()
    assert pre["id"] == PREPROCESSING_ID and StripParams.from_card(pre) == P
    with pytest.raises(ValueError, match="not rhythm-strip/1"):
        StripParams.from_card({**pre, "id": "beat-window/1"})
    with pytest.raises(ValueError, match="RR features differ"):
        StripParams.from_card({**pre, "rr_features": ["hr"]})
