"""``eeg-seizure``: a small CRNN that flags seizure (ictal) EEG in 4 s windows, trained on Bonn.

Data: the Bonn epilepsy EEG (Andrzejak et al. 2001) in ``<data>/bonn_eeg``: sets Z and O (healthy,
surface, eyes open / closed), N and F (epilepsy patients, seizure-free, intracranial: opposite /
within the epileptogenic zone) and S (the same patients' intracranial recordings *during* seizures);
single-channel segments of 4097 samples at 173.61 Hz. Segments 068-100 of every set are held back
and absent; 001-067 are used. Task: S (seizure) against Z, O, N, F (non-seizure).

Input: ``eeg-segment/1`` (:mod:`vigil.kernels.eeg_segment`) windows, 4 s at 128 Hz, every 1 s, each
z-scored, plus its log10 amplitude, so the network sees the shape and the level separately.

Network (``SeizureCRNN``): five strided 1-D convolutions (batch norm, ReLU; 512 samples -> 8 steps
of 0.5 s), a GRU over the 8 steps, its last state with the level into a linear layer (2 scores).
The GRU is computed in FP32 in the INT8 model (ONNX Runtime quantizes no recurrent op in QDQ form;
its weights are stored as FP16), so it is kept short: most of the arithmetic is in the
convolutions, which run in INT8.

Evaluation, segment-disjoint: the segment numbers 1-67 are cut into ``K`` contiguous blocks (the
same block for every set, so a number's five segments share a fold); each fold's network is trained
on the other blocks. Reported (see :func:`cross_validate`): window sensitivity / specificity with bootstrap
CIs over segments (overall, per set, and F vs S apart, since S and F come from the same intracranial
sites while Z and O are surface EEG a network can tell by recording type alone); false alarms per
hour when a fold's non-seizure segments are streamed back to back through the live preprocessing;
and the detection delay when each seizure segment follows the interictal F segment of the same
number. Alarm rule (:data:`ALARM`): seizure probability above ``threshold`` in ``consecutive``
successive windows; an alarm is one rising edge of that condition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vigil.export.card import PRECISIONS, ModelCard, artifacts_of, card_path
from vigil.kernels.eeg_segment import BAND, FS, HOP_S, MIN_SD, PREPROCESSING_ID, WINDOW_S, eeg_segments
from vigil.models.metrics import macro_f1
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

NAME = "eeg-seizure"
CLASSES = ("non-seizure", "seizure")
SETS = ("Z", "O", "N", "F", "S")
FS_BONN = 173.61
K_FOLDS = 5
EPOCHS = 15
QAT_EPOCHS = 2  # then fine-tuned with 7-bit weights (models.training.weights_on_int8_grid)
ALARM = {"threshold": 0.5, "consecutive": 2}
VERSION = "1.0.0"
VENDORED = ("Z001", "O001", "S001")
#: Every vendored segment (data/bonn_eeg): the tests' real records.
VENDORED_ALL = ("Z001", "O001", "N001", "F001", "F002", "S001", "S002")


@dataclass(frozen=True)
class Segment:
    """One Bonn segment: set letter, number (1-100) and samples (uV, 173.61 Hz)."""

    set: str
    number: int
    x: np.ndarray

    @property
    def id(self) -> str:
        return f"{self.set}{self.number:03d}"

    @property
    def label(self) -> int:
        return int(self.set == "S")


def read_segment(path: Path) -> Segment:
    """A Bonn text file (one integer per line) named like ``S001.txt`` / ``N001.TXT``."""
    name = Path(path).stem.upper()
    return Segment(name[0], int(name[1:]), np.loadtxt(path, dtype=np.float64))


def load_bonn(root: Path, sets: tuple[str, ...] = SETS) -> list[Segment]:
    """Every segment of ``sets`` under ``root`` (``root/<set>/<set>NNN.txt``), by set then number.

    A missing set is skipped (a small test copy may hold a few sets), but seizure (S) and at least
    one non-seizure set must be there."""
    out = []
    for s in sets:
        files = sorted((Path(root) / s).glob(f"{s}[0-9][0-9][0-9].[tT][xX][tT]"))
        out.extend(read_segment(f) for f in files)
    have = {g.set for g in out}
    if "S" not in have or not have - {"S"}:
        raise FileNotFoundError(f"{root}: needs Bonn set S and a non-seizure set (found {sorted(have)})")
    return out


def load_vendored(
    folder: Path = REPO / "data" / "bonn_eeg", ids: tuple[str, ...] = VENDORED
) -> list[Segment]:
    """The real segments vendored for the tests (``data/bonn_eeg``)."""
    return [read_segment(next(Path(folder).glob(f"{i}.[tT][xX][tT]"))) for i in ids]


def folds(numbers: np.ndarray, k: int = K_FOLDS) -> np.ndarray:
    """Fold of each segment number: the numbers present, in order, cut into ``k`` contiguous blocks
    (neighbouring numbers may come from one recording, so they stay together)."""
    uniq = np.unique(numbers)
    if len(uniq) < k:
        raise ValueError(f"{k} folds need at least {k} distinct segment numbers, got {len(uniq)}")
    rank = np.searchsorted(uniq, numbers)
    return (rank * k // len(uniq)).astype(np.int64)


def windows(segments: list[Segment], hop_s: float = HOP_S, fs_in: float = FS_BONN) -> dict[str, np.ndarray]:
    """``eeg-segment/1`` windows of each segment on its own (a fresh stream per segment).

    Returns the network inputs (``eeg``, ``level``) of the valid windows, their ``label`` and the
    index of their segment (``seg``), plus ``n_invalid``.
    """
    eeg, level, labels, seg, n_invalid = [], [], [], [], 0
    for i, s in enumerate(segments):
        w = eeg_segments(s.x, fs_in, hop_s=hop_s)
        ok = w.valid[:, 0]
        n_invalid += int((~ok).sum())
        inp = w.inputs()
        eeg.append(inp["eeg"][ok])
        level.append(inp["level"][ok])
        labels.append(np.full(int(ok.sum()), s.label))
        seg.append(np.full(int(ok.sum()), i))
    return {
        "eeg": np.concatenate(eeg),
        "level": np.concatenate(level),
        "label": np.concatenate(labels),
        "seg": np.concatenate(seg),
        "n_invalid": np.array(n_invalid),
    }


def inputs_of(w: dict[str, np.ndarray], idx: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
    return {"eeg": w["eeg"][idx], "level": w["level"][idx]}


def _torch_model(config: dict[str, Any] | None = None) -> Any:
    import torch
    from torch import nn

    cfg = {
        "channels": [16, 24, 32, 32, 32],
        "strides": [4, 2, 2, 2, 2],
        "hidden": 32,
        "level_jitter": 0.1,
        **(config or {}),
    }

    class SeizureCRNN(nn.Module):
        """Conv front end (strided, 512 -> 8 steps) -> GRU over time -> linear on [last state, level]."""

        def __init__(self) -> None:
            super().__init__()
            layers, c_in = [], 1
            for i, (c, st) in enumerate(zip(cfg["channels"], cfg["strides"], strict=True)):
                k = 9 if i == 0 else 5
                layers += [nn.Conv1d(c_in, c, k, stride=st, padding=k // 2), nn.BatchNorm1d(c), nn.ReLU()]
                c_in = c
            self.conv = nn.Sequential(*layers)
            self.gru = nn.GRU(c_in, cfg["hidden"], batch_first=True)
            self.head = nn.Linear(cfg["hidden"] + 1, len(CLASSES))

        def forward(self, eeg: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            if self.training and cfg["level_jitter"]:  # gain augmentation: x U(0.8, 1.25) ~ +-0.1 decade
                level = level + (torch.rand_like(level) * 2 - 1) * cfg["level_jitter"]
            h = self.conv(eeg).transpose(1, 2)
            _, last = self.gru(h)
            return self.head(torch.cat([last[-1], level - 2.0], dim=1))

    return SeizureCRNN(), cfg


# ---------------------------------------------------------------------------------------------
# Helpers shared with emg-gesture (models/gesture.py): scoring, ONNX artifacts, sizes, latency.


# ---------------------------------------------------------------------------------------------
# Seizure metrics: windows, alarms on streams, detection delay.


def _rate(mask: np.ndarray, ok: np.ndarray) -> float:
    return float(ok[mask].mean()) if mask.any() else float("nan")


def window_metrics(
    p: np.ndarray, y: np.ndarray, seg: np.ndarray, sets: np.ndarray, threshold: float, n_boot: int = 1000
) -> dict[str, Any]:
    """Window sensitivity / specificity (CIs by resampling segments), per-set specificity, the F vs S
    comparison and the macro-F1 of the two classes."""
    pred = (p > threshold).astype(np.int64)
    hit = pred == y

    def se(i: np.ndarray) -> float:
        return _rate(y[i] == 1, hit[i])

    def sp(i: np.ndarray) -> float:
        return _rate(y[i] == 0, hit[i])

    def f1(i: np.ndarray) -> float:
        return macro_f1(y[i], pred[i], 2)

    out: dict[str, Any] = {
        "windows": int(len(y)),
        "seizure_windows": int((y == 1).sum()),
        "segments": int(len(np.unique(seg))),
        "sensitivity": rnd(se(np.arange(len(y)))),
        "sensitivity_ci95": ci(seg, se, n_boot),
        "specificity": rnd(sp(np.arange(len(y)))),
        "specificity_ci95": ci(seg, sp, n_boot),
        "macro_f1": rnd(f1(np.arange(len(y)))),
        "macro_f1_ci95": ci(seg, f1, n_boot),
        "specificity_by_set": {},
    }
    for s in ("Z", "O", "N", "F"):
        i = np.flatnonzero(sets == s)
        if len(i):
            out["specificity_by_set"][s] = {
                "value": rnd(sp(i)),
                "ci95": ci(seg[i], lambda j, i=i: sp(i[j]), n_boot),
            }
    fs = np.flatnonzero(np.isin(sets, ["F", "S"]))
    if len(fs) and (sets == "F").any():
        sub = {"sensitivity": rnd(se(fs)), "specificity_F": rnd(sp(fs)), "macro_f1": rnd(f1(fs))}
        sub["specificity_F_ci95"] = ci(seg[fs], lambda i: sp(fs[i]), n_boot)
        sub["macro_f1_ci95"] = ci(seg[fs], lambda i: f1(fs[i]), n_boot)
        out["F_vs_S"] = sub
    return out


def alarm_state(
    p: np.ndarray, threshold: float = ALARM["threshold"], consecutive: int = ALARM["consecutive"]
) -> np.ndarray:
    """True at window ``i`` when windows ``i-consecutive+1 .. i`` all score above ``threshold``
    (a window that was not classified, NaN, never does)."""
    above = np.nan_to_num(np.asarray(p, dtype=np.float64), nan=-1.0) > threshold
    run = np.zeros(len(above), dtype=np.int64)
    for i, a in enumerate(above):
        run[i] = (run[i - 1] + 1 if i else 1) if a else 0
    return run >= consecutive


def alarm_onsets(state: np.ndarray) -> np.ndarray:
    """Indices where the alarm state rises (one alarm each)."""
    s = np.asarray(state, dtype=bool)
    return np.flatnonzero(s & ~np.r_[False, s[:-1]])


@dataclass
class Stream:
    """Segments streamed back to back through ``eeg-segment/1``: window end times, the segment each
    window ends in, and where each segment starts (s)."""

    ids: list[str]
    starts_s: np.ndarray
    duration_s: float
    inputs: dict[str, np.ndarray]
    valid: np.ndarray
    end_s: np.ndarray
    window_seg: np.ndarray
    span_s: float  # first to last sample of a window

    def straddles(self) -> np.ndarray:
        """Windows that hold the end of one segment and the start of the next."""
        inner = self.starts_s[1:]
        lo = self.end_s - self.span_s
        return np.array([np.any((inner > a) & (inner <= b)) for a, b in zip(lo, self.end_s, strict=True)])


def stream(segments: list[Segment], fs_in: float = FS_BONN) -> Stream:
    x = np.concatenate([s.x for s in segments])
    lengths = np.array([len(s.x) for s in segments])
    starts = np.r_[0, np.cumsum(lengths)[:-1]] / fs_in
    w = eeg_segments(x, fs_in)
    seg_of = np.searchsorted(starts, w.end_s, side="right") - 1
    span = (w.x.shape[-1] - 1) / FS
    ids = [s.id for s in segments]
    return Stream(ids, starts, len(x) / fs_in, w.inputs(), w.valid[:, 0], w.end_s, seg_of, span)


def stream_probs(st: Stream, score: Any) -> np.ndarray:
    """Seizure probability of each window of ``st`` (NaN where not classified)."""
    p = np.full(len(st.valid), np.nan)
    if st.valid.any():
        p[st.valid] = score({k: v[st.valid] for k, v in st.inputs.items()})[:, 1]
    return p


def false_alarms(
    st: Stream, p: np.ndarray, rule: dict[str, float] = ALARM
) -> tuple[np.ndarray, np.ndarray, int]:
    """Alarms per segment of a non-seizure stream, each segment's duration (s), and how many of the
    alarms rest on a window that straddles two segments (a splice the recordings never had)."""
    on = alarm_onsets(alarm_state(p, rule["threshold"], int(rule["consecutive"])))
    counts = np.bincount(st.window_seg[on], minlength=len(st.ids))
    dur = np.diff(np.r_[st.starts_s, st.duration_s])
    cross = st.straddles()
    c = int(rule["consecutive"])
    n_splice = int(sum(cross[max(0, i - c + 1) : i + 1].any() for i in on))
    return counts, dur, n_splice


def detection(st: Stream, p: np.ndarray, rule: dict[str, float] = ALARM) -> tuple[float, int]:
    """For a stream whose last segment is ictal: (delay in s from its start to the first window at
    or after it in alarm, NaN if none; alarms raised before it)."""
    onset = st.starts_s[-1]
    state = alarm_state(p, rule["threshold"], int(rule["consecutive"]))
    after = np.flatnonzero(state & (st.end_s >= onset))
    before = alarm_onsets(state)
    n_before = int((st.end_s[before] < onset).sum())
    return (float(st.end_s[after[0]] - onset) if len(after) else float("nan")), n_before


def fa_summary(counts: np.ndarray, dur_s: np.ndarray, ids: list[str], n_boot: int = 1000) -> dict[str, Any]:
    """False alarms per hour overall (CI over segments) and per set."""
    hours = dur_s / 3600.0
    groups = np.arange(len(counts))

    def rate(i: np.ndarray) -> float:
        return float(counts[i].sum() / hours[i].sum())

    sets = np.array([i[0] for i in ids])
    out = {
        "alarms": int(counts.sum()),
        "hours": rnd(hours.sum()),
        "per_hour": rnd(rate(groups), 3),
        "per_hour_ci95": ci(groups, rate, n_boot),
        "by_set": {},
    }
    for s in ("Z", "O", "N", "F"):
        i = np.flatnonzero(sets == s)
        if len(i):
            out["by_set"][s] = {
                "alarms": int(counts[i].sum()),
                "hours": rnd(hours[i].sum()),
                "per_hour": rnd(rate(i), 3),
                "per_hour_ci95": ci(groups[i], lambda j, i=i: rate(i[j]), n_boot),
            }
    return out


def delay_summary(delays: np.ndarray, n_boot: int = 1000) -> dict[str, Any]:
    d = np.asarray(delays, dtype=np.float64)
    hit = d[np.isfinite(d)]
    out = {"seizure_segments": int(len(d)), "detected": int(len(hit)), "missed": int(len(d) - len(hit))}
    if len(hit):
        out.update(
            median_s=rnd(np.median(hit), 2),
            p90_s=rnd(np.quantile(hit, 0.9), 2),
            max_s=rnd(hit.max(), 2),
            min_s=rnd(hit.min(), 2),
        )
        out["median_s_ci95"] = ci(np.arange(len(hit)), lambda i: float(np.median(hit[i])), n_boot)
    return out


# ---------------------------------------------------------------------------------------------
# Training, segment-disjoint validation, export.

INTENDED_USE = (
    "Research and engineering aid inside Vigil's EEG pipeline: flags 4 s windows of single-channel EEG "
    "that look ictal, feeding the monitor's seizure alarm (two consecutive windows above 0.5). Trained on "
    "the Bonn set only (5 subjects per group, 23.6 s segments, pre-cut and artefact-free): not a medical "
    "device, not validated on continuous long-term or scalp-only seizure recordings."
)
FAILURE_MODES = (
    "Recording type is confounded with the label in Bonn: all seizure segments (S) are intracranial, the "
    "healthy ones (Z, O) are surface EEG; the network may partly detect 'intracranial-looking' EEG. The F "
    "(interictal, same intracranial sites) vs S comparison is reported apart for this reason.",
    "Amplitude carries much of the signal (a level-only threshold already separates S well; see metrics."
    "baseline_level_only): a device with a wrong gain or unit (not uV) shifts the level input.",
    "Eyes-closed alpha (set O) is the commonest false positive among non-seizure windows.",
    "Segments were selected by experts and free of artefacts: movement, chewing, electrode pops and "
    "other artefacts of ambulatory EEG were never seen in training and may raise false alarms.",
    "Segment numbers cannot be mapped to subjects (not published): the same subjects appear in the "
    "training and test folds, so results measure segment-level, not patient-level, generalisation.",
    "Windows holding NaN/out-of-range samples or a flat lead (sd <= 0.1 uV) are not classified "
    "(counted by the preprocessing); a long gap therefore delays detection.",
)


def _settings(opts: TrainOptions) -> tuple[int, int, int]:
    """(epochs, folds, bootstrap resamples)."""
    if opts.quick:
        return opts.epochs or 2, 2, 100
    return opts.epochs or EPOCHS, K_FOLDS, 1000


def _fit(
    w: dict[str, np.ndarray], idx: np.ndarray, epochs: int, seed: int, progress: bool, label: str
) -> Any:
    from vigil.models.training import train_classifier

    build = lambda: _torch_model()[0]  # noqa: E731
    return train_classifier(
        build,
        inputs_of(w, idx),
        w["label"][idx],
        2,
        ("eeg",),
        epochs,
        seed,
        progress,
        label,
        qat_epochs=QAT_EPOCHS,
    )


def _level_threshold(level: np.ndarray, y: np.ndarray) -> float:
    """The level (log10 sd) threshold with the best balanced accuracy on training windows."""
    cand = np.unique(np.round(level, 3))
    best = max(cand, key=lambda t: np.mean(level[y == 1] > t) + np.mean(level[y == 0] <= t))
    return float(best)


def _predecessor(s: Segment, test: list[Segment]) -> list[Segment]:
    """The interictal segment streamed before seizure segment ``s``: F of the same number (same
    intracranial sites), else N, else none."""
    for want in ("F", "N"):
        for t in test:
            if t.set == want and t.number == s.number:
                return [t]
    return []


def cross_validate(segs: list[Segment], opts: TrainOptions) -> dict[str, Any]:
    """Segment-disjoint K-fold validation (see module docstring); FP32 and every INT8 calibration."""
    import tempfile

    from vigil.export.quantize import METHODS

    epochs, k, n_boot = _settings(opts)
    numbers = np.array([s.number for s in segs])
    fold = folds(numbers, k)
    sets = np.array([s.set for s in segs])
    w = windows(segs)
    wfold = fold[w["seg"]]
    precisions = ("fp32", *METHODS)
    p = {m: np.full(len(w["label"]), np.nan) for m in precisions}
    p_level = np.zeros(len(w["label"]))
    quiet_runs: list[tuple[Stream, list[int], dict[str, np.ndarray]]] = []
    seizure_runs: list[tuple[Stream, dict[str, np.ndarray]]] = []
    for f in range(k):
        itr, ite = np.flatnonzero(wfold != f), np.flatnonzero(wfold == f)
        model = _fit(w, itr, epochs, opts.seed + 1 + f, opts.progress, f"eeg-seizure fold {f + 1}/{k}")
        rng = np.random.default_rng(opts.seed + 100 + f)
        thr = _level_threshold(w["level"][itr, 0], w["label"][itr])
        p_level[ite] = (w["level"][ite, 0] > thr).astype(float)
        with tempfile.TemporaryDirectory() as tmp:
            paths = quantized_variants(
                model,
                calibration_set(inputs_of(w, itr), 1024, rng),
                pick(inputs_of(w, itr), 256, rng),
                Path(tmp),
                METHODS,
            )
            scorers = {"fp32": lambda x, m=model: torch_probs(m, x)}
            scorers.update({m: (lambda x, q=paths[m]: onnx_probs(q, x)) for m in METHODS})
            for m, score in scorers.items():
                p[m][ite] = score(inputs_of(w, ite))[:, 1]
            test = [s for s, g in zip(segs, fold, strict=True) if g == f]
            quiet = [s for s in test if s.label == 0]
            if quiet:
                st = stream(quiet)
                quiet_runs.append(
                    (
                        st,
                        [segs.index(s) for s in quiet],
                        {m: stream_probs(st, sc) for m, sc in scorers.items()},
                    )
                )
            for s in (s for s in test if s.label == 1):
                st = stream([*_predecessor(s, test), s])
                seizure_runs.append((st, {m: stream_probs(st, sc) for m, sc in scorers.items()}))
    y, seg = w["label"], w["seg"]
    res: dict[str, Any] = {
        "folds": k,
        "epochs": epochs,
        "qat_epochs": QAT_EPOCHS,
        "windows": int(len(y)),
        "n_invalid": int(w["n_invalid"]),
    }
    res["by_precision"] = {}
    for m in precisions:
        r = window_metrics(p[m], y, seg, sets[seg], ALARM["threshold"], n_boot)
        r.update(_alarm_metrics(segs, quiet_runs, seizure_runs, m, ALARM, n_boot))
        res["by_precision"][m] = r
    res["baseline_level_only"] = window_metrics(p_level, y, seg, sets[seg], 0.5, n_boot)
    res["calibration"] = calibration_choice(res["by_precision"], METHODS, int8_floor)
    chosen = res["calibration"]["chosen"]
    res["alarm_rule_tradeoff"] = {
        m: [
            {
                "threshold": t,
                "consecutive": c,
                **_alarm_metrics(segs, quiet_runs, seizure_runs, m, {"threshold": t, "consecutive": c}, 0),
            }
            for t in (0.5, 0.7, 0.9)
            for c in (1, 2, 3, 4)
        ]
        for m in ("fp32", chosen)
    }
    return res


def _alarm_metrics(
    segs: list[Segment],
    quiet_runs: list[tuple[Stream, list[int], dict[str, np.ndarray]]],
    seizure_runs: list[tuple[Stream, dict[str, np.ndarray]]],
    precision: str,
    rule: dict[str, float],
    n_boot: int,
) -> dict[str, Any]:
    """False alarms per hour on the non-seizure streams and detection delays on the seizure streams
    under ``rule`` (``n_boot = 0``: point values only, for the trade-off table)."""
    counts = np.zeros(len(segs), dtype=np.int64)
    dur = np.zeros(len(segs))
    splices = 0
    for st, where, probs in quiet_runs:
        c, d, n = false_alarms(st, probs[precision], rule)
        counts[where], dur[where] = c, d
        splices += n
    delays, before = [], 0
    for st, probs in seizure_runs:
        d, n = detection(st, probs[precision], rule)
        delays.append(d)
        before += n
    quiet = np.array([i for i, s in enumerate(segs) if s.label == 0])
    if n_boot == 0:
        hours = dur[quiet].sum() / 3600
        hit = np.array(delays)[np.isfinite(delays)]
        return {
            "false_alarms_per_hour": rnd(counts[quiet].sum() / hours, 3) if hours else None,
            "detected": int(len(hit)),
            "missed": int(len(delays) - len(hit)),
            "median_delay_s": rnd(float(np.median(hit)), 2) if len(hit) else None,
        }
    fa = fa_summary(counts[quiet], dur[quiet], [segs[i].id for i in quiet], n_boot)
    fa["alarms_on_splices"] = splices
    det = delay_summary(np.array(delays), n_boot)
    det["alarms_during_preceding_interictal"] = before
    return {"false_alarms": fa, "detection": det}


def int8_floor(fp32: dict[str, Any], int8: dict[str, Any]) -> dict[str, Any]:
    """Macro-F1 loss (points) and per-class sensitivity loss (points) of INT8 against FP32."""
    f1_drop = 100 * (fp32["macro_f1"] - int8["macro_f1"])
    se_drop = {
        "seizure": 100 * (fp32["sensitivity"] - int8["sensitivity"]),
        "non-seizure": 100 * (fp32["specificity"] - int8["specificity"]),
    }
    return {
        "macro_f1_drop_points": rnd(f1_drop, 3),
        "sensitivity_drop_points": {c: rnd(v, 3) for c, v in se_drop.items()},
        "floor_met": bool(f1_drop <= 1.0 and max(se_drop.values()) <= 2.0),
    }


def train(opts: TrainOptions) -> ModelCard:
    """Validate segment-disjointly, train the final network on every segment, save and export it."""
    import torch

    from vigil.models.training import count_parameters

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    segs = load_bonn(Path(opts.data) / "bonn_eeg")
    cv = cross_validate(segs, opts)
    epochs, _, _ = _settings(opts)
    w = windows(segs)
    model = _fit(w, np.arange(len(w["label"])), epochs, opts.seed, opts.progress, "eeg-seizure final")
    _, config = _torch_model()
    training = {
        "seconds": round(time.perf_counter() - t0, 1),
        "seed": opts.seed,
        "epochs": epochs,
        "qat_epochs": QAT_EPOCHS,
        "quick": opts.quick,
        "parameters": count_parameters(model),
        "segments": {s: sum(g.set == s for g in segs) for s in SETS},
        "windows": int(len(w["label"])),
    }
    save_checkpoint(Path(opts.zoo) / f"{NAME}.pt", model, config, cv, training)
    card = export(opts)
    print(report(card))
    return card


def vendored_metrics(stem: Path, precision: str, folder: Path = REPO / "data" / "bonn_eeg") -> dict[str, Any]:
    """What the shipped artifact does on the vendored Bonn segments (``load_model``, CPU): window
    counts and rates, the mean seizure probability per segment, and the alarms when the non-seizure
    segments are streamed back to back and when each S segment follows the F of its number."""
    from vigil.export.runtime import load_model

    m = load_model(stem, precision=precision, providers="cpu", threads=1, fs=FS, task=NAME)

    def score(x: dict[str, np.ndarray]) -> np.ndarray:
        return softmax(m.run(x))

    segs = load_vendored(folder, VENDORED_ALL)
    w = windows(segs)
    p = score(inputs_of(w))[:, 1]
    y, seg = w["label"], w["seg"]
    pred = (p > ALARM["threshold"]).astype(np.int64)
    out: dict[str, Any] = {
        "segments": [s.id for s in segs],
        "windows": int(len(y)),
        "seizure_windows": int(y.sum()),
        "flagged_seizure": int(pred[y == 1].sum()),
        "flagged_non_seizure": int(pred[y == 0].sum()),
        "sensitivity": rnd(_rate(y == 1, pred == y), 6),
        "specificity": rnd(_rate(y == 0, pred == y), 6),
        "macro_f1": rnd(macro_f1(y, pred, 2), 6),
        "mean_p_seizure": {s.id: rnd(float(p[seg == i].mean()), 6) for i, s in enumerate(segs)},
    }
    quiet = [s for s in segs if s.label == 0]
    st = stream(quiet)
    counts, dur, _ = false_alarms(st, stream_probs(st, score))
    out["stream_non_seizure"] = {
        "segments": st.ids,
        "alarms": int(counts.sum()),
        "seconds": rnd(dur.sum(), 2),
    }
    out["detection"] = {}
    for s in (s for s in segs if s.label == 1):
        st = stream([*_predecessor(s, segs), s])
        d, n_pre = detection(st, stream_probs(st, score))
        out["detection"][" -> ".join(st.ids)] = {"delay_s": rnd(d, 3), "alarms_before": n_pre}
    return out


def export(opts: TrainOptions) -> ModelCard:
    """From ``<zoo>/eeg-seizure.pt``: FP32 and INT8 ONNX (calibration chosen out of fold), the card."""
    import torch

    from vigil.export.onnx_export import export_onnx
    from vigil.export.quantize import int8_artifacts

    torch.set_num_threads(1)
    zoo = Path(opts.zoo)
    model, saved = load_checkpoint(zoo / f"{NAME}.pt", lambda config: _torch_model(config)[0])
    cv, training = saved["validation"], saved["training"]
    method = cv["calibration"]["chosen"]
    segs = load_bonn(Path(opts.data) / "bonn_eeg")
    w = windows(segs)
    rng = np.random.default_rng(opts.seed)
    calib, check = calibration_set(inputs_of(w), 1024, rng), pick(inputs_of(w), 256, rng)
    fp32, int8 = zoo / f"{NAME}.fp32.onnx", zoo / f"{NAME}.int8.onnx"
    parity = export_onnx(model, {k: v[:4] for k, v in check.items()}, fp32, check_inputs=check)
    int8s = int8_artifacts(fp32, calib, method)
    size = {
        "parameters": training["parameters"],
        "fp32_kb": size_kb(fp32),
        "int8_kb": size_kb(int8),
        "int8_tensorrt_kb": size_kb(int8s["int8-tensorrt"]),
        "weights_fp32_kb": round(training["parameters"] * 4 / 1024, 1),
    }
    bp = cv["by_precision"]
    metrics = {
        "validation": {
            "fp32": bp["fp32"],
            "int8": bp[method],
            "split": f"{cv['folds']}-fold segment-disjoint",
        },
        "int8_vs_fp32_validation": int8_floor(bp["fp32"], bp[method]),
        "calibration": {**cv["calibration"], "calibration_windows": 1024},
        "int8_other_calibrations": {m: bp[m] for m in bp if m not in ("fp32", method)},
        "baseline_level_only": cv["baseline_level_only"],
        "alarm_rule_tradeoff_out_of_fold": cv["alarm_rule_tradeoff"],
        "onnx_parity_max_abs": parity,
        "size": size,
        "alarm_rule": dict(ALARM),
    }
    data = {
        "source": "Bonn University epilepsy EEG (Andrzejak et al., Phys Rev E 64:061907, 2001), via "
        "../shared/data/bonn_eeg (see its PROVENANCE.md)",
        "used": "segments 001-067 of sets Z, O, N, F, S (068-100 held back, absent); single channel, "
        "4097 samples at 173.61 Hz (23.6 s) each",
        "classes": "seizure = set S (ictal, intracranial); non-seizure = Z, O (healthy, surface), N, F "
        "(interictal, intracranial)",
        "split": f"{cv['folds']} folds of contiguous segment numbers (a number's five segments share a "
        "fold); final network trained on all 335 segments",
        "windows": f"{cv['windows']} evaluation windows (4 s every 1 s, each segment streamed on its own)",
        "training": training,
    }
    card = ModelCard(
        name=NAME,
        task=NAME,
        version=VERSION,
        classes=CLASSES,
        inputs={"eeg": (-1, 1, w["eeg"].shape[-1]), "level": (-1, 1)},
        preprocessing={
            "id": PREPROCESSING_ID,
            "fs": FS,
            "window_s": WINDOW_S,
            "hop_s": HOP_S,
            "band_hz": list(BAND),
            "min_sd_uv": MIN_SD,
            "units": "uV",
            "kernel": "vigil.kernels.eeg_segment.EEGSegmenter (any input rate; resampled to fs)",
            "channels": "each channel is classified on its own (one batch item per channel)",
        },
        artifacts=artifacts_of({"fp32": fp32, **int8s}),
        data=data,
        metrics=metrics,
        latency={},
        intended_use=INTENDED_USE,
        failure_modes=FAILURE_MODES,
    )
    card.save(card_path(zoo / NAME))
    vend = {p: vendored_metrics(zoo / NAME, p) for p in PRECISIONS}
    metrics["vendored"] = {
        "folder": "data/bonn_eeg",
        "note": "these segments were in the final "
        "network's training: a reproducibility check, not an accuracy claim",
        **vend,
    }
    return with_latency(card, metrics, zoo / NAME, check)


def report(card: ModelCard) -> str:
    """The card's headline figures as text (``vigil train eeg-seizure`` prints it)."""
    m = card.metrics
    lines = [f"{card.name} {card.version}: {m['validation']['split']} validation (out of fold)"]
    for p in ("fp32", "int8"):
        v = m["validation"][p]
        fa, det, fvs = v["false_alarms"], v["detection"], v.get("F_vs_S", {})
        by_set = v["specificity_by_set"]
        lines += [
            f"  {p}: sensitivity {fmt(v['sensitivity'])} {fmt_ci(v['sensitivity_ci95'])}  specificity "
            f"{fmt(v['specificity'])} {fmt_ci(v['specificity_ci95'])}  macro-F1 {fmt(v['macro_f1'])}",
            "        specificity by set: "
            + ", ".join(f"{k} {fmt(x['value'])} {fmt_ci(x['ci95'])}" for k, x in by_set.items()),
            f"        F vs S: specificity(F) {fvs.get('specificity_F')}"
            f" {fmt_ci(fvs.get('specificity_F_ci95', []))}  macro-F1 {fvs.get('macro_f1')}",
            f"        false alarms {fa['per_hour']}/h {fmt_ci(fa['per_hour_ci95'])} ({fa['alarms']} in"
            f" {fa['hours']} h; {fa.get('alarms_on_splices', 0)} on splices)",
            f"        detection {det['detected']}/{det['seizure_segments']}, delay median"
            f" {det.get('median_s')} s (p90 {det.get('p90_s')}, max {det.get('max_s')})",
        ]
    b = m["baseline_level_only"]
    lines.append(
        f"  level-only baseline: sensitivity {fmt(b['sensitivity'])} specificity {fmt(b['specificity'])}"
        f" specificity(F) {b.get('F_vs_S', {}).get('specificity_F')}"
    )
    return "\n".join(lines + int8_report_lines(card))
