"""kernels/emg_window.py ("emg-window/1"): against a scipy/numpy reference on real MYO EMG, chunk
invariance, native 200 Hz input, and windows that are not classified (NaN, flat armband)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
from numpy.lib.stride_tricks import sliding_window_view

from vigil.kernels.emg_window import BAND, FS, EMGWindower, emg_windows
from vigil.kernels.filters import design_bandpass

DATA = Path(__file__).resolve().parent.parent / "data" / "emg_gestures_uci"
SLICE = "01_1_raw_data_13-12_22.03.16_lines2289-8788.txt.gz"  # rest, unmarked, fist


@pytest.fixture(scope="module")
def emg() -> np.ndarray:
    return np.loadtxt(DATA / SLICE, skiprows=1)[:, 1:9]


def reference(x: np.ndarray, fs_in: float, fs: float = FS, window_s: float = 0.25, hop_s: float = 0.05):
    """scipy.signal.sosfilt (step-state start) -> numpy.interp -> sliding windows -> per-channel RMS."""
    hi = min(BAND[1], 0.45 * min(fs_in, fs))
    sos = design_bandpass(BAND[0], hi, fs_in)
    y = ss.sosfilt(sos, x, axis=0, zi=ss.sosfilt_zi(sos)[:, :, None] * x[0][None, None, :])[0]
    r = fs_in / fs
    j = np.arange(int(np.floor((len(x) - 1) / r)) + 1)
    j = j[j * r <= len(x) - 1]
    z = np.stack([np.interp(j * r, np.arange(len(x)), y[:, c]) for c in range(x.shape[1])], axis=1)
    size, hop = round(window_s * fs), round(hop_s * fs)
    w = sliding_window_view(z, size, axis=0)[::hop]  # [k, ch, size]
    c = w - w.mean(axis=2, keepdims=True)
    rms = np.sqrt((c**2).mean(axis=2))  # [k, ch]
    lg = np.log10(rms)
    return c / rms[:, :, None], lg - lg.mean(axis=1, keepdims=True), lg.mean(axis=1) + 4.0  # level re 1e-4 V


def test_matches_scipy_numpy_reference_on_real_emg(emg: np.ndarray):
    win = emg_windows(emg, 1000.0)
    want_x, want_pattern, want_level = reference(emg, 1000.0)
    assert win.x.shape == (len(want_x), 8, 50) and win.x.dtype == np.float32
    assert len(want_x) == 126  # 6.5 s at 200 Hz: (1300 - 50) // 10 + 1
    np.testing.assert_allclose(win.x, want_x, atol=2e-5)
    np.testing.assert_allclose(win.pattern, want_pattern, atol=1e-6)
    np.testing.assert_allclose(win.level, want_level, atol=1e-6)
    assert win.valid.all()
    inp = win.inputs()
    assert (
        inp["emg"].shape == (126, 8, 50)
        and inp["pattern"].shape == (126, 8)
        and inp["level"].shape == (126, 1)
    )
    # the fist is far stronger than rest (rows 0-2114 are rest, 4137-5930 fist at 1 kHz)
    assert np.median(win.level[win.end_s < 2.0]) + 0.5 < np.median(
        win.level[(win.end_s > 4.5) & (win.end_s < 5.8)]
    )


def test_chunked_stream_equals_batch_exactly(emg: np.ndarray):
    batch = emg_windows(emg, 1000.0)
    s = EMGWindower(1000.0)
    rng = np.random.default_rng(2)
    parts, i = [], 0
    while i < len(emg):
        n = int(rng.integers(1, 700))
        parts.append(s.process(emg[i : i + n]))
        i += n
    for field in ("x", "pattern", "level", "valid", "end_s"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(p, field) for p in parts]), getattr(batch, field)
        )


def test_native_200_hz_armband_needs_no_resampling(emg: np.ndarray):
    """A MYO streams 200 Hz: the windows are the filtered samples themselves."""
    x200 = emg[::5]
    win = emg_windows(x200, 200.0)
    want_x, want_pattern, want_level = reference(x200, 200.0)
    np.testing.assert_allclose(win.x, want_x, atol=2e-5)
    np.testing.assert_allclose(win.pattern, want_pattern, atol=1e-6)
    np.testing.assert_allclose(win.level, want_level, atol=1e-6)


def test_nan_windows_are_not_classified_and_counted(emg: np.ndarray):
    x = emg.copy()
    x[3000, 5] = np.nan  # one sample, one channel, at 3.0 s
    s = EMGWindower(1000.0)
    win = s.process(x)
    start = win.end_s - 49 / FS
    hit = (start <= 3.001) & (win.end_s >= 2.999)
    assert 4 <= hit.sum() <= 6  # the 250 ms windows every 50 ms that hold the sample
    np.testing.assert_array_equal(win.valid, ~hit)
    assert s.n_invalid == hit.sum() and s.n_bad == 1
    assert np.isfinite(win.x).all()


def test_flat_armband_or_lifted_electrode_is_not_classified(emg: np.ndarray):
    s = EMGWindower(1000.0)
    win = s.process(np.zeros((2000, 8)))
    assert len(win.valid) == 36 and not win.valid.any() and s.n_invalid == 36
    x = emg.copy()
    x[:, 3] = 2e-5  # one electrode stuck at a constant
    s = EMGWindower(1000.0)
    win = s.process(x)
    assert not win.valid[win.end_s > 1.0].any()  # once the filter has settled on the constant
    assert np.isfinite(win.pattern).all() and np.isfinite(win.x).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="channels"):
        EMGWindower(1000.0, n_channels=8).process(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="too low"):
        EMGWindower(15.0)
