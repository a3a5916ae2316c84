#!/usr/bin/env python
"""What ``ecg-rhythm`` gains from its MIT-BIH beat pretraining (:mod:`vigil.models.rhythm_pretext`),
and how much of its score is the training seed: the card's 5-fold cross-validation (same split; fold
seeds ``seed + 1 + fold`` as ``vigil train ecg-rhythm --seed S``) with the network pretrained for each
of ``--pretrain-epochs`` epochs (0: none, the CinC strips alone), side by side, torch FP32 out of fold;
with several seeds, also the score of their ensemble (the mean of the seeds' log-probabilities).
``--leads`` chooses the MIT-BIH leads the pretraining reads (0: MLII, the recipe's; 0 1: both).

Each arm and seed trains 5 fold networks (about 4-5 min each on one core); ``--workers`` trains them
side by side, one core each.

    .venv/bin/python bench/rhythm_pretrain.py --pretrain-epochs 0 10 --seeds 0 10 20 --workers 2
    .venv/bin/python bench/rhythm_pretrain.py --pretrain-epochs 10 --seeds 0 10 20 --leads 0 1 --workers 2
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


def fold_logits(
    data: Path, fold_index: int, pretrain_epochs: int, seed: int, leads: tuple[int, ...] = (0,)
) -> tuple[np.ndarray, np.ndarray]:
    """Mean window logits of the held-out fold's records and their indices."""
    cfg = rhythm.Config(pretrain_epochs=pretrain_epochs, pretext_leads=leads, teachers=())
    records = rhythm.load_records(data / rhythm.DATASET, cfg.strip)
    fold = rhythm.stratified_folds(np.array([r.label for r in records]), cfg.folds, 0)
    train = [r for r, g in zip(records, fold, strict=True) if g != fold_index]
    pretext = rhythm.load_pretext(data, cfg) if pretrain_epochs else None
    model = rhythm.fit_model(cfg, train, seed + 1 + fold_index, False, "", pretext)
    test = np.flatnonzero(fold == fold_index)
    x, owner, _ = rhythm.sliding([records[i] for i in test])
    scores = rhythm.torch_scores(model, x)
    return np.stack([scores[owner == i].mean(0) for i in range(len(test))]), test


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-epochs", type=int, nargs="+", default=[0, 10], help="one arm per value")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (the split stays)")
    leads = list(rhythm.Config().pretext_leads)
    p.add_argument(
        "--leads", type=int, nargs="+", default=leads, help=f"MIT-BIH leads pretraining reads ({leads})"
    )
    p.add_argument("--workers", type=int, default=1, help="networks trained side by side, one core each")
    p.add_argument("--data", help="root holding cinc2017_af/ and mitdb/ ($VIGIL_DATA or ../shared/data)")
    a = p.parse_args(argv)
    data = data_root(a.data)
    folds = rhythm.Config().folds
    jobs = [(f, e, s) for s in a.seeds for e in a.pretrain_epochs for f in range(folds)]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        leads = [tuple(a.leads)] * len(jobs)
        runs = list(pool.map(fold_logits, [data] * len(jobs), *zip(*jobs, strict=True), leads))
    labels = np.array([r.label for r in rhythm.load_records(data / rhythm.DATASET, rhythm.Config().strip)])
    print(f"ecg-rhythm, {len(labels)} records, 5-fold record-disjoint, torch FP32 ({time.time() - t0:.0f} s)")
    table, logits = {}, {}
    for s in a.seeds:
        for e in a.pretrain_epochs:
            logits[s, e] = np.zeros((len(labels), len(rhythm.CLASSES)))
            for (_, je, js), (lg, test) in zip(jobs, runs, strict=True):
                if (je, js) == (e, s):
                    logits[s, e][test] = lg
            table[s, e] = macro_f1(labels, logits[s, e].argmax(1), len(rhythm.CLASSES), rhythm.SCORED)
            print(f"seed {s}, pretraining {e:>2} epochs: CinC F1 {table[s, e]:.4f}")
    for e in a.pretrain_epochs:
        v = [table[s, e] for s in a.seeds]
        if len(v) == 1:
            continue
        ensemble = np.mean([log_softmax(logits[s, e], axis=1) for s in a.seeds], axis=0)
        f1 = macro_f1(labels, ensemble.argmax(1), len(rhythm.CLASSES), rhythm.SCORED)
        print(f"pretraining {e:>2} epochs: mean over seeds {np.mean(v):.4f}, sd {np.std(v, ddof=1):.4f}; "
              f"the seeds' mean log-probabilities (an ensemble) {f1:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
