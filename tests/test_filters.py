"""The SOS filter kernel against scipy.signal on real ECG, streaming, bad samples and misuse."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal as ss
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.firmware_bridge.replay import read_wfdb
from vigil.kernels import filters as F


@pytest.fixture(scope="module")
def ecg(data_dir):
    """Two leads of MIT-BIH 208, first 60 s, mV."""
    return read_wfdb(data_dir / "mitdb" / "208").signal[: 360 * 60]


@pytest.mark.parametrize("modality", ["ecg", "eeg", "emg"])
def test_matches_scipy_float64(ecg, modality):
    fs = 360.0 if modality != "emg" else 1000.0
    sos = F.design_default(modality, fs, mains=60)
    zi = np.random.default_rng(0).normal(size=(sos.shape[0], 2, ecg.shape[1]))
    y, zf = F.sosfilt(sos, ecg, zi)
    y_ref, zf_ref = ss.sosfilt(sos, ecg, axis=0, zi=zi)
    scale = np.max(np.abs(y_ref))
    assert np.max(np.abs(y - y_ref)) <= 1e-9 * scale
    assert np.max(np.abs(zf - zf_ref)) <= 1e-9 * np.max(np.abs(zf_ref))


def test_matches_scipy_without_zi_and_one_dimensional(ecg):
    sos = F.design_default("ecg", 360.0)
    x = ecg[:, 0]
    np.testing.assert_allclose(F.sosfilt(sos, x), ss.sosfilt(sos, x), rtol=1e-9, atol=1e-12)
    zi = np.ones((sos.shape[0], 2))
    y, zf = F.sosfilt(sos, x, zi)
    y_ref, zf_ref = ss.sosfilt(sos, x, zi=zi)
    assert zf.shape == zi.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(zf, zf_ref, rtol=1e-9, atol=1e-12)


def test_float32_keeps_dtype_and_accuracy(ecg):
    sos = F.design_default("ecg", 360.0)
    zi = np.zeros((sos.shape[0], 2, 2))
    y, _ = F.sosfilt(sos, ecg.astype(np.float32), zi)
    y_ref = ss.sosfilt(sos, ecg, axis=0)
    assert y.dtype == np.float32
    assert np.max(np.abs(y - y_ref)) <= 1e-5 * np.max(np.abs(y_ref))


def test_integer_input_is_filtered_as_float64():
    sos = F.design_lowpass(10.0, 100.0)
    x = np.arange(50, dtype=np.int16)
    np.testing.assert_allclose(F.sosfilt(sos, x), ss.sosfilt(sos, x.astype(float)), rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12))
def test_chunked_equals_batch(ecg, cuts):
    sos = F.design_default("ecg", 360.0, mains=60)
    x = ecg[:3000]
    batch, _ = F.sosfilt(sos, x, np.zeros((sos.shape[0], 2, 2)))
    stream = F.SOSFilter(sos, 2, init="zeros")
    bounds = [0, *sorted(cuts), len(x)]
    parts = [stream.process(x[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    np.testing.assert_array_equal(np.vstack(parts), batch)


@pytest.mark.parametrize("size", [1, 7, 360])
def test_stream_fixed_chunks_equal_batch(ecg, size):
    sos = F.design_default("ecg", 360.0)
    x = ecg[:2000]
    batch, _ = F.sosfilt(sos, x, np.zeros((sos.shape[0], 2, 2)))
    stream = F.SOSFilter(sos, 2, init="zeros")
    out = np.vstack([stream.process(x[i : i + size]) for i in range(0, len(x), size)])
    np.testing.assert_array_equal(out, batch)


def test_step_init_removes_start_transient():
    sos = F.design_lowpass(5.0, 250.0)
    x = np.full((500, 1), 3.0)
    y = F.SOSFilter(sos, 1, init="step").process(x)
    np.testing.assert_allclose(y, 3.0, rtol=1e-9)


def test_nan_is_held_and_counted_not_propagated(ecg):
    sos = F.design_default("ecg", 360.0)
    x = ecg[:4000].copy()
    x[1000:1010, 0] = np.nan
    x[2000, 1] = np.inf
    f = F.SOSFilter(sos, 2)
    y = f.process(x)
    assert np.all(np.isfinite(y))
    assert f.n_bad == 11
    # the held value is the last finite sample, so the output equals filtering the held signal
    held = x.copy()
    held[1000:1010, 0] = x[999, 0]
    held[2000, 1] = x[1999, 1]
    np.testing.assert_allclose(y, F.SOSFilter(sos, 2).process(held), rtol=1e-12)


def test_state_is_small():
    f = F.SOSFilter(F.design_default("ecg", 500.0, mains=50), 64)
    assert f.state_bytes <= 64


def test_notch_and_band_edges():
    fs = 500.0
    notch = F.design_notch(50.0, fs)
    _, h = ss.sosfreqz(notch, worN=[50.0, 10.0, 100.0], fs=fs)
    assert abs(h[0]) < 1e-6 and abs(h[1]) > 0.99 and abs(h[2]) > 0.99
    band = F.design_bandpass(0.5, 40.0, fs)
    _, h = ss.sosfreqz(band, worN=[0.5, 10.0, 40.0], fs=fs)
    np.testing.assert_allclose(np.abs(h), [2**-0.5, 1.0, 2**-0.5], atol=0.02)


def test_default_band_clipped_to_sampling_rate():
    sos = F.design_default("emg", 200.0)
    _, h = ss.sosfreqz(sos, worN=[50.0], fs=200.0)
    assert abs(h[0]) > 0.9


@pytest.mark.parametrize(
    "call",
    [
        lambda: F.sosfilt(np.ones((2, 5)), np.zeros(10)),
        lambda: F.sosfilt(np.array([[1, 0, 0, 2, 0, 0]]), np.zeros(10)),
        lambda: F.sosfilt(np.array([[np.nan, 0, 0, 1, 0, 0]]), np.zeros(10)),
        lambda: F.sosfilt(F.design_lowpass(5, 100), np.zeros((2, 2, 2))),
        lambda: F.sosfilt(F.design_lowpass(5, 100), np.zeros(10), np.zeros((3, 2))),
        lambda: F.sosfilt(F.design_lowpass(5, 100), np.array(["a", "b"])),
        lambda: F.design_bandpass(10, 5, 100),
        lambda: F.design_lowpass(60, 100),
        lambda: F.design_lowpass(5, 0),
        lambda: F.design_lowpass(5, float("nan")),
        lambda: F.design_default("ecg", 1e9),
        lambda: F.design_default("eog", 250),
        lambda: F.design_default("ecg", 250, mains=55),
        lambda: F.SOSFilter(F.design_lowpass(5, 100), 0),
        lambda: F.SOSFilter(F.design_lowpass(5, 100), 2).process(np.zeros((5, 3))),
    ],
)
def test_misuse_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=400),
    chunk=st.integers(min_value=1, max_value=50),
)
def test_stream_output_stays_finite_for_any_input(data, chunk):
    """NaN, inf and corrupt huge words are held; the output and the state stay finite."""
    from vigil.kernels.clean import MAX_ABS

    x = np.array(data, dtype=np.float64).reshape(-1, 1)
    f = F.SOSFilter(F.design_default("ecg", 250.0, mains=50), 1)
    y = np.vstack([f.process(x[i : i + chunk]) for i in range(0, len(x), chunk)] or [np.empty((0, 1))])
    assert y.shape == x.shape
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(f.zi))
    assert f.n_bad == int(np.sum(~(np.abs(x) <= MAX_ABS)))
