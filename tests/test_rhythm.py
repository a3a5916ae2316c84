"""Rhythm kernels: against pure-numpy references, chunk invariance, pauses, misuse, real records."""

from __future__ import annotations

import math
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from vigil.kernels import rhythm as R

DATA = Path(__file__).resolve().parents[1] / "data" / "mitdb"
FIELDS = ("beat", "rr_samples", "rr_s", "hr_bpm", "n_rr", "mean_rr_ms", "hr_window_bpm",
          "sdnn_ms", "rmssd_ms", "pnn50_pct", "cosen")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Pure-numpy references


def ref_cosen(k: np.ndarray, fs: float) -> float:
    """COSEn (m = 1) of RR intervals ``k`` in samples, all template pairs at once."""
    k = np.asarray(k, dtype=np.float64)
    i, j = np.triu_indices(len(k) - 1, 1)
    d1 = np.abs(k[i] - k[j])
    d2 = np.maximum(d1, np.abs(k[i + 1] - k[j + 1]))
    r = max(R.COSEN_R0_S * fs, np.sort(d2)[R.COSEN_MIN_MATCHES - 1])
    return float(np.log(np.sum(d1 <= r) / np.sum(d2 <= r)) + np.log(2 * r / k.mean()))


def ref_window(k: np.ndarray, fs: float) -> np.ndarray:
    """[n_rr, mean_rr_ms, hr_bpm, sdnn_ms, rmssd_ms, pnn50_pct, cosen] of RR ``k`` (samples)."""
    n = len(k)
    rr_ms = k / fs * 1000.0
    out = np.full(7, np.nan)
    out[0] = n
    if n:
        out[1] = rr_ms.mean()
        out[2] = 60000.0 / rr_ms.mean()
    if n >= 2:
        out[3] = np.std(rr_ms, ddof=1)
        out[4] = np.sqrt(np.mean(np.diff(rr_ms) ** 2))
        out[5] = 100.0 * np.mean(np.abs(np.diff(k)) * 1000.0 > 50.0 * fs)  # exactly 50 ms: no
    if n >= R.COSEN_MIN_RR:
        out[6] = ref_cosen(k, fs)
    return out


def ref_series(beats: np.ndarray, fs: float, window_beats=None, window_s=None) -> np.ndarray:
    """Rows [beat, rr, rr_s, hr, window metrics...] recomputed from scratch at every beat."""
    k = np.diff(beats)
    rows = []
    for j in range(1, len(beats)):
        if window_s is None:
            lo = max(1, j - (window_beats or 60) + 1)
        else:
            cap = math.ceil(window_s * 5)
            lo = max(1, j - cap + 1)
            while beats[j] - beats[lo] >= window_s * fs:
                lo += 1
        w = k[lo - 1 : j]
        rows.append([beats[j], k[j - 1], k[j - 1] / fs, 60 * fs / k[j - 1], *ref_window(w, fs)])
    return np.array(rows).reshape(-1, 11)


def as_rows(s: R.RhythmSeries) -> np.ndarray:
    return np.column_stack([getattr(s, f).astype(np.float64) for f in FIELDS]).reshape(-1, 11)


def concat(parts: list[R.RhythmSeries]) -> np.ndarray:
    return np.vstack([as_rows(p) for p in parts])


def random_beats(rng: np.random.Generator, n: int, fs: float, irregular: bool) -> np.ndarray:
    if irregular:
        rr = rng.uniform(0.35, 1.3, n)
    else:
        t = np.arange(n)
        rr = 0.85 + 0.04 * np.sin(2 * np.pi * t / 4.5) + rng.normal(0, 0.01, n)
    return np.round(np.cumsum(np.r_[0.3, rr]) * fs).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Values


def test_regular_rhythm_values():
    fs = 250.0
    beats = np.arange(0, 250 * 100, 250)  # 1 s apart
    np.testing.assert_allclose(R.rr_intervals(beats, fs), 1.0)
    np.testing.assert_allclose(R.heart_rate(beats, fs), 60.0)
    h = R.hrv(beats, fs)
    assert h.n_rr == 99 and h.mean_rr_ms == 1000.0 and h.hr_bpm == 60.0
    assert h.sdnn_ms == 0.0 and h.rmssd_ms == 0.0 and h.pnn50_pct == 0.0
    assert h.cosen < R.AF_COSEN_THRESHOLD


def test_hand_computed_hrv():
    fs = 1000.0
    beats = np.cumsum([0, 800, 850, 700, 900])  # RR 800, 850, 700, 900 ms
    h = R.hrv(beats, fs)
    assert h.mean_rr_ms == pytest.approx(812.5)
    assert h.sdnn_ms == pytest.approx(np.sqrt((12.5**2 + 37.5**2 + 112.5**2 + 87.5**2) / 3))
    assert h.rmssd_ms == pytest.approx(np.sqrt((50**2 + 150**2 + 200**2) / 3))
    assert h.pnn50_pct == pytest.approx(200 / 3)  # a difference of exactly 50 ms does not count
    assert math.isnan(h.cosen)  # fewer than 12 intervals


