"""kernels/beat_features.py: the ``beat-window/1`` preprocessing of the beat classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vigil.kernels.beat_features import (
    CLASSES,
    RR_FEATURES,
    BeatBatch,
    BeatWindowParams,
    BeatWindows,
    aami_class,
    anti_alias_length,
    beat_inputs,
    pair_beats,
)
from vigil.kernels.beat_match import match_beats
from vigil.kernels.qrs import QRSDetector

FS = 360.0


def _lead(data_dir: Path, record: str, seconds: float | None = None) -> np.ndarray:
    import wfdb

    sampto = None if seconds is None else int(seconds * FS)
    return wfdb.rdrecord(str(data_dir / "mitdb" / record), channels=[0], sampto=sampto).p_signal[:, 0]


def _detect(x: np.ndarray, fs: float) -> np.ndarray:
    det = QRSDetector(fs)
    return np.concatenate([det.process(x), det.finish()])


def _synthetic(beat_times_s: np.ndarray, fs: float = FS, amp: float = 1.0, tail_s: float = 1.0) -> np.ndarray:
    """Gaussian 'QRS' spikes (40 ms wide) at the given times: enough for windows and RR features."""
    t = np.arange(int((beat_times_s[-1] + tail_s) * fs)) / fs
    x = np.zeros_like(t)
    for b in beat_times_s:
        x += amp * np.exp(-0.5 * ((t - b) / 0.012) ** 2)
    return x


def test_streaming_chunks_give_the_batch_result(data_dir: Path):
    x = _lead(data_dir, "208", 240)
    batch, invalid = beat_inputs(x, FS, _detect(x, FS))
    assert len(batch) > 250 and batch.valid.sum() == len(batch) - sum(invalid.values())
    rng = np.random.default_rng(1)
    det, bw = QRSDetector(FS), BeatWindows(FS)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.choice([1, 7, 100, 360, 2000, 5000]))
        chunk = x[i : i + n]
        i += n
        parts.append(bw.process(chunk, det.process(chunk)))
    parts += [bw.process(np.zeros(0), det.finish()), bw.finish()]
    got = BeatBatch.concat(parts, bw.params)
    for f in ("sample", "beat", "rr", "valid"):
        np.testing.assert_array_equal(getattr(got, f), getattr(batch, f), err_msg=f)
    assert bw.invalid == invalid


def test_shapes_and_normalisation(data_dir: Path):
    x = _lead(data_dir, "100", 120)
    b, _ = beat_inputs(x, FS, _detect(x, FS))
    p = BeatWindowParams()
    assert b.beat.shape == (len(b), 2, p.samples) and b.rr.shape == (len(b), len(RR_FEATURES))
    assert b.beat.dtype == np.float32 and b.rr.dtype == np.float32
    v = b.beat[b.valid]
    qrs = np.abs(np.arange(p.samples) - p.pre) <= p.qrs_s * p.fs
    # amplitude normalised by the patient's running median QRS amplitude: ~1 on a normal record
    assert np.median(np.ptp(v[:, 0, qrs], axis=1)) == pytest.approx(1.0, abs=0.05)
    # the template of a steady normal rhythm is the beat itself, nearly
    assert np.median([np.corrcoef(w[0], w[1])[0, 1] for w in v[20:]]) > 0.98
    assert np.all(np.abs(b.rr) <= 5)


def test_rr_features_by_hand():
    # regular 0.8 s rhythm, one premature beat 0.5 s after its predecessor, then a compensatory pause
    rr = [0.8] * 12 + [0.5, 1.1] + [0.8] * 4
    times = 1.0 + np.concatenate([[0.0], np.cumsum(rr)])
    x = _synthetic(times)
    beats = np.round(times * FS).astype(np.int64)
    b, invalid = beat_inputs(x, FS, beats)
    assert invalid["first_beat"] == 1 and invalid["no_next_beat"] == 1
    f = {name: b.rr[13, i] for i, name in enumerate(RR_FEATURES)}  # the premature beat
    early, late = np.log(0.5 / 0.8), np.log(1.1 / 0.8)
    assert f["log(pre_rr/local_rr)"] == pytest.approx(early, abs=1e-3)
    assert f["log(post_rr/local_rr)"] == pytest.approx(late, abs=1e-3)
    assert f["log(pre_rr/long_rr)"] == pytest.approx(early, abs=1e-3)
    assert f["log(post_rr/long_rr)"] == pytest.approx(late, abs=1e-3)
    assert f["log(pre_rr/previous_rr)"] == pytest.approx(early, abs=1e-3)
    assert f["log(local_rr/long_rr)"] == pytest.approx(0.0, abs=1e-3)
    assert f["mean|dRR|/local_rr"] == pytest.approx((0.3 / 8) / 0.8, abs=1e-3)  # one jump, 8 differences
    assert f["median|dRR|/median_rr"] == 0.0  # one premature beat is not an irregular rhythm
    after = {name: b.rr[14, i] for i, name in enumerate(RR_FEATURES)}  # the beat after the pause
    assert after["log(pre_rr/local_rr)"] == pytest.approx(np.log(1.1 / ((7 * 0.8 + 0.5) / 8)), abs=1e-3)
    assert after["log(pre_rr/previous_rr)"] == pytest.approx(np.log(1.1 / 0.5), abs=1e-3)
    steady = {name: b.rr[8, i] for i, name in enumerate(RR_FEATURES)}
    assert all(v == pytest.approx(0.0, abs=1e-5) for v in steady.values())


def test_irregular_rhythm_raises_the_af_feature():
    rng = np.random.default_rng(0)
    rr = rng.uniform(0.45, 1.05, 60)  # atrial-fibrillation-like: every interval independent
    times = 1.0 + np.concatenate([[0.0], np.cumsum(rr)])
    b, _ = beat_inputs(_synthetic(times), FS, np.round(times * FS).astype(np.int64))
    af = b.rr[20:-1, RR_FEATURES.index("median|dRR|/median_rr")]
    assert np.all(af > 0.1) and np.median(af) > 0.2


def test_template_follows_the_dominant_beat_in_bigeminy():
    """Premature beats (another shape) never enter the template: it stays the patient's normal beat."""
    t_norm, t_ect = [], []
    t = 1.0
    for _ in range(30):
        t_norm.append(t)
        t_ect.append(t + 0.5)  # premature (0.5 s), then a compensatory pause
        t += 0.5 + 1.1
    fs = FS
    n = int((t + 1) * fs)
    tt = np.arange(n) / fs
    x = np.zeros(n)
    for c in t_norm:
        x += np.exp(-0.5 * ((tt - c) / 0.012) ** 2)
    for c in t_ect:
        x -= 1.5 * np.exp(-0.5 * ((tt - c) / 0.04) ** 2)  # wide, inverted: a PVC-like beat
    beats = np.round(np.sort(np.r_[t_norm, t_ect]) * fs).astype(np.int64)
    b, _ = beat_inputs(x, fs, beats)
    normal = b.beat[10:-2:2, 0]
    template = b.beat[10:-2, 1]
    for tpl in template:
        assert np.corrcoef(tpl, normal[0])[0, 1] > 0.99
    # a normal beat equals its template; a premature one does not
    assert np.allclose(b.beat[10, 0], b.beat[10, 1], atol=1e-3)
    assert np.corrcoef(b.beat[11, 0], b.beat[11, 1])[0, 1] < 0.5


