"""ecg-rhythm: a small CRNN that reads a single-lead ECG strip and says Normal, AF, Other or Noisy.

Data: the PhysioNet/CinC 2017 records in ``<data>/cinc2017_af`` (the shared 1000; labels from
``REFERENCE-v3.csv``). Input: "rhythm-strip/1" windows (:mod:`vigil.kernels.rhythm_strip`: 100 Hz,
0.5-40 Hz, 10-s windows normalised to the R amplitude and asinh-compressed) and 13 RR features of the
beats that Vigil's QRS detector finds in the window (heart rate, dispersion, COSEn, extremes, coverage).

Network (``RhythmCRNN``, :func:`build`): five convolution blocks (stride-2 convolution, batch norm,
LeakyReLU) turn the window into 32 steps of 48 channels (a step every 0.32 s, receptive field about
one beat); a bidirectional GRU reads them; its outputs are pooled (mean and max over time) and
concatenated with the RR features after a small dense layer; two dense layers give the four class
scores. A record's class is the arg-max of the softmax of the mean logits over its sliding windows
(:func:`~vigil.kernels.rhythm_strip.record_probabilities`). LeakyReLU
rather than ReLU because ONNX Runtime fuses it into an INT8 lookup (``QLinearLeakyRelu``) in either
INT8 artifact, whereas a ReLU between symmetric INT8 tensors (the TensorRT artifact) is run in float
between a dequantize and a quantize.

Pretraining (:mod:`vigil.models.rhythm_pretext`; ``pretrain_epochs``, ``pretext_leads``): the network
first learns to name the AAMI class of the beat in each of its 32 GRU steps on 10-s windows of the
MIT-BIH DS1 records (both leads, MLII and mostly V1, prepared as CinC strips are); a throw-away head
reads the GRU, and every weight then goes on to the CinC training below. MIT-BIH labels every beat,
which teaches the convolutions what ectopic, aberrant and fibrillating beats look like faster than
1000 strip labels can. Leave-records-out CinC F1 with seeds 0 / 10 / 20: 0.784 / 0.772 / 0.774 without
it, 0.800 / 0.792 / 0.792 with MLII (``bench/rhythm_pretrain.py``); on a second machine 0.794 / 0.803 /
0.782 with MLII and 0.807 / 0.795 / 0.788 with both leads; on a third, with both leads, 0.812 / 0.798 /
0.783. The seed moves a network by up to three points, so one pretrained network still does not meet
the 0.80 floor on average, and the draw decides how many MIT-BIH windows it calls AF (1 % to 3 % of
the non-AF windows of DS1 over seeds, in either recipe; ``bench/rhythm_mitdb_af.py``).

Distillation (``teachers``, Hinton et al. 2015): what removes the draw is averaging seeds, and the
shipped network is that average learnt by one network of the same size. Three teachers, the recipe
above with seeds ``seed + 0 / 10 / 20``, train on the same records; their mean log-probabilities of
every training crop become soft targets (``distill_weight`` x T^2 KL at temperature
``distill_temperature``) beside the label losses of a fourth network, the student, which is the one
shipped. The teachers predict crops of records they were trained on; the held-out fold of the
cross-validation reaches neither teachers nor student. On the third machine, same split: the three
teachers' ensemble scored 0.810 out of fold and the student 0.818 (FP32; INT8 0.818); students of
seeds +10 and +20 from the same teachers 0.811 and 0.809 (INT8 0.805, 0.812): mean 0.813, sd 0.005,
against sd 0.015 for the single networks (``bench/rhythm_distill.py``; weight 3 at temperature 3
scored 0.820 for seed 0, within that spread, and is not the default). Why a student scores above its
teachers' ensemble is not established; one untested guess is that the soft targets are per crop, so
an Other strip whose ectopy shows in one window tells the student which of its windows look Normal.
Four networks instead of one: about 50 min on two cores (``vigil train ecg-rhythm --workers 2``).

Training: random 10-s crops (``crops_per_10s`` per 10 s of strip) in bags of ``bag`` crops of one
record (:func:`bag_crops`); the loss is the cross-entropy of each bag's mean logits with the record's
label (what the record-level score reads) plus ``instance_weight`` times that of each crop. A strip
labelled Other may show its ectopy or block in one window only; the bag loss lets the network put the
evidence where it is instead of calling every crop of the strip Other (leave-records-out CinC F1:
0.781 crop-level, 0.786 with bags of 5; 0.779 with the bag loss alone).
Biosignal augmentation (:func:`vigil.models.training.augment`) and polarity reversal of a random half
of the crops at every step (hand-held single-lead devices are often held reversed), tempered class
weights, AdamW with a one-cycle schedule for a fixed number of epochs (no early stopping: the held-out
fold never steers training).

Inference (:func:`for_inference`): the exported graph runs each window and its negative as one batch
and averages the two logits (0.786 -> 0.794 in the same validation).

INT8: static QDQ (:mod:`vigil.export.quantize`) of the convolutions and dense layers, with 7-bit
weights (:func:`vigil.export.quantize.reduce_weight_range`); the GRU is computed in FP32 (ONNX
Runtime's static quantizer has no GRU) on dequantized activations, from weights stored as FP16
(:func:`vigil.export.compact.recurrent_weights_fp16`).

Evaluation (:func:`cross_validate`): stratified ``folds``-fold cross-validation over records; every
record is scored by the fold model that never saw it. Each fold model is also exported and quantized
with every calibration method (calibrated on its own training windows), so INT8 is measured on
held-out records too and the calibration method is chosen by that held-out macro-F1. Scores: the
challenge's mean F1 of N, A, O, per-class Se/+P, with 95 % CIs by bootstrap over records.

The training seed matters at this data size (the pretraining paragraph above): training is
bit-reproducible on one CPU type (:func:`fit_model`), but another CPU rounds the kernels differently
and the trajectory follows; the same recipe and seed scored 0.784 on one machine and 0.794 on another
without pretraining. Read a single network's figure as one draw from a spread of a point or more.

Data is what limits a single network (``bench/rhythm_learning_curve.py --pretrain-epochs 0``, without
pretraining or distillation): the same cross-validation with each fold network trained on a stratified
quarter, half or all of its 800 training records scored 0.710, 0.732 and 0.784 (seed 0), about +0.04
per doubling of records. The shared set holds 1000 of the challenge's 8528. Recipe changes tried on it
(longer windows, label smoothing, a wider network, a record-level stacker on RR and beat-template
features, per-class decision offsets chosen by nested cross-validation) moved the score by less than
the seed does; the MIT-BIH pretraining, which brings labelled beats from elsewhere, and the distilled
seed ensemble moved it by more.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vigil.export.card import ModelCard, artifacts_of, card_path
from vigil.export.latency import measure_latency
from vigil.export.quantize import INT8_NOTE
from vigil.kernels.rhythm_strip import (
    RR_FEATURES,
    Strip,
    StripParams,
    StripWindows,
    cut_windows,
    prepare_strip,
    record_probabilities,
    window_starts,
)
from vigil.models.metrics import bootstrap_ci, class_stats, f1_scores, macro_f1
from vigil.models.registry import REPO, TrainOptions

NAME = "ecg-rhythm"
VERSION = "1"
CLASSES = ("N", "A", "O", "~")
SCORED = (0, 1, 2)  # the challenge score: mean F1 of N, A, O
DATASET = "cinc2017_af"
VENDORED = REPO / "data" / "cinc2017"


@dataclass(frozen=True)
class Config:
    """Network size and training recipe."""

    strip: StripParams = field(default_factory=StripParams)
    channels: tuple[int, ...] = (16, 16, 32, 32, 48)
    kernels: tuple[int, ...] = (7, 7, 5, 5, 3)
    hidden: int = 24
    rr_hidden: int = 16
    head: int = 32
    dropout: float = 0.3
    epochs: int = 45
    crops_per_10s: float = 3.0
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    class_power: float = 0.5
    flip: bool = True
    leaky: float = 0.01  # LeakyReLU slope (0: ReLU)
    augment: bool = True
    qat_epochs: int = 2  # quantization-aware fine-tuning epochs after the float ones
    bag: int = 5  # crops of one record per training bag, scored by their mean logits (1: no bags)
    instance_weight: float = 0.5  # weight of the per-crop loss beside the bag loss
    flip_average: bool = True  # the exported network averages the logits of the strip and its negative
    folds: int = 5
    calibration_windows: int = 512
    pretrain_epochs: int = 10  # MIT-BIH DS1 beat-class epochs before the CinC ones (models.rhythm_pretext)
    pretext_leads: tuple[int, ...] = (0, 1)  # MIT-BIH leads read by the pretraining (0: MLII, 1: mostly V1)
    teachers: tuple[int, ...] = (0, 10, 20)  # seed offsets of the networks distilled into this one
    distill_weight: float = 1.0  # weight of the distillation loss beside the label losses
    distill_temperature: float = 2.0  # softmax temperature of teacher and student in that loss


def config_for(opts: TrainOptions) -> Config:
    c = Config()
    if opts.quick:
        c = dataclasses.replace(c, epochs=1, qat_epochs=1, crops_per_10s=0.5, folds=2, calibration_windows=64,
                                pretrain_epochs=0, teachers=(0, 1))  # fmt: skip
    if opts.epochs is not None:
        c = dataclasses.replace(c, epochs=int(opts.epochs))
    return c


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Record:
    name: str
    label: int
    strip: Strip


def read_labels(folder: Path) -> dict[str, str]:
    """``record -> label`` from ``REFERENCE-v3.csv``."""
    path = Path(folder) / "REFERENCE-v3.csv"
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    return {r[0].strip(): r[1].strip() for r in rows}


def load_records(folder: Path, params: StripParams) -> list[Record]:
    """Every labelled record of ``folder``, prepared by "rhythm-strip/1" (sorted by name)."""
    from vigil.firmware_bridge.replay import read_wfdb

    out = []
    for name, lab in sorted(read_labels(folder).items()):
        rec = read_wfdb(Path(folder) / name, channels=[0], annotator=None)
        out.append(Record(name, CLASSES.index(lab), prepare_strip(rec.signal[:, 0], rec.fs, params)))
    if not out:
        raise ValueError(f"{folder}: no labelled records")
    return out


def random_crops(
    records: Sequence[Record], per_10s: float, rng: np.random.Generator
) -> tuple[dict, np.ndarray]:
    """Random-position windows: ``ceil(per_10s * length / 10 s)`` per record; inputs and labels."""
    ecg, rr, y = [], [], []
    for r in records:
        w = r.strip.params.window
        n = len(r.strip)
        k = max(1, math.ceil(per_10s * n / (10.0 * r.strip.params.fs)))
        starts = rng.integers(0, max(1, n - w + 1), k)
        win = cut_windows(r.strip, starts)
        ecg.append(win.ecg)
        rr.append(win.rr)
        y.append(np.full(len(win.ecg), r.label))
    return {"ecg": np.concatenate(ecg), "rr": np.concatenate(rr)}, np.concatenate(y).astype(np.int64)


def sliding(records: Sequence[Record]) -> tuple[dict, np.ndarray, list[StripWindows]]:
    """All sliding windows of ``records``: stacked inputs, the record index of each window, and the
    per-record windows."""
    wins = [cut_windows(r.strip, window_starts(len(r.strip), r.strip.params)) for r in records]
    owner = np.concatenate([np.full(len(w.ecg), i) for i, w in enumerate(wins)]).astype(np.int64)
    inputs = {"ecg": np.concatenate([w.ecg for w in wins]), "rr": np.concatenate([w.rr for w in wins])}
    return inputs, owner, wins


def per_record(scores: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Record class probabilities [n, classes] from window scores (softmax of the mean logits)."""
    return np.stack([record_probabilities(scores[owner == i]) for i in range(n)])


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index per record: each class shuffled and dealt round-robin over ``k`` folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


