#!/usr/bin/env python
"""How much of the ``ecg-rhythm`` validation figure is the seed: the card's 5-fold cross-validation
(same record split, recipe and fold seeds as ``vigil train ecg-rhythm --seed S``) repeated with other
training seeds, torch FP32 out-of-fold, and the score of the mean of the seeds' logits (an ensemble).

Seed 0 is the shipped model's own validation; other seeds change only the networks' initialisation,
crops and augmentation, never the split. Each seed trains 5 fold networks (about 12 min on one core);
``--workers`` runs seeds side by side, one core each.

    .venv/bin/python bench/rhythm_seeds.py --seeds 0 10 20 --workers 2
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from bench_data import data_root
from scipy.special import log_softmax

from vigil.models import rhythm
from vigil.models.metrics import macro_f1


def out_of_fold_logits(data: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean window logits [records, classes] of every record from the fold network that never saw it,
    the labels, and the fold of each record (the split of ``--seed 0``)."""
    cfg = rhythm.Config()
    records = rhythm.load_records(data / rhythm.DATASET, cfg.strip)
    labels = np.array([r.label for r in records])
    fold = rhythm.stratified_folds(labels, cfg.folds, 0)
    pretext = rhythm.load_pretext(data, cfg) if cfg.pretrain_epochs else None
    logits = np.zeros((len(records), len(rhythm.CLASSES)))
    for f in range(cfg.folds):
        train = [r for r, g in zip(records, fold, strict=True) if g != f]
        test = np.flatnonzero(fold == f)
        model = rhythm.fit_model(cfg, train, seed + 1 + f, False, f"fold {f + 1}", pretext)
        x, owner, _ = rhythm.sliding([records[i] for i in test])
        scores = rhythm.torch_scores(model, x)
        logits[test] = np.stack([scores[owner == i].mean(0) for i in range(len(test))])
    return logits, labels, fold


def _score(labels: np.ndarray, logits: np.ndarray) -> float:
    return macro_f1(labels, logits.argmax(1), len(rhythm.CLASSES), rhythm.SCORED)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 10, 20])
    p.add_argument("--workers", type=int, default=1, help="seeds trained side by side (one core each)")
    p.add_argument("--data", help="root holding cinc2017_af/ (default $VIGIL_DATA or ../shared/data)")
    a = p.parse_args(argv)
    data = data_root(a.data)
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        runs = list(pool.map(out_of_fold_logits, [data] * len(a.seeds), a.seeds))
    labels, fold = runs[0][1], runs[0][2]
    print(f"ecg-rhythm, {len(labels)} records, 5-fold record-disjoint, torch FP32 ({time.time() - t0:.0f} s)")
    scores = []
    for seed, (logits, _, _) in zip(a.seeds, runs, strict=True):
        scores.append(_score(labels, logits))
        per_fold = " ".join(
            f"{_score(labels[fold == f], logits[fold == f]):.3f}" for f in range(fold.max() + 1)
        )
        print(f"seed {seed}: CinC F1 {scores[-1]:.4f}  (folds {per_fold})")
    if len(runs) > 1:
        print(f"mean over seeds {np.mean(scores):.4f}, sd {np.std(scores, ddof=1):.4f}")
        ensemble = np.mean([log_softmax(lg, axis=1) for lg, _, _ in runs], axis=0)
        print(f"mean of the {len(runs)} seeds' log-probabilities (ensemble): {_score(labels, ensemble):.4f}")
    print("floor: CinC F1 >= 0.80")
    return 0


if __name__ == "__main__":
    sys.exit(main())
