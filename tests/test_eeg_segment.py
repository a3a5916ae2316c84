"""kernels/eeg_segment.py ("eeg-segment/1"): against a scipy/numpy reference on real Bonn EEG,
chunk invariance, any input rate, and windows that are not classified (NaN, flat lead)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
from numpy.lib.stride_tricks import sliding_window_view

from vigil.kernels.eeg_segment import (
    BAND,
    FS,
    EEGSegmenter,
    StreamResampler,
    eeg_segments,
)
from vigil.kernels.filters import design_bandpass

DATA = Path(__file__).resolve().parent.parent / "data" / "bonn_eeg"
FS_BONN = 173.61


def _bonn(name: str) -> np.ndarray:
    return np.loadtxt(DATA / name)


def reference(x: np.ndarray, fs_in: float, fs: float = FS, window_s: float = 4.0, hop_s: float = 1.0):
    """scipy.signal.sosfilt (step-state start) -> numpy.interp -> sliding windows -> z-score."""
    hi = min(BAND[1], 0.45 * min(fs_in, fs))
    sos = design_bandpass(BAND[0], hi, fs_in)
    y = ss.sosfilt(sos, x, zi=ss.sosfilt_zi(sos) * x[0])[0]
    r = fs_in / fs
    j = np.arange(int(np.floor((len(x) - 1) / r)) + 1)
    j = j[j * r <= len(x) - 1]
    z = np.interp(j * r, np.arange(len(x)), y)
    size, hop = round(window_s * fs), round(hop_s * fs)
    w = sliding_window_view(z, size)[::hop]
    sd = w.std(axis=1)
    return (
        (w - w.mean(axis=1, keepdims=True)) / sd[:, None],
        np.log10(sd),
        (np.arange(len(w)) * hop + size - 1) / fs,
    )


@pytest.mark.parametrize("name", ["Z001.txt", "S001.txt"])
def test_matches_scipy_numpy_reference_on_real_eeg(name: str):
    x = _bonn(name)
    seg = eeg_segments(x, FS_BONN)
    want_x, want_level, want_end = reference(x, FS_BONN)
    assert seg.x.shape == (len(want_x), 1, 512) and seg.x.dtype == np.float32
    assert len(want_x) == 20  # 23.6 s: windows ending at 3.99 ... 22.99 s
    np.testing.assert_allclose(seg.x[:, 0], want_x, atol=2e-6)
    np.testing.assert_allclose(seg.level[:, 0], want_level, atol=1e-6)
    np.testing.assert_array_equal(seg.end_s, want_end)
    assert seg.valid.all()
    inp = seg.inputs()
    assert inp["eeg"].shape == (20, 1, 512) and inp["level"].shape == (20, 1)


def test_chunked_stream_equals_batch_exactly():
    x = _bonn("O001.txt")
    batch = eeg_segments(x, FS_BONN)
    s = EEGSegmenter(FS_BONN)
    rng = np.random.default_rng(1)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 400))
        parts.append(s.process(x[i : i + n]))
        i += n
    for field in ("x", "level", "valid", "end_s"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(p, field) for p in parts]), getattr(batch, field)
        )


@pytest.mark.parametrize(
    ("fs_in", "fs_out"), [(256.0, 128.0), (100.0, 128.0), (173.61, 128.0), (128.0, 128.0)]
)
def test_resampler_is_numpy_interp_and_chunk_invariant(fs_in: float, fs_out: float):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 2))
    bad = np.zeros(x.shape, dtype=bool)
    y, _ = StreamResampler(fs_in, fs_out, 2).process(x, bad)
    r = fs_in / fs_out
    p = np.arange(len(y)) * r
    assert p[-1] <= len(x) - 1 < p[-1] + r + 1e-9  # every output the input can support, no more
    for c in range(2):
        np.testing.assert_allclose(y[:, c], np.interp(p, np.arange(len(x)), x[:, c]), atol=1e-12)
    if fs_in == fs_out:
        np.testing.assert_array_equal(y, x)
    s = StreamResampler(fs_in, fs_out, 2)
    cuts = np.sort(rng.choice(np.arange(1, 1000), 30, replace=False))
    got = np.concatenate(
        [s.process(a, b)[0] for a, b in zip(np.split(x, cuts), np.split(bad, cuts), strict=True)]
    )
    np.testing.assert_array_equal(got, y)


def test_any_device_rate_gives_the_same_windows():
    """The same real EEG delivered at 256 Hz or 500 Hz (upsampled by scipy) becomes the same network input."""
    x = _bonn("S001.txt")
    native = eeg_segments(x, FS_BONN)
    for fs_dev in (256.0, 500.0):
        t = np.arange(int(len(x) / FS_BONN * fs_dev)) / fs_dev
        up = ss.resample(x, int(round(len(x) * fs_dev / FS_BONN)))[: len(t)]
        seg = eeg_segments(up, fs_dev)
        n = min(len(seg.x), len(native.x))
        assert abs(len(seg.x) - len(native.x)) <= 1
        r = [np.corrcoef(a, b)[0, 1] for a, b in zip(seg.x[:n, 0], native.x[:n, 0], strict=True)]
        assert min(r) > 0.99
        np.testing.assert_allclose(seg.level[:n], native.level[:n], atol=0.02)


def test_nan_windows_are_not_classified_and_counted():
    x = _bonn("Z001.txt").copy()
    clean = eeg_segments(x, FS_BONN)
    x[1000:1010] = np.nan  # samples 1000-1009 at 173.61 Hz = 5.76-5.82 s
    s = EEGSegmenter(FS_BONN)
    seg = s.process(x)
    start = seg.end_s - 511 / FS
    hit = (start <= 1010 / FS_BONN) & (seg.end_s >= 999 / FS_BONN)
    assert hit.sum() == 4  # the 4 s windows that hold the gap
    np.testing.assert_array_equal(seg.valid[:, 0], ~hit)
    assert s.n_invalid == 4 and s.n_bad == 10
    before = seg.end_s < 999 / FS_BONN
    np.testing.assert_array_equal(seg.x[before], clean.x[before])  # untouched before the gap
    assert np.isfinite(seg.x).all()


def test_flat_lead_is_not_classified_and_channels_are_independent():
    x = _bonn("Z001.txt")
    two = np.stack([x, np.full_like(x, 37.0)], axis=1)  # channel 1: a disconnected, flat lead
    s = EEGSegmenter(FS_BONN, n_channels=2)
    seg = s.process(two)
    assert seg.x.shape == (20, 2, 512)
    assert seg.valid[:, 0].all() and not seg.valid[:, 1].any()
    assert s.n_invalid == 20
    np.testing.assert_array_equal(seg.x[:, 0], eeg_segments(x, FS_BONN).x[:, 0])
    assert seg.inputs()["eeg"].shape == (40, 1, 512)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="too low"):
        EEGSegmenter(1.0)
    with pytest.raises(ValueError, match="channels"):
        EEGSegmenter(FS_BONN, n_channels=1).process(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="fs"):
        EEGSegmenter(float("nan"))
