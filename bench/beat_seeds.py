#!/usr/bin/env python
"""How much of the ``ecg-beats`` validation figures is the seed: the card's leave-records-out
validation (same folds, epochs, sampling and ensemble as ``vigil train ecg-beats``) repeated with
other seeds, in FP32, with the issue's floors and what the F class does to them.

Each seed trains 11 fold ensembles (about 9 min on one core). Printed per seed, and for the
mean of the seeds' logits: V and S sensitivity and positive predictivity (EC57 gross statistics; V
+P strict and by EC57's VEB rule), F's own figures, and the same with F never reported (the arg-max
over N, S, V, Q), since nearly all of DS1's fusion beats are in one record (208) and a network that
has not seen 208 has almost no F beat to learn from.

    .venv/bin/python bench/beat_seeds.py --seeds 0 1
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from bench_data import data_root

from vigil.kernels.beat_features import CLASSES, BeatWindowParams
from vigil.models import beats
from vigil.models.training import predict

F = CLASSES.index("F")


def fold_logits(records: dict[str, beats.RecordBeats], seed: int) -> dict[str, np.ndarray]:
    """Logits [detections, classes] of every DS1 record from the network of its fold (NaN where the
    window is not classifiable)."""
    pool = list(records)
    out = {}
    for k, test in enumerate(beats.FOLDS):
        train = [records[n] for n in pool if n not in test]
        seed_k = seed + 1000 * (k + 1)
        model = beats.train_network(train, beats.EPOCHS, seed_k, beats.N_CAP, members=beats.MEMBERS)
        for n in test:
            rb = records[n]
            lg = np.full((len(rb.sample), len(CLASSES)), np.nan, np.float32)
            if rb.valid.any():
                lg[rb.valid] = predict(model, rb.inputs(rb.valid))
            out[n] = lg
    return out


def floors(records: dict[str, beats.RecordBeats], logits: dict[str, np.ndarray], report_f: bool) -> str:
    preds = {}
    for n, lg in logits.items():
        s = np.nan_to_num(lg, nan=0.0)
        if not report_f:
            s[:, F] = -np.inf
        preds[n] = np.where(np.isnan(lg[:, 0]), -1, s.argmax(1))
    t = beats.score(records, preds, n_boot=0)
    c, veb = t["classes"], t["ec57"]["VEB"]
    f = f"F Se {c['F']['se']:.3f} +P {c['F']['ppv'] or 0:.3f}" if report_f else "F not reported"
    return (f"V Se {c['V']['se']:.3f} +P {c['V']['ppv']:.3f} (EC57 {veb['ppv']:.3f})  "
            f"S Se {c['S']['se']:.3f} +P {c['S']['ppv']:.3f}  {f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--data", help="root holding mitdb/ (default $VIGIL_DATA or ../shared/data)")
    a = p.parse_args(argv)
    root = data_root(a.data) / "mitdb"
    pool = beats._present(root, beats.DS1)
    if len(pool) < len(beats.DS1):
        raise SystemExit(f"{root}: {len(beats.DS1) - len(pool)} DS1 records missing")
    records = beats._load(root, pool, BeatWindowParams())
    runs = []
    for seed in a.seeds:
        t0 = time.time()
        runs.append(fold_logits(records, seed))
        print(f"seed {seed} ({time.time() - t0:.0f} s)", flush=True)
        for report_f in (True, False):
            print("  " + floors(records, runs[-1], report_f), flush=True)
    if len(runs) > 1:
        mean = {n: np.mean([r[n] for r in runs], axis=0) for n in runs[0]}
        print(f"mean of the {len(runs)} seeds' logits ({len(runs) * beats.MEMBERS} networks per record)")
        for report_f in (True, False):
            print("  " + floors(records, mean, report_f))
    print("floors: V Se and +P >= 0.90, S Se >= 0.70 with +P >= 0.50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
