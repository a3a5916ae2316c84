"""The MIT-BIH beat pretext of ecg-rhythm: step targets against a per-beat reference, and the windows
of a real vendored record (208: DS1, rich in V beats) carry the classes its annotations say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vigil.firmware_bridge.replay import read_wfdb
from vigil.kernels.beat_features import aami_class
from vigil.kernels.rhythm_strip import StripParams
from vigil.models.rhythm_pretext import IGNORE, STEP_CLASSES, STEPS, pretext_windows, step_labels

MITDB = Path(__file__).resolve().parent.parent / "data" / "mitdb"


def test_step_labels_put_each_beat_in_its_step():
    rng = np.random.default_rng(0)
    window, starts = 1000, np.array([0, 250, 900])
    beats = np.sort(rng.choice(3000, 25, replace=False))
    classes = rng.integers(-1, 5, len(beats))
    got = step_labels(starts, beats, classes, window)
    want = np.zeros((len(starts), STEPS), dtype=np.int64)
    for i, s in enumerate(starts):
        for b, c in zip(beats, classes, strict=True):
            if s <= b < s + window:
                want[i, int((b - s) * STEPS / window)] = c + 1 if c >= 0 else IGNORE
    np.testing.assert_array_equal(got, want)


def test_pretext_windows_of_208_carry_its_beat_classes():
    params = StripParams()
    x, y = pretext_windows(MITDB, ("208", "999"), params, hop_s=10.0)  # 999 absent: skipped
    assert x["ecg"].shape[1:] == (1, params.window) and len(x["ecg"]) == len(y) == len(x["rr"])
    assert y.shape[1] == STEPS and set(np.unique(y)) <= {IGNORE, *range(STEP_CLASSES)}
    ann = read_wfdb(MITDB / "208", channels=[0]).annotations
    v_ref = sum(aami_class(s) == 2 for s in ann.symbol)
    v_steps = int(np.sum(y == 3))  # V is class 2, step label 3; windows tile the record once
    assert 0.9 * v_ref <= v_steps <= v_ref, (v_steps, v_ref)


def test_a_second_lead_adds_the_same_labels_on_its_own_waveform():
    params = StripParams()
    one, y1 = pretext_windows(MITDB, ("208",), params, hop_s=60.0)
    two, y2 = pretext_windows(MITDB, ("208",), params, hop_s=60.0, leads=(0, 1))
    n = len(y1)
    assert len(y2) == 2 * n
    np.testing.assert_array_equal(y2[:n], y1)
    np.testing.assert_array_equal(y2[n:], y1)  # the annotations label both leads
    np.testing.assert_array_equal(two["ecg"][:n], one["ecg"])
    assert not np.allclose(two["ecg"][n:], one["ecg"])  # V1, not MLII again


def test_no_record_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="none of the MIT-BIH records"):
        pretext_windows(tmp_path, ("101",), StripParams())