@pytest.mark.parametrize("fs", [360.0, 250.0, 1000.0, 128.0])
@pytest.mark.parametrize("irregular", [False, True])
def test_hrv_matches_reference(fs, irregular):
    rng = np.random.default_rng(int(fs) + irregular)
    beats = random_beats(rng, 80, fs, irregular)
    got = R.hrv(beats, fs)
    want = ref_window(np.diff(beats), fs)
    np.testing.assert_allclose(
        [got.n_rr, got.mean_rr_ms, got.hr_bpm, got.sdnn_ms, got.rmssd_ms, got.pnn50_pct, got.cosen],
        want,
        rtol=1e-12,
    )
    assert R.cosen(beats, fs) == got.cosen


@pytest.mark.parametrize(("window_beats", "window_s"), [(60, None), (12, None), (None, 20.0)])
def test_series_matches_reference(window_beats, window_s):
    rng = np.random.default_rng(7)
    fs = 360.0
    beats = np.concatenate([random_beats(rng, 150, fs, False), random_beats(rng, 150, fs, True) + 150_000])
    got = as_rows(R.rhythm_series(beats, fs, window_beats=window_beats, window_s=window_s))
    want = ref_series(beats, fs, window_beats, window_s)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_seconds_window_caps_at_300_bpm():
    fs = 100.0
    beats = np.arange(0, 2000, 10)  # 600 bpm: twice the sizing rate
    s = R.rhythm_series(beats, fs, window_s=2.0)
    assert s.n_rr.max() == 10  # ceil(2 s * 5 beats/s)
    np.testing.assert_allclose(as_rows(s), ref_series(beats, fs, None, 2.0), rtol=1e-12)


def test_af_like_rhythm_scores_high_and_patterned_ectopy_low():
    rng = np.random.default_rng(3)
    fs = 360.0
    af = R.rhythm_series(random_beats(rng, 400, fs, True), fs).cosen[59:]
    sinus = R.rhythm_series(random_beats(rng, 400, fs, False), fs).cosen[59:]
    rr = np.tile([0.55, 1.05], 200) + rng.normal(0, 0.008, 400)  # bigeminy, compensatory pauses
    bigeminy = R.rhythm_series(np.round(np.cumsum(rr) * fs).astype(np.int64), fs).cosen[59:]
    assert np.all(af > R.AF_COSEN_THRESHOLD)
    assert np.all(sinus < R.AF_COSEN_THRESHOLD)
    assert np.all(bigeminy < R.AF_COSEN_THRESHOLD)


# ---------------------------------------------------------------------------------------------
# Streaming


@pytest.mark.parametrize(("window_beats", "window_s"), [(60, None), (None, 30.0)])
def test_tracker_chunks_equal_batch(window_beats, window_s):
    rng = np.random.default_rng(11)
    fs = 360.0
    beats = random_beats(rng, 500, fs, True)
    batch = as_rows(R.rhythm_series(beats, fs, window_beats=window_beats, window_s=window_s))
    for trial in range(5):
        tr = R.RhythmTracker(fs, window_beats=window_beats, window_s=window_s)
        cuts = np.sort(rng.integers(0, len(beats), size=trial * 7 + 1))
        parts, now = [], 0
        for chunk in np.split(beats, cuts):  # includes empty chunks
            now = int(chunk[-1]) + int(rng.integers(0, 50)) if len(chunk) else now
            summary = tr.update(chunk, now)
            parts.append(summary.beats)
        np.testing.assert_array_equal(concat(parts), batch)
        last = R.hrv(beats[-61:], fs) if window_s is None else None
        if last is not None:
            assert summary.window == last
            assert summary.af_suspected == (last.cosen > R.AF_COSEN_THRESHOLD)
        assert summary.n_beats == len(beats) and summary.last_beat == beats[-1]


def test_pauses_longest_and_asystole():
    fs = 200.0
    beats = np.array([100, 300, 500, 1200, 1400, 1600, 2300])  # 3.5 s pauses at 500 and 1600
    assert R.find_pauses(beats, fs, 2.5) == [(500, 1200), (1600, 2300)]
    assert R.find_pauses(beats, fs, 3.5) == []  # strictly longer
    assert R.longest_rr(beats, fs) == (3.5, 500, 1200)  # first of the ties
    assert R.longest_rr(beats[:1], fs) is None
    assert R.seconds_since_last_beat(2300, 3100, fs) == 4.0

    tr = R.RhythmTracker(fs, pause_s=2.5, asystole_s=4.0)
    s = tr.update([], 700)  # no beat yet: time counts from the stream start
    assert s.last_beat == -1 and s.since_last_beat_s == 3.5 and s.in_pause and not s.asystole
    assert math.isnan(s.rr_s) and s.longest_rr is None and s.window.n_rr == 0
    s = tr.update(beats[:4], 1300)
    assert s.pauses == [(500, 1200)] and s.longest_rr == (500, 1200) and s.longest_rr_s == 3.5
    assert s.rr_s == 3.5 and s.hr_bpm == pytest.approx(60 / 3.5)
    s = tr.update(beats[4:6], 2000)
    assert s.pauses == [] and s.since_last_beat_s == 2.0 and not s.in_pause
    s = tr.update([], 2200)
    assert s.in_pause and not s.asystole and tr.since_last_beat(2401) == pytest.approx(4.005)
    assert tr.update([], 2401).asystole  # > 4 s since the beat at 1600
    s = tr.update(beats[6:], 2401)
    assert s.pauses == [(1600, 2300)] and s.longest_rr == (500, 1200)
    assert not s.asystole and s.since_last_beat_s == 0.505


