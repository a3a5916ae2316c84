"""eeg-seizure: the shipped artifacts (models/zoo) against their card on the vendored Bonn segments
(ONNX Runtime only), the INT8-vs-FP32 floor, the alarm rule, and a quick end-to-end training run."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from vigil.export.card import PRECISIONS, load_card
from vigil.export.runtime import load_model
from vigil.models import seizure as S
from vigil.models.metrics import macro_f1
from vigil.models.registry import REPO, ZOO
from vigil.models.window_classifier import softmax

STEM = ZOO / S.NAME
VENDORED = REPO / "data" / "bonn_eeg"


@pytest.fixture(scope="module")
def card():
    return load_card(STEM)


@pytest.fixture(scope="module")
def vendored() -> dict[str, np.ndarray]:
    return S.windows(S.load_vendored(VENDORED, S.VENDORED_ALL))


def test_vendored_files_match_their_provenance():
    text = (VENDORED / "PROVENANCE.md").read_text()
    for seg in S.VENDORED_ALL:
        path = next(VENDORED.glob(f"{seg}.[tT][xX][tT]"))
        assert hashlib.sha256(path.read_bytes()).hexdigest() in text, path.name


def test_card_states_what_the_network_takes_and_the_floors(card, vendored):
    assert card.task == "eeg-seizure" and card.classes == ("non-seizure", "seizure")
    assert card.preprocessing["id"] == "eeg-segment/1" and card.fs == 128.0
    assert card.inputs == {"eeg": (-1, 1, vendored["eeg"].shape[-1]), "level": (-1, 1)}
    size = card.metrics["size"]
    assert size["parameters"] <= 100_000
    assert card.artifacts["int8"].bytes <= 100 * 1024 and size["int8_kb"] <= 100
    assert card.artifacts["int8-tensorrt"].bytes <= 100 * 1024 and size["int8_tensorrt_kb"] <= 100
    assert card.metrics["onnx_parity_max_abs"] <= 1e-4
    for p in ("fp32", "int8"):
        lat = card.latency[p]
        assert 0 < lat["p50_ms"] <= lat["p99_ms"]
    # the floor on the full (out-of-fold) validation, recomputed from the card's own figures
    fp, q = card.metrics["validation"]["fp32"], card.metrics["validation"]["int8"]
    assert 100 * (fp["macro_f1"] - q["macro_f1"]) <= 1.0
    assert 100 * (fp["sensitivity"] - q["sensitivity"]) <= 2.0
    assert 100 * (fp["specificity"] - q["specificity"]) <= 2.0


@pytest.mark.parametrize("precision", PRECISIONS)
def test_shipped_artifacts_reproduce_the_cards_vendored_metrics(card, precision: str):
    """Tolerance: window and alarm counts exact, probabilities within 1e-4, delays within 1e-3 s."""
    want = card.metrics["vendored"][precision]
    got = S.vendored_metrics(STEM, precision, VENDORED)
    for key in ("segments", "windows", "seizure_windows", "flagged_seizure", "flagged_non_seizure",
                "stream_non_seizure"):  # fmt: skip
        assert got[key] == want[key], key
    for key in ("sensitivity", "specificity", "macro_f1"):
        assert got[key] == pytest.approx(want[key], abs=1e-6)
    for seg, p in want["mean_p_seizure"].items():
        assert got["mean_p_seizure"][seg] == pytest.approx(p, abs=1e-4)
    assert got["detection"].keys() == want["detection"].keys()
    for k, d in want["detection"].items():
        assert got["detection"][k]["alarms_before"] == d["alarms_before"]
        assert (got["detection"][k]["delay_s"] is None) == (d["delay_s"] is None)
        if d["delay_s"] is not None:
            assert got["detection"][k]["delay_s"] == pytest.approx(d["delay_s"], abs=1e-3)


@pytest.mark.parametrize("int8", ["int8", "int8-tensorrt"])
def test_int8_keeps_macro_f1_and_per_class_sensitivity_on_real_windows(vendored, int8: str):
    y = vendored["label"]
    preds = {}
    for p in ("fp32", int8):
        m = load_model(STEM, precision=p, providers="cpu", fs=S.FS, task=S.NAME)
        preds[p] = (softmax(m.run(S.inputs_of(vendored)))[:, 1] > S.ALARM["threshold"]).astype(int)
    assert (y == 1).sum() == 40 and (y == 0).sum() == 100
    assert macro_f1(y, preds["fp32"], 2) - macro_f1(y, preds[int8], 2) <= 0.01
    for c in (0, 1):
        se = {p: np.mean(preds[p][y == c] == c) for p in preds}
        assert se["fp32"] - se[int8] <= 0.02, c


def test_alarm_rule_needs_consecutive_windows_and_counts_rising_edges():
    p = np.array([0.9, 0.1, 0.9, 0.9, 0.9, 0.2, np.nan, 0.8, 0.8, 0.6])
    state = S.alarm_state(p, 0.5, 2)
    np.testing.assert_array_equal(state, [0, 0, 0, 1, 1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(S.alarm_onsets(state), [3, 8])
    assert not S.alarm_state(np.full(5, np.nan), 0.5, 1).any()  # unclassified windows never alarm


def test_stream_detection_delay_and_splices():
    segs = S.load_vendored(VENDORED, ("F001", "S001"))
    st = S.stream(segs)
    assert st.ids == ["F001", "S001"] and st.starts_s[1] == pytest.approx(4097 / S.FS_BONN)
    assert st.straddles().sum() == 4  # windows ending 23.99-26.99 s hold the splice at 23.6 s
    p = np.where(st.window_seg == 1, 0.9, 0.1)  # a detector that fires once a window ends in S
    delay, before = S.detection(st, p)
    first_in_s = st.end_s[st.window_seg == 1]
    assert before == 0 and delay == pytest.approx(first_in_s[1] - st.starts_s[1])


def test_quick_training_runs_end_to_end_and_is_reproducible(tmp_path: Path):
    pytest.importorskip("torch", reason="training needs the train extra")
    pytest.importorskip("onnx", reason="export needs the train extra")
    from vigil.edge.cli import main

    data = tmp_path / "data"
    for seg in S.VENDORED_ALL:
        src = next(VENDORED.glob(f"{seg}.[tT][xX][tT]"))
        (data / "bonn_eeg" / seg[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, data / "bonn_eeg" / seg[0] / src.name)
    hashes = []
    for run in ("a", "b"):
        zoo = tmp_path / run
        assert main(["train", "eeg-seizure", "--quick", "--data", str(data), "--zoo", str(zoo)]) == 0
        card = load_card(zoo / S.NAME)
        hashes.append(card.artifacts["fp32"].sha256)
        assert card.metrics["validation"]["split"] == "2-fold segment-disjoint"
        assert card.metrics["calibration"]["chosen"] in ("minmax", "entropy", "percentile")
        m = load_model(zoo / S.NAME, precision="int8", providers="cpu")
        assert m.run(S.inputs_of(S.windows(S.load_vendored(VENDORED, ("S001",))))).shape == (20, 2)
    assert hashes[0] == hashes[1]  # same seed, same network
    assert main(["export", "eeg-seizure", "--data", str(data), "--zoo", str(tmp_path / "a")]) == 0
    assert load_card(tmp_path / "a" / S.NAME).artifacts["fp32"].sha256 == hashes[0]
