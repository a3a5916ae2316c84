"""``emg-gesture``: a small 1-D CNN that reads the hand gesture from 250 ms of 8-channel surface EMG.

Data: UCI "EMG data for gestures" (Lobov et al. 2018) in ``<data>/emg_gestures_uci``: a MYO armband
(8 dry electrodes round the forearm), two series per subject of six static gestures held ~3 s each
with ~3 s pauses between them. Rows are logged at ~1 kHz with a per-row label; subjects divisible by
3 are held back and absent. Most rows repeat the previous values (~100 distinct samples/s: the
armband's packets reached the PC in bursts and were held), so only slow structure is real; the
preprocessing low-passes and resamples to 200 Hz like any other device.

Classes: the six labelled gestures 1-6 (rest, fist, wrist flexion, wrist extension, radial and ulnar
deviation); 7 (extended palm) is absent from these files. Class 0, "unmarked", is *not* a class the
network learns: it is everything outside the marked 3 s holds (the pauses, in which the hand relaxes
toward rest, and the movements into and out of each gesture), a mix of rest-like and gesture-like
EMG with no single meaning; training on it would teach the network the protocol's timing, not a hand
state. Windows are labelled only when every sample they cover carries one label 1-6; what the
network says on unmarked windows is reported separately (as a distribution), not scored.

Input: ``emg-window/1`` (:mod:`vigil.kernels.emg_window`): 250 ms at 200 Hz (50 samples) every
50 ms, 10-90 Hz band: each channel's waveform at unit RMS, the spatial pattern (log10 RMS of each
channel less their mean) and the overall level (that mean, re 100 uV).

Network (``GestureNet``): three 1-D convolutions over the waveforms (batch norm, ReLU, mean pooling,
linear) plus a small MLP on [pattern, level]; their class scores add. Training takes every labelled
window at each of the five phases of the 200 Hz grid over the 1 kHz rows (:func:`training_windows`),
class-balanced cross-entropy and the shared biosignal augmentation, plus gain jitter on the level.

Evaluation, subject-disjoint: the subjects are dealt into ``K`` folds; each fold's network is trained
on the others' subjects only. Accuracy, macro-F1 and per-class sensitivity / positive predictivity
on every out-of-fold window, with bootstrap CIs over subjects.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vigil.export.card import PRECISIONS, ModelCard, artifacts_of, card_path
from vigil.kernels.emg_window import (
    BAND,
    FS,
    HOP_S,
    LEVEL_REF,
    MIN_RMS,
    PREPROCESSING_ID,
    WINDOW_S,
    emg_windows,
)
from vigil.models.metrics import class_stats, macro_f1
from vigil.models.registry import REPO, TrainOptions
from vigil.models.window_classifier import (
    calibration_choice,
    calibration_set,
    ci,
    fmt,
    fmt_ci,
    int8_report_lines,
    load_checkpoint,
    onnx_probs,
    pick,
    quantized_variants,
    rnd,
    save_checkpoint,
    size_kb,
    softmax,
    torch_probs,
    with_latency,
)

NAME = "emg-gesture"
CLASSES = ("rest", "fist", "wrist-flexion", "wrist-extension", "radial-deviation", "ulnar-deviation")
FS_UCI = 1000.0
K_FOLDS = 5
EPOCHS = 4
QAT_EPOCHS = 1  # then fine-tuned with 7-bit weights (models.training.weights_on_int8_grid)
PHASES = 5  # training windows at every 200 Hz grid phase of the 1 kHz rows (see training_windows)
UNMARKED = -1
VERSION = "1.0.0"
#: The real slices vendored for the tests (data/emg_gestures_uci): subjects 01, 04 and 05.
VENDORED = (
    "01_1_raw_data_13-12_22.03.16_lines2289-8788.txt.gz",
    "01_2_raw_data_13-13_22.03.16_lines700-27600.txt.gz",
    "04_1_raw_data_18-02_24.04.16_lines700-27850.txt.gz",
    "05_1_raw_data_10-28_30.03.16_lines900-28250.txt.gz",
)


@dataclass(frozen=True)
class Recording:
    """One series of one subject: EMG [samples, 8] (V, ~1 kHz) and the per-sample label (0-7)."""

    subject: int
    series: int
    x: np.ndarray
    label: np.ndarray


def read_recording(path: Path, subject: int | None = None) -> Recording:
    """A UCI text file (gzip or plain): ``time ch1..ch8 class`` with a header line. Named
    ``<subject>/<series>_raw_data_*`` as distributed or ``<subject>_<series>_raw_data_*`` (vendored
    slices); ``subject`` overrides the name."""
    path = Path(path)
    a = np.loadtxt(path, skiprows=1, ndmin=2)
    m = re.match(r"(?:(\d+)_)?(\d)_raw_data", path.name)
    series = int(m.group(2)) if m else 0
    if subject is None:
        subject = int(m.group(1)) if m and m.group(1) else int(path.parent.name)
    return Recording(int(subject), series, a[:, 1:9], a[:, 9].astype(np.int64))


def load_uci(root: Path) -> list[Recording]:
    """Every recording under ``root/<subject>/*.txt.gz``, by subject then series."""
    files = sorted(Path(root).glob("[0-9][0-9]/*_raw_data_*.txt*"))
    if not files:
        raise FileNotFoundError(f"{root}: no UCI EMG recordings (expected NN/1_raw_data_*.txt.gz)")
    return [read_recording(f) for f in files]


def window_labels(label: np.ndarray, n_windows: int, size: int, hop: int, ratio: float) -> np.ndarray:
    """Row label (0-7) of each window, or -1 when the input rows it covers carry more than one.

    Window ``k`` holds resampled samples ``[k*hop, k*hop + size)``, interpolated from input rows
    ``floor(j * ratio)`` to ``ceil(j * ratio)``.
    """
    out = np.full(n_windows, -1, dtype=np.int64)
    change = np.flatnonzero(np.diff(label)) + 1  # first row of each new run
    for k in range(n_windows):
        a = int(np.floor(k * hop * ratio))
        b = min(len(label) - 1, int(np.ceil((k * hop + size - 1) * ratio)))
        # same run iff no change index in (a, b]
        i = np.searchsorted(change, a, side="right")
        if i >= len(change) or change[i] > b:
            out[k] = label[a]
    return out


def windows(recs: list[Recording], hop_s: float = HOP_S, fs_in: float = FS_UCI) -> dict[str, np.ndarray]:
    """``emg-window/1`` windows of each recording (a fresh stream each) with their labels.

    Keeps the valid windows whose rows share one label: ``label`` is the class index (0-5 for
    gestures 1-6) or :data:`UNMARKED` (-1, rows labelled 0); ``rec`` is the recording index.
    ``n_invalid`` counts windows not classified (NaN / flat), ``n_mixed`` those straddling labels.
    """
    emg, pattern, level, labels, rec, n_invalid, n_mixed = [], [], [], [], [], 0, 0
    for i, r in enumerate(recs):
        w = emg_windows(r.x, fs_in, hop_s=hop_s)
        size, hop = w.x.shape[-1], int(round(hop_s * FS))
        lab = window_labels(r.label, len(w.valid), size, hop, fs_in / FS)
        n_invalid += int((~w.valid).sum())
        n_mixed += int((w.valid & (lab < 0)).sum())
        keep = w.valid & (lab >= 0) & (lab <= len(CLASSES))
        emg.append(w.x[keep])
        pattern.append(w.pattern[keep])
        level.append(w.level[keep, None])
        labels.append(np.where(lab[keep] == 0, UNMARKED, lab[keep] - 1))
        rec.append(np.full(int(keep.sum()), i))
    return {
        "emg": np.concatenate(emg),
        "pattern": np.concatenate(pattern),
        "level": np.concatenate(level),
        "label": np.concatenate(labels),
        "rec": np.concatenate(rec),
        "n_invalid": np.array(n_invalid),
        "n_mixed": np.array(n_mixed),
    }


def training_windows(recs: list[Recording], phases: int, fs_in: float = FS_UCI) -> dict[str, np.ndarray]:
    """:func:`windows` of each recording started ``0 .. phases-1`` input rows late, concatenated.

    At 1 kHz the 200 Hz grid takes every 5th row, so where a stream starts decides which held rows
    the network sees (a model trained at one phase lost 5 points of training accuracy at another).
    Training on every phase makes it indifferent to where the device's stream happens to start.
    """
    parts = []
    for k in range(phases):
        shifted = [Recording(r.subject, r.series, r.x[k:], r.label[k:]) for r in recs]
        parts.append(windows(shifted, fs_in=fs_in))
    out = {
        key: np.concatenate([p[key] for p in parts]) for key in ("emg", "pattern", "level", "label", "rec")
    }
    out["n_invalid"] = np.array(sum(int(p["n_invalid"]) for p in parts))
    out["n_mixed"] = np.array(sum(int(p["n_mixed"]) for p in parts))
    return out


def inputs_of(w: dict[str, np.ndarray], idx: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
    return {"emg": w["emg"][idx], "pattern": w["pattern"][idx], "level": w["level"][idx]}


def _torch_model(config: dict[str, Any] | None = None) -> Any:
    import torch
    from torch import nn

    cfg = {
        "channels": [32, 32, 48],
        "kernels": [5, 5, 3],
        "strides": [1, 2, 2],
        "hidden": 32,
        "level_jitter": 0.1,
        **(config or {}),
    }

    class GestureNet(nn.Module):
        """Two branches whose class scores add: 1-D convolutions over each window's per-channel
        waveforms (mean-pooled), and a small MLP on the spatial pattern and overall level."""

        def __init__(self) -> None:
            super().__init__()
            layers, c_in = [], 8
            for c, k, st in zip(cfg["channels"], cfg["kernels"], cfg["strides"], strict=True):
                layers += [nn.Conv1d(c_in, c, k, stride=st, padding=k // 2), nn.BatchNorm1d(c), nn.ReLU()]
                c_in = c
            self.conv = nn.Sequential(*layers)
            self.head = nn.Linear(c_in, len(CLASSES))
            self.mlp = nn.Sequential(
                nn.Linear(9, cfg["hidden"]), nn.ReLU(), nn.Linear(cfg["hidden"], len(CLASSES))
            )

        def forward(self, emg: torch.Tensor, pattern: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            if self.training and cfg["level_jitter"]:  # gain augmentation: x U(0.8, 1.25) ~ +-0.1 decade
                level = level + (torch.rand_like(level) * 2 - 1) * cfg["level_jitter"]
            waveform = self.head(self.conv(emg).mean(-1))
            return waveform + self.mlp(torch.cat([pattern, level], dim=1))

    return GestureNet(), cfg


def subject_fold(subjects: np.ndarray, k: int = K_FOLDS) -> dict[int, int]:
    """Subjects dealt into ``k`` folds in order of subject number."""
    return {int(s): i % k for i, s in enumerate(np.unique(subjects))}


def load_vendored(folder: Path = REPO / "data" / "emg_gestures_uci") -> list[Recording]:
    """The real slices vendored for the tests."""
    return [read_recording(Path(folder) / f) for f in VENDORED]


# ---------------------------------------------------------------------------------------------
# Metrics, validation, training, export.

INTENDED_USE = (
    "Research and engineering aid: reads which of six static hand postures (rest, fist, wrist flexion, "
    "extension, radial and ulnar deviation) an 8-electrode forearm armband (MYO layout) sees, from 250 ms "
    "of EMG, for gesture interfaces and activity logging in Vigil. Not a medical device; not for prosthesis "
    "control without per-user calibration and a much larger validation."
)
FAILURE_MODES = (
    "Subject-independent accuracy is far below the within-subject figures usually quoted for this data set "
    "(forearm anatomy and armband placement differ between people); one subject fold is markedly worse.",
    "Trained on static holds only: movements between gestures, dynamic gestures, and the unmarked pauses "
    "are not a class; on unmarked windows the network still answers one of the six (mostly rest).",
    "The training data reached the PC in bursts (~100 distinct samples/s held at 1 kHz): a true 200 Hz "
    "stream has more high-frequency content than the network saw.",
    "Expects the armband in the data set's orientation; a rotated armband permutes the channels.",
    "The level input is in the data set's units (V, 1 LSB = 1e-5): another unit or gain shifts it.",
    "Windows holding NaN/out-of-range samples or a flat armband (RMS <= 1e-7 V) are not classified "
    "(counted by the preprocessing).",
)


def class_metrics(
    y: np.ndarray, pred: np.ndarray, subj: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class sensitivity / +P of labelled windows, bootstrap CIs over subjects."""
    k = len(CLASSES)
    idx = np.arange(len(y))

    def acc(i: np.ndarray) -> float:
        return float(np.mean(y[i] == pred[i]))

    def mf1(i: np.ndarray) -> float:
        return macro_f1(y[i], pred[i], k)

    out: dict[str, Any] = {
        "windows": int(len(y)),
        "subjects": int(len(np.unique(subj))),
        "accuracy": rnd(acc(idx)),
        "accuracy_ci95": ci(subj, acc, n_boot, seed),
        "macro_f1": rnd(mf1(idx)),
        "macro_f1_ci95": ci(subj, mf1, n_boot, seed),
        "per_class": {},
    }
    for c, st in enumerate(class_stats(y, pred, CLASSES)):

        def se(i: np.ndarray, c: int = c) -> float:
            m = y[i] == c
            return float(np.mean(pred[i][m] == c)) if m.any() else float("nan")

        def ppv(i: np.ndarray, c: int = c) -> float:
            m = pred[i] == c
            return float(np.mean(y[i][m] == c)) if m.any() else float("nan")

        out["per_class"][st.label] = {
            "windows": st.n_ref,
            "sensitivity": rnd(st.se),
            "sensitivity_ci95": ci(subj, se, n_boot, seed),
            "ppv": rnd(st.ppv),
            "ppv_ci95": ci(subj, ppv, n_boot, seed),
        }
    return out


def unmarked_distribution(pred: np.ndarray) -> dict[str, float | None]:
    """Share of unmarked windows the network calls each class."""
    n = max(len(pred), 1)
    return {c: rnd(float(np.sum(pred == i)) / n) for i, c in enumerate(CLASSES)}


def int8_floor(fp32: dict[str, Any], int8: dict[str, Any]) -> dict[str, Any]:
    """Macro-F1 loss and per-class sensitivity loss (points) of INT8 against FP32."""
    f1_drop = 100 * (fp32["macro_f1"] - int8["macro_f1"])
    se_drop = {
        c: 100 * (fp32["per_class"][c]["sensitivity"] - int8["per_class"][c]["sensitivity"]) for c in CLASSES
    }
    return {
        "macro_f1_drop_points": rnd(f1_drop, 3),
        "sensitivity_drop_points": {c: rnd(v, 3) for c, v in se_drop.items()},
        "floor_met": bool(f1_drop <= 1.0 and max(se_drop.values()) <= 2.0),
    }


def _settings(opts: TrainOptions) -> tuple[int, int, int, int]:
    """(epochs, folds, bootstrap resamples, grid phases)."""
    if opts.quick:
        return opts.epochs or 2, 2, 100, 1
    return opts.epochs or EPOCHS, K_FOLDS, 1000, PHASES


def _fit(
    w: dict[str, np.ndarray], idx: np.ndarray, epochs: int, seed: int, progress: bool, label: str
) -> Any:
    from vigil.models.training import train_classifier

    build = lambda: _torch_model()[0]  # noqa: E731
    return train_classifier(
        build,
        inputs_of(w, idx),
        w["label"][idx],
        len(CLASSES),
        ("emg",),
        epochs,
        seed,
        progress,
        label,
        qat_epochs=QAT_EPOCHS,
    )


def cross_validate(recs: list[Recording], opts: TrainOptions) -> dict[str, Any]:
    """Subject-disjoint K-fold validation: FP32 and every INT8 calibration, out-of-fold."""
    import tempfile

    from vigil.export.quantize import METHODS

    epochs, k, n_boot, phases = _settings(opts)
    subjects = np.array([r.subject for r in recs])
    fmap = subject_fold(subjects, k)
    if len(set(fmap.values())) < k:
        raise ValueError(f"{k} subject folds need at least {k} subjects, got {len(fmap)}")
    w = windows(recs)
    wsubj = subjects[w["rec"]]
    wfold = np.array([fmap[s] for s in wsubj])
    labelled = w["label"] >= 0
    tw = training_windows(recs, phases)
    tfold = np.array([fmap[s] for s in subjects[tw["rec"]]])
    precisions = ("fp32", *METHODS)
    pred = {m: np.full(len(w["label"]), -1) for m in precisions}
    for f in range(k):
        itr = np.flatnonzero((tfold != f) & (tw["label"] >= 0))
        ite = np.flatnonzero(wfold == f)
        model = _fit(tw, itr, epochs, opts.seed + 1 + f, opts.progress, f"emg-gesture fold {f + 1}/{k}")
        rng = np.random.default_rng(opts.seed + 100 + f)
        with tempfile.TemporaryDirectory() as tmp:
            paths = quantized_variants(
                model,
                calibration_set(inputs_of(tw, itr), 1024, rng),
                pick(inputs_of(tw, itr), 256, rng),
                Path(tmp),
                METHODS,
            )
            pred["fp32"][ite] = torch_probs(model, inputs_of(w, ite)).argmax(1)
            for m in METHODS:
                pred[m][ite] = onnx_probs(paths[m], inputs_of(w, ite)).argmax(1)
    y = w["label"]
    res: dict[str, Any] = {
        "folds": k,
        "epochs": epochs,
        "qat_epochs": QAT_EPOCHS,
        "training_windows_per_fold_mean": int(
            np.mean([np.sum((tfold != f) & (tw["label"] >= 0)) for f in range(k)])
        ),
        "fold_subjects": {str(f): sorted(int(s) for s, g in fmap.items() if g == f) for f in range(k)},
        "windows_labelled": int(labelled.sum()),
        "windows_unmarked": int((~labelled).sum()),
        "windows_mixed_label_skipped": int(w["n_mixed"]),
        "n_invalid": int(w["n_invalid"]),
        "by_precision": {},
    }
    for m in precisions:
        r = class_metrics(y[labelled], pred[m][labelled], wsubj[labelled], n_boot)
        r["per_fold_accuracy"] = {
            str(f): rnd(float(np.mean(pred[m][(wfold == f) & labelled] == y[(wfold == f) & labelled])))
            for f in range(k)
        }
        r["unmarked_predicted_as"] = unmarked_distribution(pred[m][~labelled])
        res["by_precision"][m] = r
    res["calibration"] = calibration_choice(res["by_precision"], METHODS, int8_floor)
    return res


def train(opts: TrainOptions) -> ModelCard:
    """Validate subject-disjointly, train the final network on every subject, save and export it."""
    import torch

    from vigil.models.training import count_parameters

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    recs = load_uci(Path(opts.data) / "emg_gestures_uci")
    cv = cross_validate(recs, opts)
    epochs, _, _, phases = _settings(opts)
    w = training_windows(recs, phases)
    idx = np.flatnonzero(w["label"] >= 0)
    model = _fit(w, idx, epochs, opts.seed, opts.progress, "emg-gesture final")
    _, config = _torch_model()
    training = {
        "seconds": round(time.perf_counter() - t0, 1),
        "seed": opts.seed,
        "epochs": epochs,
        "qat_epochs": QAT_EPOCHS,
        "grid_phases": phases,
        "quick": opts.quick,
        "parameters": count_parameters(model),
        "subjects": sorted({r.subject for r in recs}),
        "recordings": len(recs),
        "windows": int(len(idx)),
    }
    save_checkpoint(Path(opts.zoo) / f"{NAME}.pt", model, config, cv, training)
    card = export(opts)
    print(report(card))
    return card


def vendored_metrics(
    stem: Path, precision: str, folder: Path = REPO / "data" / "emg_gestures_uci"
) -> dict[str, Any]:
    """What the shipped artifact does on the vendored slices (``load_model``, CPU): windows per class,
    accuracy, macro-F1, per-class sensitivity, and the classes it gives unmarked windows."""
    from vigil.export.runtime import load_model

    m = load_model(stem, precision=precision, providers="cpu", threads=1, fs=FS, task=NAME)
    w = windows(load_vendored(folder))
    pred = softmax(m.run(inputs_of(w))).argmax(1)
    y = w["label"]
    lab = y >= 0
    yl, pl = y[lab], pred[lab]
    return {
        "files": list(VENDORED),
        "windows_labelled": int(lab.sum()),
        "windows_unmarked": int((~lab).sum()),
        "correct": int(np.sum(yl == pl)),
        "accuracy": rnd(float(np.mean(yl == pl)), 6),
        "macro_f1": rnd(macro_f1(yl, pl, len(CLASSES)), 6),
        "sensitivity": {s.label: rnd(s.se, 6) for s in class_stats(yl, pl, CLASSES)},
        "unmarked_predicted_as": {c: int(np.sum(pred[~lab] == i)) for i, c in enumerate(CLASSES)},
    }


def export(opts: TrainOptions) -> ModelCard:
    """From ``<zoo>/emg-gesture.pt``: FP32 and INT8 ONNX (calibration chosen out of fold), the card."""
    import torch

    from vigil.export.onnx_export import export_onnx
    from vigil.export.quantize import int8_artifacts

    torch.set_num_threads(1)
    zoo = Path(opts.zoo)
    model, saved = load_checkpoint(zoo / f"{NAME}.pt", lambda config: _torch_model(config)[0])
    cv, training = saved["validation"], saved["training"]
    method = cv["calibration"]["chosen"]
    w = windows(load_uci(Path(opts.data) / "emg_gestures_uci"))
    lab = np.flatnonzero(w["label"] >= 0)
    rng = np.random.default_rng(opts.seed)
    calib, check = calibration_set(inputs_of(w, lab), 1024, rng), pick(inputs_of(w, lab), 256, rng)
    fp32, int8 = zoo / f"{NAME}.fp32.onnx", zoo / f"{NAME}.int8.onnx"
    parity = export_onnx(model, {k: v[:4] for k, v in check.items()}, fp32, check_inputs=check)
    int8s = int8_artifacts(fp32, calib, method)
    bp = cv["by_precision"]
    metrics: dict[str, Any] = {
        "validation": {
            "fp32": bp["fp32"],
            "int8": bp[method],
            "split": f"{cv['folds']}-fold subject-disjoint",
        },
        "int8_vs_fp32_validation": int8_floor(bp["fp32"], bp[method]),
        "calibration": {**cv["calibration"], "calibration_windows": len(calib["emg"])},
        "int8_other_calibrations": {m: bp[m] for m in bp if m not in ("fp32", method)},
        "onnx_parity_max_abs": parity,
        "size": {
            "parameters": training["parameters"],
            "fp32_kb": size_kb(fp32),
            "int8_kb": size_kb(int8),
            "int8_tensorrt_kb": size_kb(int8s["int8-tensorrt"]),
            "weights_fp32_kb": round(training["parameters"] * 4 / 1024, 1),
        },
    }
    data = {
        "source": "UCI 'EMG data for gestures' (Lobov et al., Sensors 18:1122, 2018; CC BY 4.0), via "
        "../shared/data/emg_gestures_uci (see its PROVENANCE.md)",
        "used": f"subjects {training['subjects']} ({training['recordings']} recordings); subjects divisible "
        "by 3 are held back and absent",
        "classes": "gestures 1-6 (7, extended palm, absent); class 0 'unmarked' (pauses and transitions) is "
        "not learnt or scored: windows are kept only when all their rows share one label 1-6",
        "split": f"{cv['folds']} subject-disjoint folds {cv['fold_subjects']}; final network trained on all",
        "windows": f"{cv['windows_labelled']} labelled, {cv['windows_unmarked']} unmarked, "
        f"{cv['windows_mixed_label_skipped']} straddling labels (skipped); 250 ms every 50 ms",
        "rate_note": "rows logged at ~1 kHz (treated as 1000 Hz) with ~100 distinct samples/s",
        "training_windows": f"every labelled window at each of {training.get('grid_phases', 1)} phases of"
        " the 200 Hz grid over the 1 kHz rows (streams started 0-4 rows late); validation on phase 0",
        "training": training,
    }
    card = ModelCard(
        name=NAME,
        task=NAME,
        version=VERSION,
        classes=CLASSES,
        inputs={"emg": (-1, 8, w["emg"].shape[-1]), "pattern": (-1, 8), "level": (-1, 1)},
        preprocessing={
            "id": PREPROCESSING_ID,
            "fs": FS,
            "window_s": WINDOW_S,
            "hop_s": HOP_S,
            "band_hz": list(BAND),
            "min_rms_v": MIN_RMS,
            "level_ref_v": LEVEL_REF,
            "units": "V",
            "channels": 8,
            "kernel": "vigil.kernels.emg_window.EMGWindower (any input rate; resampled to fs)",
        },
        artifacts=artifacts_of({"fp32": fp32, **int8s}),
        data=data,
        metrics=metrics,
        latency={},
        intended_use=INTENDED_USE,
        failure_modes=FAILURE_MODES,
    )
    card.save(card_path(zoo / NAME))
    metrics["vendored"] = {
        "folder": "data/emg_gestures_uci",
        "note": "subject 01 was in the final network's training: a reproducibility check, "
        "not an accuracy claim",
        **{p: vendored_metrics(zoo / NAME, p) for p in PRECISIONS},
    }
    return with_latency(card, metrics, zoo / NAME, check)


def report(card: ModelCard) -> str:
    """The card's headline figures as text (``vigil train emg-gesture`` prints it)."""

    m = card.metrics
    lines = [f"{card.name} {card.version}: {m['validation']['split']} validation (out of fold)"]
    for p in ("fp32", "int8"):
        v = m["validation"][p]
        lines.append(
            f"  {p}: accuracy {fmt(v['accuracy'])} {fmt_ci(v['accuracy_ci95'])}"
            f"  macro-F1 {fmt(v['macro_f1'])} {fmt_ci(v['macro_f1_ci95'])}  per fold {v['per_fold_accuracy']}"
        )
        for name, k in v["per_class"].items():
            lines.append(
                f"        {name:<17} Se {fmt(k['sensitivity'])} {fmt_ci(k['sensitivity_ci95'])}"
                f"  +P {fmt(k['ppv'])} {fmt_ci(k['ppv_ci95'])}  ({k['windows']} windows)"
            )
        lines.append(f"        unmarked windows called: {v['unmarked_predicted_as']}")
    return "\n".join(lines + int8_report_lines(card))