def test_nan_windows_are_not_classified_and_counted(data_dir: Path):
    x = _lead(data_dir, "100", 120)
    beats = _detect(x, FS)
    clean, _ = beat_inputs(x, FS, beats)
    y = x.copy()
    hit = beats[100]
    y[hit + 20 : hit + 25] = np.nan  # inside beat 100's window (and only its window)
    b, invalid = beat_inputs(y, FS, beats)
    assert invalid["bad_samples"] >= 1 and not b.valid[100]
    assert b.valid.sum() == clean.valid.sum() - invalid["bad_samples"]
    assert np.all(b.beat[100] == 0) and np.all(np.isfinite(b.beat)) and np.all(np.isfinite(b.rr))
    # beats well after the gap are unaffected: bad windows never enter the patient's histories
    late = slice(140, None)
    np.testing.assert_allclose(b.beat[late], clean.beat[late], atol=1e-5)
    np.testing.assert_allclose(b.rr[late], clean.rr[late], atol=1e-6)


def test_flat_signal_is_not_classified():
    times = 1.0 + 0.8 * np.arange(10)
    x = _synthetic(times, amp=0.001)  # 1 uV spikes: a lead-off flat line
    b, invalid = beat_inputs(x, FS, np.round(times * FS).astype(np.int64))
    assert not b.valid.any() and invalid["flat"] >= 8


