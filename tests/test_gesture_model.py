"""emg-gesture: the shipped artifacts (models/zoo) against their card on the vendored MYO slices
(ONNX Runtime only), the INT8-vs-FP32 floor, window labelling, and a quick end-to-end training run."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vigil.export.card import PRECISIONS, load_card
from vigil.export.runtime import load_model
from vigil.kernels.emg_window import HOP_S
from vigil.models import gesture as G
from vigil.models.metrics import macro_f1
from vigil.models.registry import REPO, ZOO

STEM = ZOO / G.NAME
VENDORED = REPO / "data" / "emg_gestures_uci"


@pytest.fixture(scope="module")
def card():
    return load_card(STEM)


def test_vendored_files_match_their_provenance():
    text = (VENDORED / "PROVENANCE.md").read_text()
    for name in G.VENDORED:
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() in text, name


def test_card_states_what_the_network_takes_and_the_floors(card):
    assert card.task == "emg-gesture" and card.classes == G.CLASSES
    assert card.preprocessing["id"] == "emg-window/1" and card.fs == 200.0
    assert card.inputs == {"emg": (-1, 8, 50), "pattern": (-1, 8), "level": (-1, 1)}
    size = card.metrics["size"]
    assert size["parameters"] <= 100_000
    assert card.artifacts["int8"].bytes <= 100 * 1024 and size["int8_kb"] <= 100
    assert card.artifacts["int8-tensorrt"].bytes <= 100 * 1024 and size["int8_tensorrt_kb"] <= 100
    assert card.metrics["onnx_parity_max_abs"] <= 1e-4
    for p in ("fp32", "int8"):
        lat = card.latency[p]
        assert 0 < lat["p50_ms"] <= lat["p99_ms"]
    fp, q = card.metrics["validation"]["fp32"], card.metrics["validation"]["int8"]
    assert 100 * (fp["macro_f1"] - q["macro_f1"]) <= 1.0
    for c in G.CLASSES:
        assert 100 * (fp["per_class"][c]["sensitivity"] - q["per_class"][c]["sensitivity"]) <= 2.0, c


@pytest.mark.parametrize("precision", PRECISIONS)
def test_shipped_artifacts_reproduce_the_cards_vendored_metrics(card, precision: str):
    """Tolerance: exact (window counts and the classes given; rates from them to 1e-6)."""
    want = card.metrics["vendored"][precision]
    got = G.vendored_metrics(STEM, precision, VENDORED)
    for key in ("files", "windows_labelled", "windows_unmarked", "correct", "unmarked_predicted_as"):
        assert got[key] == want[key], key
    for key in ("accuracy", "macro_f1"):
        assert got[key] == pytest.approx(want[key], abs=1e-6)
    assert got["sensitivity"] == pytest.approx(want["sensitivity"], abs=1e-6)


@pytest.mark.parametrize("int8", ["int8", "int8-tensorrt"])
def test_int8_keeps_macro_f1_and_per_class_sensitivity_on_real_windows(int8: str):
    """Every labelled window of the vendored slices, 250 ms every 10 ms (about 150 per gesture, so one
    window is under a point of sensitivity)."""
    w = G.windows(G.load_vendored(VENDORED), hop_s=0.01)
    lab = w["label"] >= 0
    y = w["label"][lab]
    assert set(np.unique(y)) == set(range(6)) and np.bincount(y).min() >= 140
    preds = {}
    for p in ("fp32", int8):
        m = load_model(STEM, precision=p, providers="cpu", fs=G.FS, task=G.NAME)
        preds[p] = m.run(G.inputs_of(w, lab)).argmax(1)
    assert macro_f1(y, preds["fp32"], 6) - macro_f1(y, preds[int8], 6) <= 0.01
    for c in range(6):
        se = {p: np.mean(preds[p][y == c] == c) for p in preds}
        assert se["fp32"] - se[int8] <= 0.02, G.CLASSES[c]


def test_window_labels_need_one_label_throughout():
    label = np.array([1] * 1000 + [0] * 500 + [2] * 1000)
    lab = G.window_labels(label, n_windows=46, size=50, hop=10, ratio=5.0)
    ends = (np.arange(46) * 10 + 49) * 5  # last input row of each window
    starts = np.arange(46) * 50
    assert (lab[ends < 1000] == 1).all() and (lab[(starts >= 1000) & (ends < 1500)] == 0).all()
    assert (lab[starts >= 1500] == 2).all()
    assert (lab[(starts < 1000) & (ends >= 1000)] == -1).all()
    w = G.windows(G.load_vendored(VENDORED)[:1], hop_s=HOP_S)
    assert set(np.unique(w["label"])) == {G.UNMARKED, 0, 1}  # the slice: rest, unmarked, fist


def test_quick_training_runs_end_to_end_and_is_reproducible(tmp_path: Path):
    """The vendored slices laid out as the data set (subjects 01, 04, 05): a pipeline check only."""
    pytest.importorskip("torch", reason="training needs the train extra")
    pytest.importorskip("onnx", reason="export needs the train extra")
    from vigil.edge.cli import main

    data = tmp_path / "data" / "emg_gestures_uci"
    for name in G.VENDORED:
        (data / name[:2]).mkdir(parents=True, exist_ok=True)
        shutil.copy(VENDORED / name, data / name[:2] / name[3:])  # as distributed: NN/<series>_raw_data_*
    hashes = []
    for run in ("a", "b"):
        zoo = tmp_path / run
        assert (
            main(["train", "emg-gesture", "--quick", "--data", str(tmp_path / "data"), "--zoo", str(zoo)])
            == 0
        )
        card = load_card(zoo / G.NAME)
        hashes.append(card.artifacts["fp32"].sha256)
        assert card.metrics["validation"]["split"] == "2-fold subject-disjoint"
        m = load_model(zoo / G.NAME, precision="int8", providers="cpu")
        w = G.windows(G.load_vendored(VENDORED)[:1])
        assert m.run(G.inputs_of(w)).shape == (len(w["label"]), 6)
    assert hashes[0] == hashes[1]
    assert (
        main(["export", "emg-gesture", "--data", str(tmp_path / "data"), "--zoo", str(tmp_path / "a")]) == 0
    )
    assert load_card(tmp_path / "a" / G.NAME).artifacts["fp32"].sha256 == hashes[0]


def test_models_do_not_pull_torch_into_the_monitor():
    """Scoring the shipped model (vendored_metrics) needs ONNX Runtime only, never torch."""
    code = (
        "import sys; from vigil.models import gesture as G, seizure as S; "
        "from vigil.models.registry import ZOO; "
        "G.vendored_metrics(ZOO / G.NAME, 'int8'); S.vendored_metrics(ZOO / S.NAME, 'int8'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
