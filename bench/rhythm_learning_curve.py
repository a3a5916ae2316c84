#!/usr/bin/env python
"""How ``ecg-rhythm``'s validation score grows with the number of training records: the card's 5-fold
cross-validation (same split, recipe and seeds as ``vigil train ecg-rhythm``) repeated with each fold
network trained on a stratified fraction of its 800 training records (nested subsets: the quarter lies
inside the half), always scored on the same held-out fold. Smaller sets get proportionally more epochs,
so every network takes the same number of optimizer steps. The MIT-BIH pretraining
(:mod:`vigil.models.rhythm_pretext`) and the distillation of three teachers (``Config.teachers``, four
networks per fold) are the recipe's at every size; ``--pretrain-epochs 0`` leaves the pretraining out.

It prints the pooled out-of-fold CinC F1 per training-set size and the log-linear trend
``F1 = a + b log2(records)`` through them, with the number of records at which the trend reaches the
floor (0.80). A trend read off three points is an extrapolation, not a promise; it says whether the
shortfall is a matter of data.

    .venv/bin/python bench/rhythm_learning_curve.py --fractions 0.25 0.5 1 --workers 2 [--pretrain-epochs 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from bench_data import data_root

from vigil.models import rhythm
from vigil.models.metrics import macro_f1

FLOOR = 0.80


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``ceil(fraction * n_c)`` records of each class c, from one fixed shuffle per class,
    so that a smaller fraction's subset lies inside a larger one's."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        keep.append(idx[: math.ceil(fraction * len(idx))])
    return np.sort(np.concatenate(keep))


def fold_logits(
    data: Path,
    fold_index: int,
    fraction: float,
    epochs: int | None = None,
    pretrain_epochs: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Window logits of each held-out record from a network trained on ``fraction`` of the other folds;
    the held-out indices and the number of training records."""
    base = rhythm.Config() if epochs is None else dataclasses.replace(rhythm.Config(), epochs=epochs)
    cfg = dataclasses.replace(
        base,
        epochs=round(base.epochs / fraction),
        qat_epochs=round(base.qat_epochs / fraction),
        pretrain_epochs=base.pretrain_epochs if pretrain_epochs is None else pretrain_epochs,
    )
    records = rhythm.load_records(data / rhythm.DATASET, cfg.strip)
    labels = np.array([r.label for r in records])
    fold = rhythm.stratified_folds(labels, cfg.folds, 0)
    train_idx = np.flatnonzero(fold != fold_index)
    train_idx = train_idx[stratified_subset(labels[train_idx], fraction, 100 + fold_index)]
    test = np.flatnonzero(fold == fold_index)
    pretext = rhythm.load_pretext(data, cfg) if cfg.pretrain_epochs else None
    model = rhythm.fit_model(cfg, [records[i] for i in train_idx], 1 + fold_index, False, "", pretext)
    x, owner, _ = rhythm.sliding([records[i] for i in test])
    scores = rhythm.torch_scores(model, x)
    return [scores[owner == i] for i in range(len(test))], test, len(train_idx)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--workers", type=int, default=1, help="networks trained side by side, one core each")
    p.add_argument("--epochs", type=int, help="float epochs at fraction 1 (default: the recipe's)")
    p.add_argument("--pretrain-epochs", type=int, help="MIT-BIH pretraining epochs (default: the recipe's)")
    p.add_argument("--save", help="write every record's out-of-fold window logits to this .npz")
    p.add_argument("--data", help="root holding cinc2017_af/ (default $VIGIL_DATA or ../shared/data)")
    a = p.parse_args(argv)
    data = data_root(a.data)
    folds = rhythm.Config().folds
    jobs = [(f, fr) for fr in a.fractions for f in range(folds)]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        folds_, fractions = zip(*jobs, strict=True)
        extra = [a.epochs] * len(jobs), [a.pretrain_epochs] * len(jobs)
        runs = list(pool.map(fold_logits, [data] * len(jobs), folds_, fractions, *extra))
    labels = np.array([r.label for r in rhythm.load_records(data / rhythm.DATASET, rhythm.Config().strip)])
    print(f"ecg-rhythm learning curve, {len(labels)} records, 5-fold record-disjoint, torch FP32 "
          f"({time.time() - t0:.0f} s)")  # fmt: skip
    sizes, scores, saved = [], [], {"labels": labels}
    for fr in a.fractions:
        windows: list[np.ndarray] = [np.empty(0)] * len(labels)
        n_train = []
        for (_, jf), (lg, test, n) in zip(jobs, runs, strict=True):
            if jf == fr:
                for i, w in zip(test, lg, strict=True):
                    windows[i] = w
                n_train.append(n)
        logits = np.stack([w.mean(0) for w in windows])
        saved[f"windows_{fr:g}"] = np.concatenate(windows)
        saved[f"owner_{fr:g}"] = np.concatenate([np.full(len(w), i) for i, w in enumerate(windows)])
        f1 = macro_f1(labels, logits.argmax(1), len(rhythm.CLASSES), rhythm.SCORED)
        sizes.append(float(np.mean(n_train)))
        scores.append(f1)
        print(f"training records per fold {sizes[-1]:6.0f} (fraction {fr:.3g}): CinC F1 {f1:.4f}")
    if a.save:
        np.savez_compressed(a.save, **saved)
    if len(sizes) > 1:
        b, c = np.polyfit(np.log2(sizes), scores, 1)
        need = 2 ** ((FLOOR - c) / b) if b > 0 else math.inf
        print(f"trend: F1 = {c:.3f} + {b:.4f} log2(records): +{b:.3f} per doubling; "
              f"reaches {FLOOR} at about {need:.0f} training records")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