# ---------------------------------------------------------------------------------------------
# Misuse


@pytest.mark.parametrize(
    "beats",
    [[5, 3, 8], [1, 1, 2], [-1, 5], [0.0, 1.5], [[1, 2], [3, 4]], np.array([True, False])],
)
def test_bad_beats_raise(beats):
    with pytest.raises(ValueError, match="beats"):
        R.rr_intervals(beats, 360.0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="fs"):
        R.hrv([1, 2, 3], 0.0)
    with pytest.raises(ValueError, match="not both"):
        R.rhythm_series([1, 2, 3], 360.0, window_beats=10, window_s=5.0)
    with pytest.raises(ValueError, match="window_beats"):
        R.RhythmTracker(360.0, window_beats=1)
    with pytest.raises(ValueError, match="window_s"):
        R.RhythmTracker(360.0, window_s=-1.0)
    with pytest.raises(ValueError, match="pause_s"):
        R.find_pauses([1, 2], 360.0, pause_s=0)
    with pytest.raises(ValueError, match="precedes"):
        R.seconds_since_last_beat(100, 50, 360.0)


def test_tracker_rejects_disorder_and_keeps_state():
    tr = R.RhythmTracker(360.0)
    tr.update([100, 400, 700], 800)
    before = (tr._last.copy(), tr._buf_rr.copy(), tr._nbuf.copy(), tr.n_beats)
    for beats, now, msg in [
        ([700, 900], 1000, "does not follow"),  # repeats the last beat
        ([650], 1000, "does not follow"),
        ([900, 850], 1000, "strictly increasing"),
        ([900], 850, "after now_sample"),
        ([], 700, "backwards"),
    ]:
        with pytest.raises(ValueError, match=msg):
            tr.update(beats, now)
    after = (tr._last, tr._buf_rr, tr._nbuf, tr.n_beats)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert tr.update([1000], 1000).rr_s == 300 / 360


# ---------------------------------------------------------------------------------------------
# Real records (vendored MIT-BIH 100 and 208: no AF in either)


def reference_beats(record: str) -> tuple[np.ndarray, np.ndarray, float]:
    wfdb = pytest.importorskip("wfdb")
    from vigil.kernels.beat_match import BEAT_SYMBOLS

    ann = wfdb.rdann(str(DATA / record), "atr")
    keep = np.isin(ann.symbol, list(BEAT_SYMBOLS))
    return ann.sample[keep].astype(np.int64), np.asarray(ann.symbol)[keep], float(ann.fs)


def test_record_100_sinus_windows_score_low():
    beats, _, fs = reference_beats("100")
    s = R.rhythm_series(beats, fs, window_beats=60)
    c = s.cosen[59:]
    assert len(c) > 2000 and np.all(c < R.AF_COSEN_THRESHOLD)
    assert 60 < np.median(s.hr_window_bpm) < 90
    assert not R.find_pauses(beats, fs)


def test_record_208_low_ectopy_windows_score_low():
    # 208 has >= 10 % PVCs (couplets, trigeminy, fusion) in every 60-beat window; RR-only AF
    # screening cannot separate dense multiform ectopy from AF, so only the windows with the least
    # ectopy (< 15 % non-normal beats) are held to the non-AF threshold.
    beats, symbols, fs = reference_beats("208")
    c = R.rhythm_series(beats, fs, window_beats=60).cosen[59:]
    ectopic = np.convolve(symbols != "N", np.ones(61), "valid") / 61  # the 61 beats of each window
    quiet = ectopic < 0.15
    assert quiet.sum() >= 10
    assert np.all(c[quiet] < R.AF_COSEN_THRESHOLD)


def test_window_kept_between_beats_matches_a_fresh_computation():
    """update() keeps the window's metrics until a beat changes them (from the last beat's row, or
    the previous value): always what computing them from the RR buffer gives."""
    rng = np.random.default_rng(5)
    fs = 250.0
    beats = np.cumsum(rng.integers(100, 400, 300))
    tr = R.RhythmTracker(fs, window_beats=40)
    now = 0
    for chunk in np.array_split(beats, 120):  # many chunks hold no beat
        now = max(now, int(chunk[-1]) if len(chunk) else now) + int(rng.integers(0, 50))
        s = tr.update(chunk, now)
        out = np.empty(7)
        R._window_metrics(tr._buf_rr[: tr._nbuf[0]], fs, tr._r0, out)
        want = R.HRV._from_row(out)
        for got in (s.window, tr.window()):  # equal, NaN (too few intervals) included
            np.testing.assert_array_equal(np.array(astuple(got), float), np.array(astuple(want), float))
        if not len(chunk):
            assert len(s.beats) == 0 and s.pauses == []
