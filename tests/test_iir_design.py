"""The numpy filter designs against scipy.signal, their reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal as ss

from vigil.kernels import iir_design as D

DESIGNS = [
    (btype, cutoff)
    for btype, cutoff in (
        ("lowpass", 40.0),
        ("highpass", 0.5),
        ("highpass", 40.0),
        ("bandpass", (0.5, 40.0)),
        ("bandpass", (5.0, 15.0)),
        ("bandpass", (20.0, 110.0)),
    )
]


@pytest.mark.parametrize("fs", [250.0, 360.0, 500.0, 1000.0])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize(("btype", "cutoff"), DESIGNS)
def test_butterworth_matches_scipy(fs, order, btype, cutoff):
    ours = D.butter_sos(order, cutoff, btype, fs)
    ref = ss.butter(order, cutoff, btype=btype, fs=fs, output="sos")
    assert ours.shape == ref.shape
    f = np.linspace(0.01, fs / 2 - 0.01, 2000)
    h_ours = ss.sosfreqz(ours, worN=f, fs=fs)[1]
    h_ref = ss.sosfreqz(ref, worN=f, fs=fs)[1]
    assert np.max(np.abs(h_ours - h_ref)) < 1e-9
    if order % 2 == 0:  # even orders: the same sections, in the same order
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("f0", "q", "fs"), [(50.0, 30.0, 500.0), (60.0, 30.0, 360.0), (50.0, 10.0, 250.0)])
def test_notch_matches_scipy(f0, q, fs):
    b, a = ss.iirnotch(f0, q, fs=fs)
    np.testing.assert_allclose(D.notch_sos(f0, q, fs), ss.tf2sos(b, a), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_step_state_and_group_delay_match_scipy(order):
    sos = ss.butter(order, (5.0, 15.0), btype="bandpass", fs=360.0, output="sos")
    np.testing.assert_allclose(D.sos_step_state(sos), ss.sosfilt_zi(sos), rtol=1e-10, atol=1e-13)
    for f in (3.0, 10.0, 30.0):
        ref = sum(ss.group_delay((s[:3], s[3:]), w=[f], fs=360.0)[1][0] for s in sos)
        assert D.sos_group_delay(sos, f, 360.0) == pytest.approx(ref, rel=1e-9)


def test_bad_type_and_order():
    with pytest.raises(ValueError):
        D.butter_sos(2, 10.0, "bandstop", 100.0)
    with pytest.raises(ValueError):
        D.butter_sos(0, 10.0, "lowpass", 100.0)


def test_monitor_path_does_not_import_scipy_signal():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from vigil.kernels import filters, qrs\n"
        "filters.SOSFilter(filters.design_default('ecg', 250.0, mains=50), 2).process(np.zeros((10, 2)))\n"
        "qrs.detect(np.zeros(2000), 250.0)\n"
        "print('scipy.signal' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