@pytest.mark.parametrize("fs", [250.0, 500.0])
def test_other_device_rates_give_the_same_windows(data_dir: Path, fs: float):
    from scipy.signal import resample_poly

    x = _lead(data_dir, "208", 180)
    ref, _ = beat_inputs(x, FS, _detect(x, FS))
    y = resample_poly(x, int(fs), int(FS))
    got, _ = beat_inputs(y, fs, _detect(y, fs))
    # pair the beats (same R waves, detected at either rate) and compare their inputs
    idx = pair_beats(ref.sample * fs / FS, got.sample, fs, 0.02)
    ok = (idx >= 0) & ref.valid & got.valid[np.maximum(idx, 0)]
    assert ok.sum() > 0.95 * len(ref)
    a, b = ref.beat[ok, 0], got.beat[idx[ok], 0]
    corr = [np.corrcoef(u, v)[0, 1] for u, v in zip(a, b, strict=True)]
    assert np.median(corr) > 0.97 and np.percentile(corr, 10) > 0.9
    np.testing.assert_allclose(
        np.median(got.rr[idx[ok]], axis=0), np.median(ref.rr[ok], axis=0), rtol=0.05, atol=0.01
    )
    assert anti_alias_length(360, 128) == 3 and anti_alias_length(250, 128) == 1
    assert anti_alias_length(500, 128) == 3 and anti_alias_length(100, 128) == 1


def test_pair_beats_agrees_with_match_beats(data_dir: Path):
    import wfdb

    x = _lead(data_dir, "208")
    det = _detect(x, FS)
    ann = wfdb.rdann(str(data_dir / "mitdb" / "208"), "atr")
    ref = np.array([s for s, c in zip(ann.sample, ann.symbol, strict=True) if aami_class(c) >= 0])
    pairs = pair_beats(ref, det, FS)
    m = match_beats(ref, det, FS, start_s=0.0)
    assert (pairs >= 0).sum() == m.tp and (pairs < 0).sum() == m.fn
    assert len(det) - (pairs >= 0).sum() == m.fp
    assert len(np.unique(pairs[pairs >= 0])) == m.tp
    assert np.all(np.abs(det[pairs[pairs >= 0]] - ref[pairs >= 0]) <= 0.15 * FS)
    # a detection between two reference beats goes to the nearer one
    np.testing.assert_array_equal(pair_beats(np.array([100, 140]), np.array([131]), 100.0), [-1, 0])


def test_aami_mapping():
    got = {c: [s for s in "NLRejAaJSVEF/fQ~+|x![]" if aami_class(s) == i] for i, c in enumerate(CLASSES)}
    assert got == {"N": list("NLRej"), "S": list("AaJS"), "V": list("VE"), "F": ["F"], "Q": list("/fQ")}
    assert aami_class("~") == aami_class("+") == aami_class("x") == -1


def test_card_parameters_round_trip_and_refusals():
    p = BeatWindowParams()
    card = p.card()
    assert card["id"] == "beat-window/1" and card["fs"] == 128.0
    assert BeatWindowParams.from_card(card) == p
    with pytest.raises(ValueError, match="not beat-window/1"):
        BeatWindowParams.from_card({**card, "id": "rhythm-strip/1"})
    with pytest.raises(ValueError, match="rr_features"):
        BeatWindowParams.from_card({**card, "rr_features": ["pre_rr_s"]})
    with pytest.raises(ValueError, match="pre must lie"):
        BeatWindowParams(pre=0)


def test_bad_beat_lists_are_refused():
    bw = BeatWindows(FS)
    with pytest.raises(ValueError, match="beats must increase"):
        bw.process(np.zeros(100), [50, 40])
    with pytest.raises(ValueError, match="beats must increase"):
        bw.process(np.zeros(100), [150])  # not yet seen
    bw.process(np.zeros(100), [50])
    with pytest.raises(ValueError, match="beats must increase"):
        bw.process(np.zeros(100), [50])  # already given
    with pytest.raises(ValueError, match="one lead"):
        bw.process(np.zeros((10, 2)))


def test_small_median_is_numpys_bit_for_bit():
    from vigil.kernels.beat_features import _median

    rng = np.random.default_rng(3)
    for n in list(range(1, 40)) + [96]:
        for _ in range(50):
            a = rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3])
            a = np.round(a, 2) if rng.random() < 0.3 else a
            assert _median(a.tolist()) == np.median(a)


def test_small_mean_and_column_median_are_numpys_bit_for_bit():
    """The beat window's history statistics without numpy's call overhead must not change one input
    bit: the features the shipped network was trained and validated on are exactly numpy's."""
    from vigil.kernels.beat_features import _column_median, _mean

    rng = np.random.default_rng(5)
    for n in range(1, 41):
        for _ in range(200):
            a = rng.uniform(0.2, 2.0, n) * 10.0 ** rng.integers(-3, 4, n)
            assert _mean(a.tolist()) == np.mean(a), n
    for n in range(1, 17):
        for _ in range(20):
            rows = rng.standard_normal((n, 96))
            np.testing.assert_array_equal(_column_median(rows), np.median(rows, axis=0))
            np.testing.assert_array_equal(_column_median(rows[::-1]), np.median(rows, axis=0))