#: MIT-BIH windows and step labels for the pretext task (:mod:`vigil.models.rhythm_pretext`).
Pretext = tuple[dict, np.ndarray]


def pretext_records(data: Path) -> list[str]:
    """The MIT-BIH DS1 records in ``<data>/mitdb`` that the network is pretrained on."""
    from vigil.models.beats import DS1

    return [n for n in DS1 if (Path(data) / "mitdb" / f"{n}.hea").is_file()]


def load_pretext(data: Path, cfg: Config) -> Pretext:
    """The pretext windows of the DS1 records in ``<data>/mitdb`` (every 5 s, "rhythm-strip/1")."""
    from vigil.models.beats import DS1
    from vigil.models.rhythm_pretext import pretext_windows

    return pretext_windows(Path(data) / "mitdb", DS1, cfg.strip, leads=cfg.pretext_leads)


# ---------------------------------------------------------------------------------------------
# Network


def build(cfg: Config):  # -> RhythmCRNN (torch.nn.Module)
    import torch
    from torch import nn

    from vigil.export.quantize import WEIGHT_BITS
    from vigil.models.training import fake_quantize_weights

    def act() -> nn.Module:
        return nn.LeakyReLU(cfg.leaky) if cfg.leaky > 0 else nn.ReLU()

    class FakeQuant(nn.Module):
        """What INT8 does to this tensor: symmetric rounding to 255 levels over +-``amax`` (set by
        :func:`calibrate_fake_quant` as MinMax calibration sets it), with a straight-through gradient.
        The identity unless ``on``, so it never appears in an export."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("amax", torch.zeros(()))
            self.on = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.on:
                return x
            s = self.amax.clamp_min(1e-8) / 127
            return x + (torch.clamp(torch.round(x / s), -127, 127) * s - x).detach()

    class RhythmCRNN(nn.Module):
        """Conv blocks -> bidirectional GRU -> mean/max pooling, + RR features -> class scores."""

        def __init__(self) -> None:
            super().__init__()
            self.convs, self.bns, self.acts, cin = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), 1
            for cout, k in zip(cfg.channels, cfg.kernels, strict=True):
                self.convs.append(nn.Conv1d(cin, cout, k, stride=2, padding=k // 2, bias=False))
                self.bns.append(nn.BatchNorm1d(cout))
                self.acts.append(act())
                cin = cout
            self.gru = nn.GRU(cin, cfg.hidden, batch_first=True, bidirectional=True)
            self.rr = nn.Linear(len(RR_FEATURES), cfg.rr_hidden)
            self.hidden = nn.Linear(4 * cfg.hidden + cfg.rr_hidden, cfg.head)
            self.out = nn.Linear(cfg.head, len(CLASSES))
            self.act, self.drop = act(), nn.Dropout(cfg.dropout)
            # where the INT8 model rounds: inputs, each conv output and activation, the RR layer, the
            # pooled features and their concatenation, the hidden layer, the scores
            self.fq = nn.ModuleList(FakeQuant() for _ in range(2 + 2 * len(self.convs) + 2 + 3 + 2 + 1))

        def quantization_aware(self, on: bool) -> None:
            """Run with INT8 rounding of activations and weights (training and evaluation), or not."""
            for q in self.fq:
                q.on = on

        def _w(self, layer: nn.Module) -> torch.Tensor:
            return fake_quantize_weights(layer.weight, WEIGHT_BITS) if self.fq[0].on else layer.weight

        def forward(self, ecg: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
            q = iter(self.fq)
            h = next(q)(ecg)
            for conv, bn, a in zip(self.convs, self.bns, self.acts, strict=True):
                h = next(q)(bn(conv._conv_forward(h, self._w(conv), None)))
                h = next(q)(a(h))
            h, _ = self.gru(h.transpose(1, 2))  # [n, steps, 2 hidden]
            r = next(q)(self.act(next(q)(nn.functional.linear(next(q)(rr), self._w(self.rr), self.rr.bias))))
            z = next(q)(torch.cat([next(q)(h.mean(1)), next(q)(h.amax(1)), r], dim=1))
            z = next(q)(self.act(next(q)(nn.functional.linear(z, self._w(self.hidden), self.hidden.bias))))
            return next(q)(nn.functional.linear(self.drop(z), self._w(self.out), self.out.bias))

    return RhythmCRNN()


def bag_crops(
    records: Sequence[Record], per_10s: float, bag: int, rng: np.random.Generator
) -> tuple[dict, np.ndarray]:
    """Random-position windows in bags of ``bag`` crops of one record (``max(1, k // bag)`` bags for
    the ``k`` crops :func:`random_crops` would draw), bag after bag; inputs and one label per bag."""
    ecg, rr, y = [], [], []
    for r in records:
        w, n = r.strip.params.window, len(r.strip)
        k = max(1, math.ceil(per_10s * n / (10.0 * r.strip.params.fs)))
        n_bags = max(1, k // bag)
        win = cut_windows(r.strip, rng.integers(0, max(1, n - w + 1), n_bags * bag))
        ecg.append(win.ecg)
        rr.append(win.rr)
        y.append(np.full(n_bags, r.label))
    return {"ecg": np.concatenate(ecg), "rr": np.concatenate(rr)}, np.concatenate(y).astype(np.int64)


def _fit_bags(model, inputs: dict, y: np.ndarray, cfg: Config, epochs: int, lr: float,
              rng: np.random.Generator, progress: bool, label: str,
              soft: np.ndarray | None = None) -> None:  # fmt: skip
    """AdamW + one-cycle over bags (:func:`bag_crops`): cross-entropy of each bag's mean logits with
    its record's label, plus ``instance_weight`` x that of each crop; every step augments the crops
    and reverses the polarity of a random half (hand-held single-lead devices are often held reversed).
    With ``soft`` (teacher log-probabilities per crop, :func:`teacher_log_probs`), plus
    ``distill_weight`` x the distillation loss T^2 KL(teacher_T || student_T) per crop, at temperature
    T = ``distill_temperature`` (Hinton et al. 2015, "Distilling the knowledge in a neural network")."""
    import torch

    from vigil.models.training import augment, class_weights, progress_bar, reverse_polarity

    k, n = cfg.bag, len(y)
    per_step = max(1, cfg.batch // k)
    steps = math.ceil(n / per_step)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(1, epochs * steps), pct_start=0.15
    )
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.from_numpy(class_weights(y, len(CLASSES), cfg.class_power))
    )
    labels = torch.from_numpy(y)
    bar = progress_bar(progress, label, epochs)
    try:
        for _ in range(epochs):
            model.train()
            total = 0.0
            for bags in np.array_split(rng.permutation(n), steps):
                rows = (bags[:, None] * k + np.arange(k)[None, :]).ravel()
                ecg = augment(inputs["ecg"][rows], rng) if cfg.augment else inputs["ecg"][rows]
                if cfg.flip:
                    ecg = reverse_polarity(ecg, rng)
                scores = model(
                    torch.from_numpy(np.ascontiguousarray(ecg)), torch.from_numpy(inputs["rr"][rows])
                )
                loss = loss_fn(scores.view(len(bags), k, -1).mean(1), labels[bags])
                if cfg.instance_weight:
                    loss = loss + cfg.instance_weight * loss_fn(scores, labels[bags].repeat_interleave(k))
                if soft is not None:
                    loss = loss + cfg.distill_weight * _distillation_loss(scores, soft[rows], cfg)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(bags)
            bar.advance(f"loss {total / n:.4f}")
    finally:
        bar.close()


def _distillation_loss(scores, soft: np.ndarray, cfg: Config):
    """T^2 KL(softmax(soft / T) || softmax(scores / T)), mean over crops."""
    import torch
    from torch.nn.functional import kl_div, log_softmax

    t = cfg.distill_temperature
    target = log_softmax(torch.from_numpy(soft) / t, dim=1)
    return kl_div(log_softmax(scores / t, dim=1), target, reduction="batchmean", log_target=True) * t * t


def teacher_log_probs(teachers: Sequence, inputs: dict) -> np.ndarray:
    """The teachers' mean log-probabilities per window (each an inference network, :func:`for_inference`):
    the ensemble a student is distilled from."""
    from scipy.special import log_softmax

    logp = [log_softmax(torch_scores(t, inputs), axis=1) for t in teachers]
    return np.mean(logp, axis=0).astype(np.float32)


def fit_teachers(
    cfg: Config,
    records: Sequence[Record],
    seed: int,
    progress: bool,
    label: str,
    pretext: Pretext | None = None,
    workers: int = 1,
) -> list:
    """The networks a ``cfg.teachers`` student learns from: the recipe without distillation, trained on
    the same ``records`` with seeds ``seed + t`` for ``t`` in ``cfg.teachers`` (``workers`` at a time,
    each in its own process: the same weights as one after the other)."""
    tcfg = dataclasses.replace(cfg, teachers=())
    bar = progress and workers == 1
    jobs = [(_fitted_state, tcfg, records, seed + t, bar, f"{label} teacher {t}", pretext)
            for t in cfg.teachers]  # fmt: skip
    return [inference_network(tcfg, state) for state in _map(jobs, workers)]


def inference_network(cfg: Config, state: dict):
    """The network of ``cfg`` for inference (:func:`for_inference`, eval mode) with weights ``state``."""
    net = for_inference(build(cfg), cfg)
    net.load_state_dict(state)
    return net.eval()


def _fitted_state(*args) -> dict:
    """:func:`fit_model`'s weights (what a worker process can send back; the network class is local)."""
    return fit_model(*args).state_dict()


def _map(jobs: Sequence[tuple], workers: int) -> list:
    """``[fn(*args) for fn, *args in jobs]``, in ``workers`` processes when more than one (spawned, not
    forked: a fork of a process whose torch thread pools have run can hang)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*args) for fn, *args in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=spawn) as pool:
        return [f.result() for f in [pool.submit(*job) for job in jobs]]


@dataclass
class Fitting:
    """A network between its float and its quantization-aware epochs: the model, its training bags
    (:func:`bag_crops`), the generator that the remaining epochs draw augmentation from, and the
    teachers' log-probabilities of the bags' crops when it is distilled."""

    model: object  # RhythmCRNN (torch.nn.Module)
    inputs: dict
    labels: np.ndarray
    rng: np.random.Generator
    soft: np.ndarray | None = None


def fit_float(
    cfg: Config,
    records: Sequence[Record],
    seed: int,
    progress: bool,
    label: str,
    pretext: Pretext | None = None,
    teachers: Sequence | None = None,
) -> Fitting:
    """``pretrain_epochs`` on the MIT-BIH beat task (``pretext``, :func:`load_pretext`), then ``epochs``
    in float on ``records``; with ``cfg.teachers``, distilled from ``teachers`` (inference networks
    trained on the same ``records``; :func:`fit_teachers` when None)."""
    import torch

    from vigil.models.rhythm_pretext import pretrain
    from vigil.models.training import seed_everything

    if cfg.pretrain_epochs and pretext is None:
        raise ValueError(f"pretrain_epochs={cfg.pretrain_epochs} needs the MIT-BIH windows (load_pretext)")
    torch.set_num_threads(1)
    if cfg.teachers and teachers is None:
        teachers = fit_teachers(cfg, records, seed, progress, label, pretext)
    rng = seed_everything(seed)
    model = build(cfg)
    inputs, y = bag_crops(records, cfg.crops_per_10s, cfg.bag, rng)
    soft = teacher_log_probs(teachers, inputs) if cfg.teachers else None
    if cfg.pretrain_epochs:
        pretrain(model, *pretext, cfg, cfg.pretrain_epochs, np.random.default_rng(seed + 999))
    _fit_bags(model, inputs, y, cfg, cfg.epochs, cfg.lr, rng, progress, label, soft)
    return Fitting(model, inputs, y, rng, soft)


def fit_int8_aware(fit: Fitting, cfg: Config, progress: bool, label: str):
    """``qat_epochs`` quantization-aware epochs at a tenth of the learning rate (rounding ranges set by
    :func:`calibrate_fake_quant` on 512 of the training crops), then the network for inference
    (:func:`for_inference`, eval mode)."""
    model = fit.model
    if cfg.qat_epochs:
        inputs = fit.inputs
        calibrate_fake_quant(model, {k: v[:: max(1, len(inputs["ecg"]) // 512)] for k, v in inputs.items()})
        model.quantization_aware(True)
        _fit_bags(model, inputs, fit.labels, cfg, cfg.qat_epochs, cfg.lr / 10, fit.rng, progress,
                  label + " INT8-aware", fit.soft)  # fmt: skip
        model.quantization_aware(False)
    return for_inference(model, cfg).eval()


def fit_model(
    cfg: Config,
    records: Sequence[Record],
    seed: int,
    progress: bool,
    label: str,
    pretext: Pretext | None = None,
    teachers: Sequence | None = None,
):
    """A network trained on ``records``: :func:`fit_float`, then :func:`fit_int8_aware` (fixed epochs;
    see the module doc). Returned for inference: wrapped by :func:`for_inference`."""
    fit = fit_float(cfg, records, seed, progress, label, pretext, teachers)
    return fit_int8_aware(fit, cfg, progress, label)


def for_inference(model, cfg: Config):
    """``model`` as it is scored and exported: with ``flip_average``, one graph that runs the windows and
    their negatives as one batch and averages the two logits (test-time augmentation: the network was
    trained on both polarities, and its two readings of a strip disagree on a few percent of windows)."""
    import torch
    from torch import nn

    if not cfg.flip_average:
        return model

    class FlipAverage(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, ecg, rr):
            out = self.net(torch.cat([ecg, -ecg]), torch.cat([rr, rr]))
            return out.view(2, -1, out.shape[-1]).mean(0)

    return FlipAverage(model)


def calibrate_fake_quant(model, inputs: dict) -> None:
    """Set every rounding point's range to the largest |value| it sees on ``inputs`` (eval mode)."""

    seen = [0.0] * len(model.fq)

    def hook(i: int):
        return lambda module, args, out: seen.__setitem__(i, max(seen[i], float(args[0].abs().max())))

    hooks = [q.register_forward_hook(hook(i)) for i, q in enumerate(model.fq)]
    torch_scores(model, inputs)
    for h in hooks:
        h.remove()
    for q, v in zip(model.fq, seen, strict=True):
        q.amax.fill_(v)


def torch_scores(model, inputs: dict) -> np.ndarray:
    from vigil.models.training import predict

    return predict(model, inputs)


def onnx_scores(path: Path, inputs: dict, threads: int = 1) -> np.ndarray:
    from vigil.export.runtime import cpu_session

    sess = cpu_session(path, threads)
    out = [sess.run(None, {k: v[i : i + 1024] for k, v in inputs.items()})[0]
           for i in range(0, len(inputs["ecg"]), 1024)]  # fmt: skip
    return np.concatenate(out)


def export_fp32(model, path: Path, check: dict) -> float:
    from vigil.export.onnx_export import export_onnx

    example = {k: v[:2] for k, v in check.items()}
    return export_onnx(model, example, path, check_inputs={k: v[:256] for k, v in check.items()})


def export_artifacts(
    model, cfg: Config, records: Sequence[Record], fp32: Path, method: str, seed: int
) -> tuple[float, dict, dict[str, Path]]:
    """``model`` as ``fp32`` (parity-checked on every hundredth record's windows) and its INT8
    artifacts beside it (``method`` calibration on ``cfg.calibration_windows`` random training
    windows); the parity, the calibration windows and ``{card key: INT8 path}``."""
    from vigil.export.quantize import int8_artifacts

    rng = np.random.default_rng(seed + 999)
    calib, _ = random_crops(records, 1.0, rng)
    pick = rng.permutation(len(calib["ecg"]))[: cfg.calibration_windows]
    calib = {k: v[pick] for k, v in calib.items()}
    check, _, _ = sliding(records[:: max(1, len(records) // 100)])
    diff = export_fp32(model, fp32, check)
    return diff, calib, int8_artifacts(fp32, calib, method)


# ---------------------------------------------------------------------------------------------
# Scores


def summary(ref: np.ndarray, pred: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Challenge score and per-class Se/+P/F1 with 95 % CIs (bootstrap over records)."""
    groups = np.arange(len(ref))
    k = len(CLASSES)

    def ci(fn: Callable[[np.ndarray], float]) -> list[float]:
        return [round(v, 4) for v in bootstrap_ci(groups, fn, n_boot=n_boot, seed=seed)]

    out = {
        "records": int(len(ref)),
        "cinc_f1": round(macro_f1(ref, pred, k, SCORED), 4),
        "cinc_f1_ci95": ci(lambda i: macro_f1(ref[i], pred[i], k, SCORED)),
        "accuracy": round(float(np.mean(ref == pred)), 4),
        "classes": {},
    }
    f1 = f1_scores(ref, pred, k)
    for c, st in enumerate(class_stats(ref, pred, CLASSES)):

        def se(i: np.ndarray, c: int = c) -> float:
            m = ref[i] == c
            return float(np.mean(pred[i][m] == c)) if m.any() else float("nan")

        def ppv(i: np.ndarray, c: int = c) -> float:
            m = pred[i] == c
            return float(np.mean(ref[i][m] == c)) if m.any() else float("nan")

        out["classes"][CLASSES[c]] = {
            "n": st.n_ref, "se": round(st.se, 4), "se_ci95": ci(se), "ppv": round(st.ppv, 4),
            "ppv_ci95": ci(ppv), "f1": round(float(f1[c]), 4),
            "f1_ci95": ci(lambda i, c=c: float(f1_scores(ref[i], pred[i], k)[c])),
        }  # fmt: skip
    out["confusion"] = np.bincount(ref * k + pred, minlength=k * k).reshape(k, k).tolist()
    return out


def int8_floor(fp32: dict, int8: dict) -> dict:
    """The issue's INT8 floor: macro-F1 within 1 point, no class losing > 2 points of sensitivity."""
    drop_f1 = fp32["cinc_f1"] - int8["cinc_f1"]
    drop_se = {c: round(fp32["classes"][c]["se"] - int8["classes"][c]["se"], 4) for c in CLASSES}
    ok = drop_f1 <= 0.01 and all(v <= 0.02 for v in drop_se.values())
    return {"cinc_f1_drop": round(drop_f1, 4), "se_drop": drop_se, "passes": bool(ok)}


# ---------------------------------------------------------------------------------------------
# Cross-validation


def fold_calibration(train: Sequence[Record], n: int, seed: int, fold: int) -> dict:
    """The INT8 calibration windows of a fold network: ``n`` of one random crop per 10 s of its
    training records."""
    calib, _ = random_crops(train, 1.0, np.random.default_rng(seed + 100 + fold))
    pick = np.random.default_rng(seed).permutation(len(calib["ecg"]))[:n]
    return {k: v[pick] for k, v in calib.items()}


def held_out_probabilities(
    model, train: Sequence[Record], test: Sequence[Record], calibration_windows: int, seed: int, fold: int
) -> dict[str, np.ndarray]:
    """Record probabilities of the held-out ``test`` records from fold network ``model`` (trained on
    ``train``): ``"torch"`` (FP32) and, per calibration method, its INT8 model (:func:`fold_calibration`)."""
    from vigil.export.quantize import choose_calibration

    labels = np.array([r.label for r in test])
    x, owner, _ = sliding(test)
    out = {"torch": per_record(torch_scores(model, x), owner, len(test))}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fold.fp32.onnx"
        export_fp32(model, fp32, x)

        def score(path: Path) -> float:
            p = per_record(onnx_scores(path, x), owner, len(test))
            out[path.stem.split(".")[0]] = p
            return macro_f1(labels, p.argmax(1), len(CLASSES), SCORED)

        calib = fold_calibration(train, calibration_windows, seed, fold)
        choose_calibration(fp32, Path(tmp) / "fold.int8.onnx", calib, score)
    return out


def _fold_probabilities(
    cfg: Config, records: Sequence[Record], fold: np.ndarray, f: int, seed: int, progress: bool,
    pretext: Pretext | None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Fold ``f`` of :func:`cross_validate`: its network and :func:`held_out_probabilities`."""
    train = [r for r, g in zip(records, fold, strict=True) if g != f]
    test = [r for r, g in zip(records, fold, strict=True) if g == f]
    model = fit_model(cfg, train, seed + 1 + f, progress, f"fold {f + 1}/{cfg.folds}", pretext)
    return held_out_probabilities(model, train, test, cfg.calibration_windows, seed, f)


def cross_validate(
    cfg: Config,
    records: Sequence[Record],
    seed: int,
    progress: bool,
    log=print,
    pretext: Pretext | None = None,
    workers: int = 1,
    final: bool = False,
) -> dict:
    """Stratified k-fold over records: out-of-fold FP32 (torch and ONNX) and INT8 (every calibration
    method) record predictions; metrics, and the calibration method that scored best. ``workers`` fold
    networks train side by side, each in its own process (the same weights as one after the other);
    with ``final``, the network on all ``records`` (seed ``seed``) trains among them, its weights
    returned under ``"_final"``."""
    from vigil.export.quantize import METHODS

    labels = np.array([r.label for r in records])
    fold = stratified_folds(labels, cfg.folds, seed)
    n = len(records)
    prob = {"torch": np.zeros((n, len(CLASSES)))}
    prob.update({m: np.zeros((n, len(CLASSES))) for m in METHODS})
    t0 = time.time()
    bar = progress and workers == 1
    jobs = [(_fold_probabilities, cfg, records, fold, f, seed, bar, pretext) for f in range(cfg.folds)]
    if final:
        jobs.append((_fitted_state, cfg, records, seed, bar, "final model", pretext))
    done = _map(jobs, workers)
    for f, out in enumerate(done[: cfg.folds]):
        te_idx = np.flatnonzero(fold == f)
        for k, p in out.items():
            prob[k][te_idx] = p
        fold_f1 = macro_f1(labels[te_idx], prob["torch"][te_idx].argmax(1), len(CLASSES), SCORED)
        log(f"fold {f + 1}/{cfg.folds}: {n - len(te_idx)} train / {len(te_idx)} held-out records, "
            f"CinC F1 {fold_f1:.3f} ({time.time() - t0:.0f} s)")  # fmt: skip
    pred = {k: v.argmax(1) for k, v in prob.items()}
    fp32 = summary(labels, pred["torch"], seed=seed)
    calib_scores = {m: round(macro_f1(labels, pred[m], len(CLASSES), SCORED), 4) for m in METHODS}
    passes = {m: int8_floor(fp32, summary(labels, pred[m], n_boot=0))["passes"] for m in METHODS}
    best = max(METHODS, key=lambda m: (passes[m], calib_scores[m], -METHODS.index(m)))
    int8 = summary(labels, pred[best], seed=seed)
    return {
        "folds": cfg.folds,
        "fp32": fp32,
        "int8": int8,
        "int8_floor": int8_floor(fp32, int8),
        "calibration": {"chosen": best, "cinc_f1_by_method": calib_scores, "int8_floor_by_method": passes},
        "af_alarm": {"se": fp32["classes"]["A"]["se"], "ppv": fp32["classes"]["A"]["ppv"],
                     "int8_se": int8["classes"]["A"]["se"], "int8_ppv": int8["classes"]["A"]["ppv"]},
        "seconds": round(time.time() - t0, 1),
        **({"_final": done[-1]} if final else {}),
        "_oof": {"records": [r.name for r in records], "labels": labels.tolist(),
                 "fp32": prob["torch"].round(5).tolist(), "int8": prob[best].round(5).tolist()},
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Train, export, card


def _weights_path(zoo: Path) -> Path:
    return Path(zoo) / f"{NAME}.pt"


def config_to_dict(cfg: Config) -> dict:
    d = dataclasses.asdict(cfg)
    d["strip"] = dataclasses.asdict(cfg.strip)
    return d


def config_from_dict(d: dict) -> Config:
    d = dict(d)
    s = dict(d.pop("strip"))
    s["band_hz"] = tuple(s["band_hz"])
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return Config(strip=StripParams(**s), **d)


def train(opts: TrainOptions) -> ModelCard:
    """Cross-validate, train the final network on every record, save ``<zoo>/ecg-rhythm.pt``, export."""
    import torch

    cfg = config_for(opts)
    t0 = time.time()
    records = load_records(Path(opts.data) / DATASET, cfg.strip)
    print(f"{NAME}: {len(records)} records from {Path(opts.data) / DATASET} ({time.time() - t0:.0f} s)")
    pretext = load_pretext(Path(opts.data), cfg) if cfg.pretrain_epochs else None
    parallel = opts.workers > 1  # then the final network trains in the pool of the fold networks
    cv = cross_validate(cfg, records, opts.seed, opts.progress, pretext=pretext, workers=opts.workers,
                        final=parallel)  # fmt: skip
    fp, q = cv["fp32"], cv["int8"]
    print(f"{NAME}: {cfg.folds}-fold CinC F1 FP32 {fp['cinc_f1']:.3f} {fp['cinc_f1_ci95']}, "
          f"INT8 ({cv['calibration']['chosen']}) {q['cinc_f1']:.3f} {q['cinc_f1_ci95']}")  # fmt: skip
    t1 = time.time()
    if parallel:
        model = inference_network(cfg, cv.pop("_final"))
    else:
        model = fit_model(cfg, records, opts.seed, opts.progress, "final model", pretext)
    oof = cv.pop("_oof")
    zoo = Path(opts.zoo)
    zoo.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "name": NAME, "version": VERSION, "config": config_to_dict(cfg),
            "state_dict": model.state_dict(), "seed": opts.seed, "quick": opts.quick, "cv": cv,
            "oof": {"records": oof["records"], "labels": oof["labels"],
                    "fp32": torch.tensor(oof["fp32"], dtype=torch.float16),
                    "int8": torch.tensor(oof["int8"], dtype=torch.float16)},
            "records": len(records),
            "workers": opts.workers,
            "pretext_records": pretext_records(Path(opts.data)) if cfg.pretrain_epochs else [],
            "seconds": {"total": round(time.time() - t0, 1), "cross_validation": cv["seconds"],
                        "final_model": round(time.time() - t1, 1)},
        },
        _weights_path(zoo),
    )  # fmt: skip
    return export(opts)


def _load_checkpoint(zoo: Path):
    import torch

    path = _weights_path(zoo)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained weights; run vigil train {NAME} first")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = config_from_dict(ckpt["config"])
    return ckpt, cfg, inference_network(cfg, ckpt["state_dict"])


def vendored_metrics(artifacts: dict[str, Path], folder: Path, params: StripParams) -> dict:
    """What the shipped artifacts (``{precision: file}``, FP32 first) say on the vendored records (the
    tests recompute this)."""
    records = load_records(folder, params)
    x, owner, wins = sliding(records)
    ref = np.array([r.label for r in records])
    out: dict = {"folder": "data/cinc2017", "in_training_set": True, "records": {}}
    scores = {k: onnx_scores(p, x) for k, p in artifacts.items()}
    probs = {k: per_record(v, owner, len(records)) for k, v in scores.items()}
    for i, r in enumerate(records):
        out["records"][r.name] = {
            "label": CLASSES[r.label], "windows": int(wins[i].n_windows),
            **{f"{k}_label": CLASSES[int(probs[k][i].argmax())] for k in probs},
            **{f"{k}_prob": [round(float(v), 5) for v in probs[k][i]] for k in probs},
        }  # fmt: skip
    for k in probs:
        out[f"{k}_accuracy"] = round(float(np.mean(probs[k].argmax(1) == ref)), 4)
    for k in list(scores)[1:]:
        agree = np.mean(scores["fp32"].argmax(1) == scores[k].argmax(1))
        out["window_agreement" + ("" if k == "int8" else f"_{k}")] = round(float(agree), 4)
    out["windows"] = int(len(owner))
    return out


def _failure_modes(fp32: dict) -> tuple[str, ...]:
    """Known failure modes, with the cross-validated figures they rest on."""
    c, conf = fp32["classes"], np.array(fp32["confusion"])
    o_as_n = conf[2, 0] / max(1, conf[2].sum())
    return (
        f"Other rhythm is the weakest class (cross-validated Se {c['O']['se']:.2f}, +P {c['O']['ppv']:.2f}; "
        f"{o_as_n:.0%} of Other strips are called Normal): the label is heterogeneous (ectopy, blocks, "
        f"brady/tachycardia) and only {c['O']['n']} examples were available.",
        f"AF: Se {c['A']['se']:.2f}, +P {c['A']['ppv']:.2f} on {c['A']['n']} AF strips; dense ectopy and AF "
        "both look irregular to the RR features, and AF with a regular ventricular response is missed. "
        "Long runs of frequent multiform PVCs (MIT-BIH 215) are called AF in many 10-s windows and can "
        "raise false AF alarms (bench/rhythm_mitdb_af.py --models, bench/alarm_eval.py --networks).",
        f"Noisy strips are rare in training ({c['~']['n']} records; Se {c['~']['se']:.2f}): noise can be "
        "called AF or Other (irregular detected beats) and vice versa.",
        "Trained on one device type (AliveCor hand-held, lead I-like, 300 Hz); other leads or electrode "
        "placements are out of distribution.",
        "Windows with NaN/absurd samples are not classified; a strip with none left is reported as "
        "Noisy ('~') by vigil classify-rhythm.",
        "Strips shorter than one window are zero-padded; very short strips have few beats and weak "
        "RR features.",
        "A live 10-s buffer is filtered and its beats detected from its own start (windows_from_signal); "
        "the first second differs slightly from a window cut from a longer strip (what the model was "
        "trained and scored on).",
    )


def export(opts: TrainOptions) -> ModelCard:
    """From ``<zoo>/ecg-rhythm.pt``: FP32 and INT8 ONNX (calibration method chosen by held-out CV
    macro-F1, calibrated on training windows), measured latency, vendored-record metrics, the card."""
    from vigil.models.training import count_parameters

    zoo = Path(opts.zoo)
    ckpt, cfg, model = _load_checkpoint(zoo)
    records = load_records(Path(opts.data) / DATASET, cfg.strip)
    fp32, int8 = zoo / f"{NAME}.fp32.onnx", zoo / f"{NAME}.int8.onnx"
    method = ckpt["cv"]["calibration"]["chosen"]
    diff, calib, int8s = export_artifacts(model, cfg, records, fp32, method, opts.seed)
    cv = ckpt["cv"]
    metrics = {
        "validation": f"stratified {cv['folds']}-fold cross-validation over the {ckpt['records']} records "
        "(record-disjoint: each record scored by the fold model that never saw it); 95 % CIs by "
        "bootstrap over records (1000 resamples); score = CinC 2017 mean F1 of N, A, O",
        "cv_fp32": cv["fp32"],
        "cv_int8": cv["int8"],
        "int8_floor": cv["int8_floor"],
        "calibration": {**cv["calibration"], "note": "INT8 of each fold model, each method, scored on its "
                        "held-out fold; the best pooled CinC F1 among the methods meeting the INT8 floor"},
        "af_alarm": cv["af_alarm"],
        "onnx_parity_max_abs": float(f"{diff:.3g}"),
        "size": {"parameters": count_parameters(model), "fp32_kb": round(fp32.stat().st_size / 1024, 1),
                 "int8_kb": round(int8.stat().st_size / 1024, 1),
                 "int8_tensorrt_kb": round(int8s["int8-tensorrt"].stat().st_size / 1024, 1)},
        "vendored": vendored_metrics({"fp32": fp32, **int8s}, VENDORED, cfg.strip),
        "model_selection": "the recipe (epochs, class-weight power, network width, window aggregation, "
        "bag size, flip averaging, pretraining, distillation) was chosen among a few alternatives by this "
        "same cross-validation, so these figures are mildly optimistic; the held-back records (IDs "
        "divisible by 3) were never used. They are one training run's: students of seeds +10 and +20 "
        "(same split and teachers) scored 0.811 and 0.809 (INT8 0.805 and 0.812, both within the INT8 "
        "floor), so the three students average 0.813, sd 0.005, where single undistilled networks of "
        "seeds +0/+10/+20 scored 0.812/0.798/0.783 (bench/rhythm_distill.py --student-seeds 0 10 20); "
        "the spread of the teachers' own draw is not measured",
        "live_windows": "a monitor classifies the last 10 s of each device's buffer with "
        "vigil.kernels.rhythm_strip.windows_from_signal (each buffer prepared on its own); these metrics "
        "are of whole strips (cut_windows of prepare_strip, record_probabilities)",
    }  # fmt: skip
    card = ModelCard(
        name=NAME,
        task="ecg-rhythm",
        version=VERSION + ("-quick" if ckpt.get("quick") else ""),
        classes=CLASSES,
        inputs={"ecg": (-1, 1, cfg.strip.window), "rr": (-1, len(RR_FEATURES))},
        preprocessing={
            **cfg.strip.to_card(),
            "kernels": "vigil.kernels.rhythm_strip (resample_poly, "
            "band_pass, prepare_strip, cut_windows, rr_features), vigil.kernels.qrs.detect, "
            "vigil.kernels.rhythm.hrv",
            "aggregation": "record class = arg-max of the softmax "
            "of the mean logits over the strip's classified windows (record_probabilities)",
        },
        artifacts=artifacts_of({"fp32": fp32, **int8s}),
        data={
            "dataset": "PhysioNet/CinC Challenge 2017 training set, the shared subset (A00001-A01500 without "
            "IDs divisible by 3, which are held back): ../shared/data/cinc2017_af, labels REFERENCE-v3.csv",
            "records": ckpt["records"],
            "class_counts": {c: int(sum(r.label == i for r in records)) for i, c in enumerate(CLASSES)},
            "split": f"{cv['folds']}-fold stratified by class over records for the metrics; the shipped "
            "model is then trained on all of them",
            "training": {
                "seed": ckpt["seed"],
                "epochs": cfg.epochs,
                "crops_per_10s": cfg.crops_per_10s,
                "augmentation": "amplitude, baseline wander, noise, time warp (models.training."
                "augment), polarity flip, every step",
                "bags": f"{cfg.bag} crops of one record per bag; loss on the bag's mean logits + "
                f"{cfg.instance_weight} x the per-crop loss",
                "test_time": "logits of the window and its negative averaged in the graph"
                if cfg.flip_average
                else "none",
                "class_weights": f"(N / (k n_c)) ** {cfg.class_power}",
                "pretraining": (
                    f"{cfg.pretrain_epochs} epochs on MIT-BIH beat classes (models.rhythm_pretext): 10-s "
                    f"windows every 5 s of DS1 records {', '.join(ckpt.get('pretext_records', []))} (leads "
                    f"{', '.join(map(str, cfg.pretext_leads))} of each record, 0 being MLII; the same "
                    "preprocessing), the AAMI class of the beat in each 0.32-s GRU step; "
                    "then every weight trains on CinC"
                )
                if cfg.pretrain_epochs
                else "none",
                "distillation": (
                    f"{len(cfg.teachers)} teachers (this recipe without distillation, seeds "
                    f"{', '.join(str(ckpt['seed'] + t) for t in cfg.teachers)}) trained on the same "
                    "records; their mean log-probabilities of each training crop are soft targets beside "
                    f"the labels: {cfg.distill_weight:g} x T^2 KL(teachers || network) at "
                    f"T = {cfg.distill_temperature:g}; the teachers are not shipped"
                )
                if cfg.teachers
                else "none",
                "seconds": ckpt["seconds"],
                "machine": f"2 shared CPU cores, torch 1 thread per network, {ckpt.get('workers', 1)} "
                "network(s) at a time (with more than one, the final network trains among the fold networks)",
            },
            "int8": f"static QDQ, {method} calibration on {len(calib['ecg'])} random training windows; "
            f"convolutions and dense layers INT8 ({INT8_NOTE}), the GRU computed in FP32 (ONNX Runtime has "
            "no static INT8 GRU) from weights stored as FP16 (vigil.export.compact)",
        },  # fmt: skip
        metrics=metrics,
        latency={},
        intended_use=(
            "Screening label for a single-lead ECG strip of 9-60 s (hand-held or wearable lead I-like ECG, "
            "any sampling rate): Normal sinus rhythm, AF, Other rhythm or Noisy; drives the monitor's AF "
            "alarm as a second opinion beside RR-based AF detection. Not a diagnosis; AF calls need "
            "clinician review."
        ),
        failure_modes=_failure_modes(cv["fp32"]),
    )
    card.save(card_path(zoo / NAME))  # the runtime needs a card to load the artifacts
    one = {k: v[:1] for k, v in sliding(records[:1])[0].items()}
    calls = 20 if opts.quick else 2000
    card = ModelCard(**{**card.__dict__, "latency": measure_latency(zoo / NAME, one, calls=calls)})
    card.save(card_path(zoo / NAME))
    return card
