"""``ecg-beats``: a TCN that labels each detected heartbeat N, S, V, F or Q (AAMI EC57 classes).

**Data and split.** MIT-BIH Arrhythmia Database, lead 0 (MLII), de Chazal et al. (2004)
inter-patient protocol: training on DS1 only (:data:`DS1`, 22 records; the paced records are
excluded per AAMI); record 100 (a DS2 record, never trained on) is an independent check; the rest
of DS2 is held back and absent. Validation is leave-records-out inside DS1 (:data:`FOLDS`: each
record is scored by a model that never saw it), with bootstrap confidence intervals over records.

**Beats are the monitor's beats.** Training and scoring run Vigil's streaming QRS detector
(:class:`vigil.kernels.qrs.QRSDetector`) over each record and pair its detections with the
reference beats (EC57, 150 ms: :func:`vigil.kernels.beat_features.pair_beats`); a matched detection
takes its reference beat's AAMI class. Scoring is EC57 gross statistics over every reference beat
of the record (from its start; ventricular flutter episodes excluded, as EC57 does): a reference
beat the detector missed, or whose window could not be classified, is a false negative of its
class; a detection with no reference beat that the network labels X is a false positive of X.

**Input** (``beat-window/1``, :mod:`vigil.kernels.beat_features`, numpy, shared with the runtime):
``beat`` [2, 96] at 128 Hz (the beat's window and the patient's running template of dominant beats,
normalised by the patient's running QRS amplitude) and ``rr`` [8] (log RR ratios against the
patient's own recent and long-term rhythm, and two irregularity measures).

**Network** (:func:`build_network`): a strided causal stem over the beat and the patient's
template (``diff``, a third channel beat minus template, is an option: not better in validation),
residual blocks of two dilated causal convolutions (kernel 5, dilations 1, 2, 4; batch norm folded
at export), mean and max pooling over time with a small RR embedding into a morphology head that
scores N-like / V / F / Q; N and S share the N-like score and an RR-only term is added to every
class, so S against N is decided by the rhythm alone (morphology-driven S calls did not generalise
across patients in leave-records-out runs: whole records of normal beats were called S). The RR
inputs are completed inside the network by prematurity in units of the patient's own beat-to-beat
variability (:data:`RRZ`): 20 % early is very premature in a regular rhythm and ordinary in atrial
fibrillation (single networks in validation: S sensitivity 0.56 -> 0.73). The shipped model is a
seed ensemble of :data:`MEMBERS` such networks (mean of logits, one ONNX graph, :func:`build_model`).

**Training**: per epoch every S/V/F/Q beat of the training records plus, per record, up to
:data:`N_CAP` premature-looking N beats (early against the local rhythm, :data:`EARLY_FEATURES`:
sinus arrhythmia and atrial fibrillation, what an S call must not fire on) and :data:`N_CAP` other
N beats (300 of each lost S +P: the variety of each patient's normal beats keeps them from being
called S); cross-entropy weighted ``(N / (k n_c)) ** 0.5`` (capped at :data:`WEIGHT_CAP` x N);
augmentation of the windows (amplitude, baseline wander, noise, time warp); AdamW, one-cycle,
:data:`EPOCHS` epochs, no early stopping.

**Pooling** (:mod:`vigil.kernels.beat_pooling`, named in the card's ``postprocessing``): before the
class is read, a beat's V margin (log-odds of V against the rest) is pooled with the margins the
network gave the lead's recent look-alike beats (correlation of the 0.4-s QRS span), and shifted by
an operating-point bias. Alone, the network called about 300 aberrant normal beats of record 203 V
and missed V beats of 106 that its look-alikes were called (leave-records-out: V Se 0.882, EC57 +P
0.867). The parameters are chosen by :func:`choose_pooling` on the held-out logits of the
leave-records-out validation (widest margin over the issue's floors, :data:`FLOORS`); the card also
reports a nested estimate of that choice (each fold classified with the parameters chosen on the
other folds) and the figures without pooling.

**Scoring** (:func:`ec57_table`): strict per-class figures, and the VEB / SVEB figures under the
EC57 rules (fusion and unclassifiable beats labelled V, and unclassifiable beats labelled S, are not
false positives), both reported.

Torch is imported inside the functions that need it: the data and scoring helpers here run without
it (the tests of the shipped artifacts use them with ONNX Runtime only).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vigil.export.quantize import INT8_NOTE
from vigil.export.runtime import cpu_session
from vigil.kernels.beat_features import (
    CLASSES,
    RR_FEATURES,
    BeatWindowParams,
    aami_class,
    beat_inputs,
    pair_beats,
)
from vigil.kernels.beat_match import vf_intervals
from vigil.kernels.beat_pooling import MorphologyPooling, PoolingParams
from vigil.kernels.qrs import QRSDetector

NAME = "ecg-beats"
VERSION = "1"
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122",
       "124", "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")  # fmt: skip
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210",
       "212", "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")  # fmt: skip
PACED = ("102", "104", "107", "217")  # excluded from training and scoring per AAMI
INDEPENDENT = ("100",)  # DS2 records present in the shared data: scored, never trained on
#: Leave-two-records-out folds over DS1 (11 folds, fixed).
FOLDS = tuple(tuple(DS1[i::11]) for i in range(11))
#: Label of "no beat" (a detection without a reference beat) / "not classified" in the EC57 tables.
NONE = len(CLASSES)
SCORED = (0, 1, 2, 3)  # N, S, V, F: the classes with enough beats in DS1 for macro-F1 and INT8 checks


@dataclass
class RecordBeats:
    """One record's detected beats, their network inputs and their reference labels."""

    name: str
    fs: float
    sample: np.ndarray  # detections (device samples), int64 [m]
    beat: np.ndarray  # float32 [m, 2, t]
    rr: np.ndarray  # float32 [m, k]
    valid: np.ndarray  # bool [m]: classifiable window
    label: np.ndarray  # int64 [m]: AAMI class of the matched reference beat, -1 none, -2 in VF
    ref_class: np.ndarray  # int64 [r]: AAMI class of each scored reference beat
    ref_det: np.ndarray  # int64 [r]: index of its detection, -1 when missed
    invalid: dict[str, int]

    @property
    def train_mask(self) -> np.ndarray:
        """Detections usable for training: classifiable and matched to a reference beat."""
        return self.valid & (self.label >= 0)

    def inputs(self, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        m = self.train_mask if mask is None else mask
        return {"beat": self.beat[m], "rr": self.rr[m]}


def detect(x: np.ndarray, fs: float) -> np.ndarray:
    """Beats of a whole lead by the monitor's streaming QRS detector (one chunk, then finish)."""
    det = QRSDetector(fs)
    return np.concatenate([det.process(x), det.finish()])


def read_lead(path: Path, channel: int = 0) -> tuple[np.ndarray, float, np.ndarray, list[str]]:
    """A WFDB record's lead (physical units), rate, and reference annotations (samples, symbols)."""
    from vigil.firmware_bridge.replay import read_annotations, read_wfdb

    rec = read_wfdb(path, channels=[channel], annotator=None)
    samples, symbols = read_annotations(path, "atr")
    return np.ascontiguousarray(rec.signal[:, 0]), rec.fs, samples, symbols


def reference_labels(
    detected: np.ndarray, fs: float, ann_samples: np.ndarray, ann_symbols: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EC57 labels of ``detected`` beats against reference annotations.

    Returns ``label`` per detection (AAMI class of its matched reference beat, -1 when it has none,
    -2 inside ventricular flutter), and per scored reference beat (beats outside flutter) its class
    and the index of its detection (-1: missed).
    """
    detected = np.asarray(detected, np.int64)
    vf = vf_intervals(np.asarray(ann_samples), ann_symbols)

    def in_vf(s: np.ndarray) -> np.ndarray:
        out = np.zeros(len(s), bool)
        for a, b in vf:
            out |= (s >= a) & (s <= b)
        return out

    cls = np.array([aami_class(s) for s in ann_symbols], dtype=np.int64)
    ref, ref_cls = np.asarray(ann_samples, np.int64)[cls >= 0], cls[cls >= 0]
    keep = ~in_vf(ref)
    ref, ref_cls = ref[keep], ref_cls[keep]
    ref_det = pair_beats(ref, detected, fs)
    label = np.where(in_vf(detected), -2, -1).astype(np.int64)
    label[ref_det[ref_det >= 0]] = ref_cls[ref_det >= 0]
    return label, ref_cls, ref_det


def label_record(
    name: str, x: np.ndarray, fs: float, ann_samples: np.ndarray, ann_symbols: list[str],
    params: BeatWindowParams | None = None,
) -> RecordBeats:  # fmt: skip
    """Detect, preprocess and label one record (see the module docstring)."""
    batch, invalid = beat_inputs(x, fs, detect(x, fs), params)
    label, ref_cls, ref_det = reference_labels(batch.sample, fs, ann_samples, ann_symbols)
    return RecordBeats(
        name, fs, batch.sample, batch.beat, batch.rr, batch.valid, label, ref_cls, ref_det, invalid
    )


def load_record(path: Path, channel: int = 0, params: BeatWindowParams | None = None) -> RecordBeats:
    x, fs, s, sym = read_lead(Path(path), channel)
    return label_record(Path(path).name, x, fs, s, sym, params)


def ec57_events(rb: RecordBeats, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reference, predicted) label pairs of one record for EC57 gross statistics.

    ``pred``: one class per detection, -1 where not classified. Every scored reference beat gives
    one pair (predicted :data:`NONE` when missed or not classified); every classified detection
    without a reference beat (outside VF) gives (:data:`NONE`, its class).
    """
    pred = np.asarray(pred, dtype=np.int64)
    p = np.where(rb.ref_det >= 0, pred[np.maximum(rb.ref_det, 0)], -1)
    p = np.where(p >= 0, p, NONE)
    extra = (rb.label == -1) & (pred >= 0)
    ref = np.concatenate([rb.ref_class, np.full(int(extra.sum()), NONE)])
    return ref, np.concatenate([p, pred[extra]])


#: What ANSI/AAMI EC57 does not count as a false positive of a class (reference classes), per WFDB
#: ``bxb`` (G. Moody; the reference implementation of the EC38/EC57:1998 beat-by-beat comparison):
#: ``VFP = Nv + Sv + Ov + Xv`` -- fusion (F) and unclassifiable (Q) beats labelled V are not V false
#: positives; ``SFP = Ns + Vs + Fs + Os + Xs`` -- Q beats labelled S are not S false positives.
#: Sensitivities are unchanged (``VFN = Vn + Vs + Vf + Vq + Vo + Vx``: a missed V is a false negative).
EC57_NOT_FP = {2: (3, 4), 1: (4,)}


def ec57_table(refs: list[np.ndarray], preds: list[np.ndarray], groups: list[str], n_boot: int = 1000,
               seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Per-class Se and +P (gross), with bootstrap 95 % CIs over records, and macro-F1 (N,S,V,F).

    Two rule sets, both over every reference beat of each record:

    - ``classes`` (strict): every classified detection that is not of class X, X predicted, is a
      false positive of X (F labelled V counts against V's +P, Q labelled S against S's);
    - ``ec57`` (VEB and SVEB as the standard scores them, :data:`EC57_NOT_FP`): F and Q beats
      labelled V, and Q beats labelled S, are not false positives. EC57 (and bxb by default) also
      allows a 5-minute learning period excluded from scoring; it is *not* used here, as in de Chazal
      et al. 2004, whose DS1 beat counts (N 45866, S 944, V 3788, F 415, Q 8) are whole-record counts
      and equal ours. No AF-episode exclusion is applied to the SVEB figures (bxb has none).
    """
    from vigil.models.metrics import bootstrap_ci, class_stats, macro_f1

    ref, pred = np.concatenate(refs), np.concatenate(preds)
    g = np.concatenate([np.full(len(r), name) for r, name in zip(refs, groups, strict=True)])
    labels = [*CLASSES, "none"]
    out: dict[str, Any] = {"beats": int((ref < NONE).sum()), "records": len(groups), "classes": {}}
    for k, st in enumerate(class_stats(ref, pred, labels)[:NONE]):
        row: dict[str, Any] = {"n": st.n_ref, "tp": st.tp, "fn": st.fn, "fp": st.fp,
                               "se": _r(st.se), "ppv": _r(st.ppv)}  # fmt: skip
        if n_boot and st.n_ref:
            se = lambda i, k=k: _se(ref[i], pred[i], k)  # noqa: E731
            pp = lambda i, k=k: _ppv(ref[i], pred[i], k)  # noqa: E731
            row["se_ci"] = [_r(v) for v in bootstrap_ci(g, se, n_boot, seed=seed)]
            row["ppv_ci"] = [_r(v) for v in bootstrap_ci(g, pp, n_boot, seed=seed)]
        out["classes"][CLASSES[k]] = row
    out["macro_f1"] = _r(macro_f1(ref, pred, NONE + 1, classes=SCORED))
    if n_boot:
        mf = lambda i: macro_f1(ref[i], pred[i], NONE + 1, classes=SCORED)  # noqa: E731
        out["macro_f1_ci"] = [_r(v) for v in bootstrap_ci(g, mf, n_boot, seed=seed)]
    out["ec57"] = {}
    for name, k in (("VEB", 2), ("SVEB", 1)):
        excl = EC57_NOT_FP[k]
        tp = int(np.sum((ref == k) & (pred == k)))
        fp = int(np.sum((pred == k) & (ref != k) & ~np.isin(ref, excl)))
        row = {
            "n": int(np.sum(ref == k)), "tp": tp, "fp": fp,
            "fp_not_counted": int(np.sum((pred == k) & np.isin(ref, excl))),
            "se": out["classes"][CLASSES[k]]["se"], "ppv": _r(tp / (tp + fp) if tp + fp else float("nan")),
        }  # fmt: skip
        if n_boot and row["n"]:
            row["se_ci"] = out["classes"][CLASSES[k]]["se_ci"]
            pp = lambda i, k=k, excl=excl: _ppv(ref[i], pred[i], k, excl)  # noqa: E731
            row["ppv_ci"] = [_r(v) for v in bootstrap_ci(g, pp, n_boot, seed=seed)]
        out["ec57"][name] = row
    return out


def _se(ref: np.ndarray, pred: np.ndarray, k: int) -> float:
    n = np.sum(ref == k)
    return float(np.sum((ref == k) & (pred == k)) / n) if n else float("nan")


def _ppv(ref: np.ndarray, pred: np.ndarray, k: int, not_fp: tuple[int, ...] = ()) -> float:
    n = np.sum((pred == k) & ~np.isin(ref, not_fp))
    return float(np.sum((ref == k) & (pred == k)) / n) if n else float("nan")


def _r(v: float, nd: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


# -- network (torch) ------------------------------------------------------------------------------


def build_network(config: dict[str, Any]) -> Any:
    """A :class:`BeatTCN` (defined lazily so that importing this module needs no torch)."""
    import torch
    from torch import nn

    class CausalBlock(nn.Module):
        """Two dilated causal convolutions (left zero padding) with batch norm, ReLU, residual."""

        def __init__(self, ch: int, k: int, d: int) -> None:
            super().__init__()
            self.pad = (k - 1) * d
            self.c1, self.b1 = nn.Conv1d(ch, ch, k, dilation=d), nn.BatchNorm1d(ch)
            self.c2, self.b2 = nn.Conv1d(ch, ch, k, dilation=d), nn.BatchNorm1d(ch)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.b1(self.c1(nn.functional.pad(x, (self.pad, 0)))))
            h = self.b2(self.c2(nn.functional.pad(h, (self.pad, 0))))
            return torch.relu(x + h)

    class BeatTCN(nn.Module):
        """Morphology TCN + RR context; logits = morphology head (N-like, V, F, Q) expanded to
        (N, S, V, F, Q) by sharing its N-like score between N and S, plus an RR-only term per class.
        S and N therefore differ only by the RR term: whether a normal-looking QRS is an
        ectopic supraventricular beat is decided by the rhythm, which generalises across patients,
        not by morphology details a network can learn by heart from twenty patients."""

        def __init__(self, in_ch: int, n_rr: int, ch: int, k: int, dilations: list[int], rr_hidden: int,
                     hidden: int, n_classes: int, stride: int = 2, diff: bool = False,
                     rrz: bool = False) -> None:  # fmt: skip
            super().__init__()
            self.diff, self.rrz = diff, rrz
            in_ch = in_ch + 1 if diff else in_ch
            n_rr = n_rr + len(RRZ) if rrz else n_rr
            self.stem = nn.Sequential(
                nn.ConstantPad1d((k - 1, 0), 0.0), nn.Conv1d(in_ch, ch, k, stride=stride), nn.BatchNorm1d(ch),
                nn.ReLU(),
            )  # fmt: skip
            self.blocks = nn.Sequential(*(CausalBlock(ch, k, d) for d in dilations))
            self.rr = nn.Sequential(nn.Linear(n_rr, rr_hidden), nn.ReLU())
            self.head = nn.Sequential(
                nn.Linear(2 * ch + rr_hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes - 1)
            )
            self.rhythm = nn.Sequential(
                nn.Linear(n_rr, rr_hidden), nn.ReLU(), nn.Linear(rr_hidden, n_classes)
            )
            self.register_buffer("share", torch.tensor([0, 0, *range(1, n_classes - 1)]), persistent=False)

        def forward(self, beat: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
            if self.diff:  # the beat minus the patient's template: how this beat departs from their own
                beat = torch.cat([beat, beat[:, :1] - beat[:, 1:2]], dim=1)
            if self.rrz:  # prematurity in units of this patient's own beat-to-beat variability
                z = rr[:, list(RRZ)] / (rr[:, RRZ_SCALE : RRZ_SCALE + 1] + RRZ_EPS)
                rr = torch.cat([rr, torch.clamp(z, -RRZ_CLIP, RRZ_CLIP)], dim=1)
            h = self.blocks(self.stem(beat))
            morph = self.head(torch.cat([h.mean(-1), h.amax(-1), self.rr(rr)], dim=1))
            return torch.index_select(morph, 1, self.share) + self.rhythm(rr)

    return BeatTCN(**config)


def build_model(config: dict[str, Any], members: int = 1) -> Any:
    """``members`` :class:`BeatTCN` networks of ``config`` whose logits are averaged
    (:func:`vigil.models.training.mean_ensemble`; one network when ``members`` is 1)."""
    from vigil.models.training import mean_ensemble

    if members == 1:
        return build_network(config)
    return mean_ensemble([build_network(config) for _ in range(members)])


#: ``rrz`` networks add RR features divided by the patient's RR irregularity (median|dRR|/median RR):
#: a beat 20 % early is very premature in a regular rhythm, and ordinary in atrial fibrillation.
RRZ = (0, 1, 3, 5)  # log(pre/local), log(post/local), log(pre/long), log(pre/previous)
RRZ_SCALE, RRZ_EPS, RRZ_CLIP = 7, 0.02, 16.0

DEFAULT_NET = {"in_ch": 2, "n_rr": len(RR_FEATURES), "ch": 16, "k": 5, "dilations": [1, 2, 4],
               "rr_hidden": 16, "hidden": 32, "n_classes": len(CLASSES),
               "diff": False, "rrz": True}  # fmt: skip


# -- training ----------------------------------------------------------------------------------------

N_CAP = 1000  # normal beats drawn per training record and kind (all ectopic beats are kept)
EPOCHS = 6
CLASS_WEIGHT_POWER = 0.5
WEIGHT_CAP = 5.0  # no class weighs more than this many times N (Q has 8 beats in DS1)
CALIB_WINDOWS = 1024
MEMBERS = 3  # seed ensemble size of the shipped network
#: RR features by which an N beat "looks premature" for :func:`training_set` (log ratios < log 0.9).
EARLY_FEATURES = (0,)  # pre-RR / local RR (adding pre-RR / long-term RR lost S sensitivity)


def training_set(records: list[RecordBeats], n_cap: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """Classifiable matched beats of ``records``: every non-N beat and, per record, at most ``n_cap``
    N beats that look premature (pre-RR < 0.9 local RR: sinus arrhythmia, atrial fibrillation -- the
    beats that tell an S beat from an early normal one) plus ``n_cap`` other N beats, all drawn at
    random; so each patient's rhythm counts about equally whatever the record's length."""
    beat, rr, y = [], [], []
    early_cut = np.log(0.9)
    for r in records:
        idx = np.flatnonzero(r.train_mask)
        lab = r.label[idx]
        normal = idx[lab == 0]
        early = normal[np.any(r.rr[normal][:, list(EARLY_FEATURES)] < early_cut, axis=1)]
        pick_early = rng.choice(early, min(n_cap, len(early)), replace=False)
        rest = np.setdiff1d(normal, pick_early)
        pick = np.concatenate([pick_early, rng.choice(rest, min(n_cap, len(rest)), replace=False)])
        keep = np.sort(np.concatenate([idx[lab != 0], pick]))
        beat.append(r.beat[keep])
        rr.append(r.rr[keep])
        y.append(r.label[keep])
    return {"beat": np.concatenate(beat), "rr": np.concatenate(rr)}, np.concatenate(y)


def stratified(
    records: list[RecordBeats], n: int, rng: np.random.Generator, exclude: dict[str, np.ndarray] | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """About ``n`` classifiable matched windows of ``records`` with the classes as balanced as they
    allow (a rare class entirely), none of ``exclude`` (detection indices per record). Returns the
    inputs, the labels and the drawn detection indices per record."""
    rec, det = [], []
    for k, r in enumerate(records):
        idx = np.flatnonzero(r.train_mask)
        if exclude is not None and r.name in exclude:
            idx = np.setdiff1d(idx, exclude[r.name])
        rec.append(np.full(len(idx), k))
        det.append(idx)
    rec_a, det_a = np.concatenate(rec), np.concatenate(det)
    lab = np.array([records[k].label[i] for k, i in zip(rec_a, det_a, strict=True)], dtype=np.int64)
    present = sorted(np.unique(lab), key=lambda c: int((lab == c).sum()))
    chosen, left = [], n
    for j, c in enumerate(present):  # rarest first; what a class cannot fill passes to the next
        members = np.flatnonzero(lab == c)
        take = min(len(members), left // (len(present) - j))
        chosen.append(rng.choice(members, take, replace=False))
        left -= take
    pick = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    beat = np.stack([records[k].beat[i] for k, i in zip(rec_a[pick], det_a[pick], strict=True)])
    rr = np.stack([records[k].rr[i] for k, i in zip(rec_a[pick], det_a[pick], strict=True)])
    drawn = {r.name: det_a[pick][rec_a[pick] == k] for k, r in enumerate(records)}
    return {"beat": beat, "rr": rr}, lab[pick], drawn


def train_network(
    records: list[RecordBeats], epochs: int, seed: int, n_cap: int = N_CAP, net: dict[str, Any] | None = None,
    progress: bool = False, label: str = "training", members: int = 1,
) -> Any:  # fmt: skip
    """A :class:`BeatTCN` trained on ``records`` (seeded; augmentation on the beat windows), or an
    ensemble of ``members`` of them (member ``j`` trained with seed ``seed + SEED_STEP * j``)."""
    import torch

    from vigil.models.training import SEED_STEP, class_weights, fit, seed_everything

    torch.set_num_threads(1)
    model = build_model(net or DEFAULT_NET, members)
    nets = list(model.members) if members > 1 else [model]
    for j, m in enumerate(nets):
        rng = seed_everything(seed + SEED_STEP * j)
        x, y = training_set(records, n_cap, rng)
        w = class_weights(y, len(CLASSES), CLASS_WEIGHT_POWER)
        w = np.minimum(w, WEIGHT_CAP * w[0])
        tag = f"{label} ({j + 1}/{members})" if members > 1 else label
        fit(m, x, y, epochs=epochs, rng=rng, weights=w, augment_keys=("beat",), progress=progress, label=tag)
    return model.eval()


def scores_torch(model: Any, rb: RecordBeats) -> np.ndarray:
    """Logits per detection of ``rb`` ``[m, classes]`` (NaN rows where the window is not classifiable)."""
    from vigil.models.training import predict

    out = np.full((len(rb.sample), len(CLASSES)), np.nan, dtype=np.float32)
    if rb.valid.any():
        out[rb.valid] = predict(model, rb.inputs(rb.valid))
    return out


def scores_onnx(path: Path, rb: RecordBeats) -> np.ndarray:
    """As :func:`scores_torch`, with ONNX Runtime (CPU, one thread) on the artifact ``path``."""
    sess = cpu_session(path)
    out = np.full((len(rb.sample), len(CLASSES)), np.nan, dtype=np.float32)
    if rb.valid.any():
        x = rb.inputs(rb.valid)
        out[rb.valid] = np.concatenate(
            [
                sess.run(None, {k: v[i : i + 4096] for k, v in x.items()})[0]
                for i in range(0, len(x["rr"]), 4096)
            ]
        )
    return out


def classes_of(rb: RecordBeats, scores: np.ndarray, pooling: PoolingParams | None = None) -> np.ndarray:
    """Class per detection (-1 where not classified) from one record's logits, streamed through
    ``morphology-pooling/1`` first when ``pooling`` is given (as the monitor does)."""
    out = np.full(len(scores), -1, dtype=np.int64)
    ok = rb.valid
    if ok.any():
        s = scores[ok] if pooling is None else MorphologyPooling(pooling).process(rb.beat[ok, 0], scores[ok])
        out[ok] = s.argmax(1)
    return out


def export_fp32(model: Any, path: Path, records: list[RecordBeats], seed: int = 0) -> float:
    """ONNX FP32 with parity against torch checked on real windows of ``records``; returns it."""
    from vigil.export.compact import compact_names
    from vigil.export.onnx_export import export_onnx

    x, _, _ = stratified(records, 512, np.random.default_rng(seed))
    diff = export_onnx(model, {k: v[:4] for k, v in x.items()}, path, check_inputs=x)
    before = cpu_session(path).run(None, x)[0]
    compact_names(path)
    if not np.array_equal(cpu_session(path).run(None, x)[0], before):
        raise ValueError(f"{path}: renaming changed the outputs")
    return diff


# -- validation, final model, export -----------------------------------------------------------------


def cross_validate(
    records: dict[str, RecordBeats], folds: list[tuple[str, ...]], epochs: int, seed: int, work: Path,
    n_cap: int = N_CAP, net: dict[str, Any] | None = None, progress: bool = False,
    pool: list[str] | None = None, members: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Leave-records-out: each fold's records are scored by a network trained on the records of the
    other folds, in FP32 (torch) and quantized to INT8 with every calibration method (calibrated on
    :data:`CALIB_WINDOWS` windows of the fold's training records). ``pool``: the records to train on
    (default: those of all folds). Returns the logits per detection (:func:`scores_torch`):
    ``{"fp32": {record: scores}, "int8": {method: {record: scores}}}``."""
    from vigil.export.quantize import METHODS, quantize_int8

    pool = pool or [n for fold in folds for n in fold]
    out: dict[str, Any] = {"fp32": {}, "int8": {m: {} for m in METHODS}}
    for k, test in enumerate(folds):
        train_recs = [records[n] for n in pool if n not in test]
        label = f"fold {k + 1}/{len(folds)} (test {', '.join(test)})"
        model = train_network(train_recs, epochs, seed + 1000 * (k + 1), n_cap, net, progress, label, members)
        fp32 = work / f"fold{k}.fp32.onnx"
        export_fp32(model, fp32, train_recs, seed)
        calib, _, _ = stratified(train_recs, CALIB_WINDOWS, np.random.default_rng(seed + k))
        for n in test:
            out["fp32"][n] = scores_torch(model, records[n])
        for m in METHODS:
            q = quantize_int8(fp32, work / f"fold{k}.{m}.onnx", calib, m)
            for n in test:
                out["int8"][m][n] = scores_onnx(q, records[n])
        if not progress:
            print(f"{label}: done", file=sys.stderr, flush=True)
    return out


#: The issue's floors on the EC57 figures; the pooling's parameters are those that clear them by the
#: widest margin in leave-records-out validation (:func:`choose_pooling`).
FLOORS = {("VEB", "se"): 0.90, ("VEB", "ppv"): 0.90, ("SVEB", "se"): 0.70, ("SVEB", "ppv"): 0.50}
#: Candidate ``morphology-pooling/1`` parameters (the QRS span, floor and prior fixed).
POOLING_GRID = tuple(
    PoolingParams(tau=t, weight=w, history=h, bias=b)
    for t in (0.03, 0.05, 0.1) for w in (0.7, 1.0) for h in (512, 1024) for b in (0.0, 0.25, 0.5, 0.75, 1.0)
)  # fmt: skip


def floor_margin(table: dict[str, Any]) -> float:
    """The smallest margin of an EC57 table's figures over :data:`FLOORS` (negative: a floor missed)."""
    return min((table["ec57"][k][f] or 0.0) - v for (k, f), v in FLOORS.items())


def choose_pooling(
    records: dict[str, RecordBeats], scores: dict[str, np.ndarray], folds: list[tuple[str, ...]]
) -> dict[str, Any]:
    """The :data:`POOLING_GRID` entry with the widest :func:`floor_margin` over the held-out logits
    ``scores`` (``params``, and its predictions ``preds``), and a nested estimate of that choice:
    each fold's records classified with the entry chosen on the other folds (``nested``, ``picks``)."""
    names = list(scores)
    preds = [{n: classes_of(records[n], scores[n], p) for n in names} for p in POOLING_GRID]

    def best(subset: list[str]) -> int:
        margin = [floor_margin(score(records, {n: g[n] for n in subset}, n_boot=0)) for g in preds]
        return int(np.argmax(margin))  # the first of equals

    chosen = best(names)
    nested: dict[str, np.ndarray] = {}
    picks = []
    for fold in folds:
        others = [n for n in names if n not in fold]
        g = best(others) if others else chosen  # a single fold (quick runs): nothing else to choose on
        picks.append(g)
        nested.update({n: preds[g][n] for n in fold if n in scores})
    return {"params": POOLING_GRID[chosen], "preds": preds[chosen], "nested": nested,
            "picks": [POOLING_GRID[g] for g in picks]}  # fmt: skip


def score(records: dict[str, RecordBeats], preds: dict[str, np.ndarray], n_boot: int = 1000,
          seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """EC57 table (:func:`ec57_table`) over the records in ``preds``."""
    names = list(preds)
    ev = [ec57_events(records[n], preds[n]) for n in names]
    return ec57_table([e[0] for e in ev], [e[1] for e in ev], names, n_boot, seed)


def per_record(records: dict[str, RecordBeats], preds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per record and class: ``[reference beats, TP, FP]`` (for the card's per-record table)."""
    from vigil.models.metrics import class_stats

    out = {}
    for n, p in preds.items():
        ref, pr = ec57_events(records[n], p)
        out[n] = {s.label: [s.n_ref, s.tp, s.fp] for s in class_stats(ref, pr, [*CLASSES, "none"])[:NONE]}
    return out


def int8_drop(fp32: dict[str, Any], int8: dict[str, Any]) -> dict[str, Any]:
    """The INT8 floor's quantities (points): macro-F1 drop and sensitivity drop per class."""
    se = {c: round(100 * ((fp32["classes"][c]["se"] or 0) - (int8["classes"][c]["se"] or 0)), 2)
          for c in CLASSES if fp32["classes"][c]["n"]}  # fmt: skip
    return {
        "macro_f1_drop_points": round(100 * (fp32["macro_f1"] - int8["macro_f1"]), 2),
        "se_drop_points": se,
    }


def _present(root: Path, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if (root / f"{n}.hea").is_file() and (root / f"{n}.atr").is_file()]


def _load(root: Path, names: list[str], params: BeatWindowParams) -> dict[str, RecordBeats]:
    return {n: load_record(root / n, 0, params) for n in names}


def _settings(opts: Any) -> tuple[int, int, int]:
    """(epochs, N beats per record, ensemble members) for ``opts`` (quick: 1 epoch, 60 N beats per
    record, one network)."""
    epochs = opts.epochs or (1 if opts.quick else EPOCHS)
    return epochs, (60 if opts.quick else N_CAP), (1 if opts.quick else MEMBERS)


def train(opts: Any) -> Any:
    """``vigil train ecg-beats``: leave-records-out validation on DS1, the final network on all of
    DS1, its weights in ``<zoo>/ecg-beats.pt``, then :func:`export`."""
    import tempfile

    import torch

    from vigil.export.quantize import METHODS
    from vigil.models.metrics import macro_f1
    from vigil.models.training import SEED_STEP, count_parameters

    t0 = time.time()
    root = Path(opts.data) / "mitdb"
    pool = _present(root, DS1)
    if not pool:
        raise FileNotFoundError(f"no MIT-BIH DS1 record in {root} (set --data or $VIGIL_DATA)")
    if len(pool) < len(DS1) and not opts.quick:
        print(f"warning: {len(DS1) - len(pool)} DS1 records missing from {root}", file=sys.stderr)
    params = BeatWindowParams()
    epochs, n_cap, members = _settings(opts)
    records = _load(root, pool + _present(root, INDEPENDENT), params)
    folds = [f for f in (tuple(n for n in fold if n in pool) for fold in FOLDS) if f]
    if opts.quick:
        folds = folds[:1]
    if len(pool) < 2:
        folds = []  # nothing left to train a fold on
    validation: dict[str, Any] = {"scheme": "none (fewer than two DS1 records)"}
    pooling: PoolingParams | None = None
    if folds:
        with tempfile.TemporaryDirectory() as tmp:
            cv = cross_validate(
                records, folds, epochs, opts.seed, Path(tmp), n_cap, None, opts.progress, pool, members
            )
        chosen = choose_pooling(records, cv["fp32"], folds)
        pooling = chosen["params"]
        fp32 = chosen["preds"]
        int8 = {m: {n: classes_of(records[n], v[n], pooling) for n in v} for m, v in cv["int8"].items()}
        f1 = {}
        for m in METHODS:
            ev = [ec57_events(records[n], int8[m][n]) for n in fp32]
            f1[m] = round(macro_f1(np.concatenate([e[0] for e in ev]), np.concatenate([e[1] for e in ev]),
                                   NONE + 1, classes=SCORED), 4)  # fmt: skip
        method = max(METHODS, key=lambda m: (f1[m], -METHODS.index(m)))
        n_boot = 200 if opts.quick else 1000
        plain = {n: classes_of(records[n], v) for n, v in cv["fp32"].items()}
        validation = {
            "scheme": f"leave-records-out inside DS1: {len(folds)} folds of {len(folds[0])} records; each "
            "record scored by a network that never saw it (epochs, sampling and seed rule as the final one)",
            "folds": [list(f) for f in folds],
            "fp32": score(records, fp32, n_boot, opts.seed),
            "int8": score(records, int8[method], n_boot, opts.seed),
            "calibration": {"method": method, "macro_f1_by_method": f1,
                            "rule": "chosen by pooled macro-F1 (N,S,V,F) of INT8 on the held-out records"},
            "pooling": {
                "chosen": pooling.card(),
                "rule": f"of {len(POOLING_GRID)} candidate parameter sets (models.beats.POOLING_GRID), "
                "the one whose EC57 figures clear the floors (V Se and +P 0.90, S Se 0.70, S +P 0.50) by "
                "the widest margin on these held-out logits; 'fp32' and 'int8' above use it, so they are "
                "mildly optimistic: 'nested' is the unbiased estimate",
                "nested": score(records, chosen["nested"], n_boot, opts.seed),
                "nested_rule": "each fold's records classified with the candidate chosen by the same rule "
                "on the other folds' records",
                "nested_picks": [p.card() for p in chosen["picks"]],
                "without_pooling": score(records, plain, n_boot, opts.seed),
            },
            "per_record_fp32": per_record(records, fp32),
            "int8_vs_fp32": {},
            "per_record_int8": per_record(records, int8[method]),
        }  # fmt: skip
        validation["int8_vs_fp32"] = int8_drop(validation["fp32"], validation["int8"])
    model = train_network(
        [records[n] for n in pool], epochs, opts.seed, n_cap, None, opts.progress, "final model", members
    )
    opts.zoo.mkdir(parents=True, exist_ok=True)
    info = {"records": pool, "epochs": epochs, "n_cap": n_cap, "members": members, "seed": opts.seed,
            "seed_rule": f"member j of the final ensemble: seed + {SEED_STEP} j; fold k: seed + 1000 (k + 1) "
                         f"+ {SEED_STEP} j", "quick": bool(opts.quick),
            "parameters": count_parameters(model), "seconds": round(time.time() - t0, 1),
            "threads": torch.get_num_threads()}  # fmt: skip
    ckpt = {"net": DEFAULT_NET, "members": members, "state_dict": model.state_dict(),
            "preprocessing": params.card(), "train": info, "validation": validation,
            "postprocessing": pooling.card() if pooling else {}}  # fmt: skip
    torch.save(ckpt, opts.zoo / f"{NAME}.pt")
    return export(opts, records)


def export(opts: Any, records: dict[str, RecordBeats] | None = None) -> Any:
    """``vigil export ecg-beats``: from ``<zoo>/ecg-beats.pt``, the FP32 and INT8 ONNX artifacts and
    the model card (validation from training; record 100, vendored records and latency measured)."""
    import torch

    from vigil.export.card import PRECISIONS, ModelCard, artifacts_of, card_path
    from vigil.export.latency import measure_latency
    from vigil.export.quantize import METHODS, int8_artifacts, quantize_int8
    from vigil.models.metrics import macro_f1

    zoo = Path(opts.zoo)
    ckpt = torch.load(zoo / f"{NAME}.pt", weights_only=True)
    params = BeatWindowParams.from_card(ckpt["preprocessing"])
    model = build_model(ckpt["net"], ckpt.get("members", 1))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    root = Path(opts.data) / "mitdb"
    if records is None:
        records = _load(root, _present(root, DS1) + _present(root, INDEPENDENT), params)
    train_recs = [records[n] for n in ckpt["train"]["records"]]
    fp32, int8 = zoo / f"{NAME}.fp32.onnx", zoo / f"{NAME}.int8.onnx"
    parity = export_fp32(model, fp32, train_recs, opts.seed)
    rng = np.random.default_rng(opts.seed)
    calib, _, drawn = stratified(train_recs, CALIB_WINDOWS, rng)
    validation = ckpt["validation"]
    if "calibration" in validation:
        method = validation["calibration"]["method"]
    else:  # no leave-records-out run (quick): score the methods on other training windows
        held, y, _ = stratified(train_recs, 4 * CALIB_WINDOWS, rng, exclude=drawn)
        scores = {}
        for m in METHODS:
            quantize_int8(fp32, int8, calib, m)
            pred = cpu_session(int8).run(None, held)[0].argmax(1)
            scores[m] = macro_f1(y, pred, len(CLASSES), classes=SCORED)
        method = max(METHODS, key=lambda m: (scores[m], -METHODS.index(m)))
        validation = {**validation, "calibration": {"method": method, "macro_f1_by_method": scores,
                      "rule": "macro-F1 on training windows not used for calibration"}}  # fmt: skip
    int8s = int8_artifacts(fp32, calib, method)
    post = ckpt.get("postprocessing") or {}
    pooling = PoolingParams.from_card(post) if post else None
    independent = {}
    for n in (n for n in INDEPENDENT if n in records):
        preds = {p: classes_of(records[n], scores_onnx(f, records[n]), pooling)
                 for p, f in (("fp32", fp32), ("int8", int8))}  # fmt: skip
        independent[n] = {p: score(records, {n: v}, n_boot=0) for p, v in preds.items()}
    card = ModelCard(
        name=NAME, task=NAME, version=VERSION, classes=CLASSES,
        inputs={"beat": (-1, 2, params.samples), "rr": (-1, len(RR_FEATURES))},
        preprocessing={**params.card(), **PREPROCESSING_NOTES},
        postprocessing=post,
        artifacts=artifacts_of({"fp32": fp32, **int8s}),
        data=_data_section(ckpt["train"], records),
        metrics={"validation": validation, "independent": independent, "onnx_parity_max_abs": parity,
                 "size": {"parameters": ckpt["train"]["parameters"], "fp32_kb": _kb(fp32),
                          "int8_kb": _kb(int8), "int8_tensorrt_kb": _kb(int8s["int8-tensorrt"])},
                 "quantization": QUANTIZATION,
                 "training": ckpt["train"]},
        latency={}, intended_use=INTENDED_USE, failure_modes=failure_modes(validation),
    )  # fmt: skip
    path = card.save(card_path(zoo / NAME))  # the runtime needs a card to load the artifacts
    vendored = {n: {p: vendored_metrics(zoo / NAME, REPO_DATA / n, p) for p in PRECISIONS}
                for n in VENDORED if (REPO_DATA / f"{n}.hea").is_file()}  # fmt: skip
    metrics = {**card.metrics, "vendored": {**vendored, "note": VENDORED_NOTE}}
    rb = load_record(REPO_DATA / "100", params=params)  # real windows of a vendored record
    one = {k: v[:1] for k, v in rb.inputs(rb.valid).items()}
    calls = 20 if ckpt["train"]["quick"] else 2000
    card = ModelCard(**{**card.__dict__, "metrics": metrics,
                        "latency": measure_latency(zoo / NAME, one, calls=calls)})  # fmt: skip
    card.save(path)
    return card


QUANTIZATION = (
    f"static QDQ (ONNX Runtime) of the convolutions and dense layers: {INT8_NOTE}; calibration on "
    f"{CALIB_WINDOWS} class-stratified training windows, method chosen by pooled out-of-fold macro-F1 "
    "(leave-records-out)"
)
REPO_DATA = Path(__file__).resolve().parent.parent / "data" / "mitdb"
VENDORED = ("100", "208")
VENDORED_NOTE = (
    "Exact figures of the shipped artifacts on the records vendored in data/mitdb, through the run-time "
    "path (vigil.edge.beat_classes: streaming detector, beat-window/1, ONNX Runtime CPU); "
    "tests/test_beats_model.py recomputes them. 100 is a DS2 record (never trained on); 208 is a DS1 "
    "record, i.e. a TRAINING-SET figure, not an estimate of accuracy on new patients."
)
PREPROCESSING_NOTES = {
    "kernels": ["vigil.kernels.qrs.QRSDetector (beats)", "vigil.kernels.filters (0.5-40 Hz causal band-pass)",
                "vigil.kernels.beat_features.BeatWindows (window, normalisation, template, RR features)"],
    "window_s": [-0.3125, 0.4375],
    "device_fs": "any rate >= 100 Hz: the band-passed lead is resampled to fs (128 Hz) per window",
    "delay": "a beat is classified once the next beat is detected (its post-RR is an input): one beat "
             "plus the detector's 0.2-0.4 s",
    "lead": "trained on MIT-BIH lead 0 (MLII in 21 of 22 DS1 records; V5 in 114)",
}  # fmt: skip
INTENDED_USE = (
    "Labelling each beat found by Vigil's streaming QRS detector as N, S, V, F or Q (AAMI EC57) from a "
    "single ECG lead (MLII-like), to feed the monitor's ectopy and ventricular-run alarms. A screening aid "
    "for trend and alarm logic under clinician oversight, not a diagnostic device; not validated on paced "
    "rhythms, children, or leads far from MLII."
)


def failure_modes(validation: dict[str, Any]) -> tuple[str, ...]:
    """The card's known failure modes, with the leave-records-out figures they rest on (FP32)."""
    if "fp32" not in validation:  # quick runs without validation
        return FAILURE_MODES
    c, ec = validation["fp32"]["classes"], validation["fp32"]["ec57"]
    nest = validation.get("pooling", {}).get("nested", validation["fp32"])["ec57"]
    per = validation["per_record_fp32"]

    def missed(rec: str, k: str) -> str:
        n, tp, _ = per[rec][k] if rec in per else (0, 0, 0)
        return f"{rec}: {n - tp} of {n} {k} missed"

    def false(rec: str, k: str) -> str:
        return f"{rec}: {per[rec][k][2] if rec in per else 0} false {k}"

    return (
        f"Leave-records-out validation (FP32, pooled): V sensitivity {c['V']['se']:.3f}, +P "
        f"{ec['VEB']['ppv']:.3f} under EC57's rules and {c['V']['ppv']:.3f} strict (fusion beats called V "
        f"counted against V), S sensitivity {c['S']['se']:.3f} with +P {c['S']['ppv']:.3f}; the nested "
        f"estimate of the pooling choice: V {nest['VEB']['se']:.3f} / {nest['VEB']['ppv']:.3f}, S "
        f"{nest['SVEB']['se']:.3f} / {nest['SVEB']['ppv']:.3f} (floors 0.90 / 0.90, 0.70 / 0.50). 22 "
        "patients: errors concentrate in a few of them and the CIs over records are wide.",
        "Pooling (morphology-pooling/1) spreads the network's view of a morphology over its look-alikes: a "
        "family the network gets wrong as a whole stays wrong, and after an electrode move the first beats "
        "of a new morphology have no look-alikes yet (their own margin, plus the bias, decides).",
        "S beats with a normal QRS that are not premature against the patient's recent rhythm (junctional "
        f"rhythm, beats inside SVTA runs; {missed('201', 'S')}, {missed('209', 'S')}) are called N: the S "
        "call rests on RR prematurity alone.",
        "Irregular or accelerating rhythms make normal beats look premature: false S in atrial fibrillation "
        f"({false('203', 'S')}, {false('201', 'S')}) and in sinus accelerations of 10-15 % "
        f"({false('118', 'S')}, {false('230', 'S')}).",
        f"Normal beats of some patients look ventricular to the network: {false('203', 'V')} (AF, multiform "
        "PVCs, noise); 208's fusion beats are mostly called V (EC57 does not count those against V's +P).",
        f"PVCs that resemble the patient's dominant beat are called N ({missed('106', 'V')}, "
        f"{missed('223', 'V')}).",
        *FAILURE_MODES[1:],
    )


FAILURE_MODES = (
    "A run without leave-records-out validation (quick): no measured accuracy.",
    "F (fusion) beats are rare in DS1 (415, 373 of them in record 208): F sensitivity and +P are near zero "
    "across patients; F calls are mostly wrong (106, 203).",
    "Q has 8 beats in DS1: the network practically never predicts it; paced beats (/, f) were excluded "
    "from training per AAMI and will be called N or V.",
    "The first beats of a stream have no patient history yet (template, amplitude, RR means settle within "
    "~16 beats; the long-term RR within minutes).",
    "Detector errors propagate: a missed beat is never classified (counted as a false negative of its "
    "class in the metrics) and a missed or extra beat corrupts the RR features of its neighbours.",
    "Ventricular flutter/fibrillation waves are detected as beats and classified (usually V); EC57 scoring "
    "excludes those episodes, so the metrics say nothing about them.",
    "Windows with NaN or a flat line (lead off) are not classified; they are counted by reason.",
)


def _kb(path: Path) -> float:
    return round(path.stat().st_size / 1024, 1)


def _data_section(train: dict[str, Any], records: dict[str, RecordBeats]) -> dict[str, Any]:
    counts = {n: np.bincount(records[n].ref_class, minlength=len(CLASSES)).tolist() for n in train["records"]}
    total = np.sum(list(counts.values()), axis=0).tolist() if counts else []
    return {
        "source": "MIT-BIH Arrhythmia Database v1.0.0 (PhysioNet, ODC-By 1.0), 360 Hz, lead 0",
        "split": "de Chazal et al. 2004 inter-patient: trained on DS1 only; paced records "
                 f"{', '.join(PACED)} excluded (AAMI); record 100 (DS2) scored as an independent check, "
                 "never trained on; the rest of DS2 is held back and was not available",
        "train_records": train["records"],
        "reference_beats_per_class": dict(zip(CLASSES, total, strict=True)),
        "labels": "beats found by the streaming QRS detector, matched to reference beats within 150 ms "
                  "(EC57); a matched detection takes its reference beat's AAMI class (N=NLRej S=AaJS V=VE "
                  "F=F Q=/fQ); unmatched detections are not trained on",
        "sampling": f"per epoch all S/V/F/Q beats, and per record {train['n_cap']} random N beats that look "
                    "premature (pre-RR < 0.9 x the local mean RR) plus "
                    f"{train['n_cap']} other random N beats; class weights (N/(k n_c))^{CLASS_WEIGHT_POWER} "
                    f"(at most {WEIGHT_CAP} x N); augmentation: amplitude, baseline wander, noise, "
                    "time warp; "
                    f"{train.get('members', 1)} networks of other seeds, logits averaged",
        "scoring": "EC57 gross statistics over every reference beat (whole record, as de Chazal et al. 2004 "
                   "count DS1; ventricular flutter excluded): a beat missed by the detector or not "
                   "classifiable counts as a false negative of its class; a detection without a reference "
                   "beat classified X counts as a false positive of X. 'classes': strict, every other beat "
                   "labelled X is a false positive of X; 'ec57': VEB and SVEB as ANSI/AAMI EC57 counts them "
                   "(its reference comparator, WFDB bxb: VFP = Nv+Sv+Ov, SFP = Ns+Vs+Fs+Os; fusion and "
                   "unclassifiable beats labelled V, and unclassifiable beats labelled S, are not false "
                   "positives; sensitivities unchanged; no 5-minute learning period, no AF exclusion). "
                   "CIs: 95 % percentile bootstrap over records (1000 resamples). macro-F1 over N, S, V, F "
                   "(Q: 8 beats in DS1).",
    }  # fmt: skip


def vendored_metrics(model: Path, record: Path, precision: str) -> dict[str, Any]:
    """EC57 figures of a shipped model on one WFDB record through the run-time path (no torch)."""
    from vigil.edge.beat_classes import BeatClassifier, classify_signal

    x, fs, ann_s, ann_sym = read_lead(record)
    sample, cls, invalid = classify_signal(x, fs, BeatClassifier(model, precision, providers="cpu"))
    label, ref_cls, ref_det = reference_labels(sample, fs, ann_s, ann_sym)
    rb = RecordBeats(
        record.name, fs, sample, np.zeros(0), np.zeros(0), cls >= 0, label, ref_cls, ref_det, invalid
    )
    tab = score({rb.name: rb}, {rb.name: cls}, n_boot=0)
    return {"detected": int(len(sample)), "classified": int((cls >= 0).sum()), "invalid": invalid, **tab}
