#!/usr/bin/env python
"""ecg-beats fold networks: for every DS1 record, the network of its leave-records-out fold, exported
with a model card so the monitor can load it (``bench/alarm_eval.py --fold-models DIR``).

The shipped ``ecg-beats`` network was trained on all of MIT-BIH DS1, so replaying a DS1 record through
the monitor with it measures alarms on beats it has learned. This script repeats the card's
validation (:func:`vigil.models.beats.cross_validate`: the same folds, epochs, sampling, ensemble and
seed rule as ``vigil train ecg-beats``) and keeps each fold's FP32 network and its INT8 model with
the card's calibration method, under ``DIR/<record>/ecg-beats.*`` for each held-out record of the
fold, with a copy of the shipped card whose artifacts are replaced (the card's metrics stay those of
the shipped network; the name says which fold it is).

Needs the train extra (torch, onnx) and the MIT-BIH records (``--data``, ``$VIGIL_DATA`` or
``../shared/data``). About 10 min on one core.

    .venv/bin/python bench/beat_folds.py --out ~/.cache/vigil/folds
    .venv/bin/python bench/alarm_eval.py --compare --fold-models ~/.cache/vigil/folds
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench_data import data_root

from vigil.export.card import ModelCard, artifact, card_path, load_card
from vigil.export.compact import compact_names
from vigil.kernels.beat_features import BeatWindowParams
from vigil.models import beats
from vigil.models.registry import ZOO, TrainOptions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("~/.cache/vigil/folds").expanduser())
    p.add_argument("--data", help="root holding mitdb/ (default $VIGIL_DATA or ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    shipped = load_card(ZOO / beats.NAME)
    method = shipped.metrics["validation"]["calibration"]["method"]
    opts = TrainOptions(data=data_root(a.data), zoo=ZOO, seed=a.seed)
    epochs, n_cap, members = beats._settings(opts)
    root = Path(opts.data) / "mitdb"
    pool = beats._present(root, beats.DS1)
    params = BeatWindowParams.from_card(shipped.preprocessing)
    records = beats._load(root, pool, params)
    folds = [f for f in (tuple(n for n in fold if n in pool) for fold in beats.FOLDS) if f]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        beats.cross_validate(records, folds, epochs, a.seed, work, n_cap, None, False, pool, members)
        for k, test in enumerate(folds):
            for name in test:
                d = a.out / name
                d.mkdir(parents=True, exist_ok=True)
                fp32, int8 = d / f"{beats.NAME}.fp32.onnx", d / f"{beats.NAME}.int8.onnx"
                shutil.copyfile(work / f"fold{k}.fp32.onnx", fp32)
                shutil.copyfile(work / f"fold{k}.{method}.onnx", int8)
                compact_names(int8)
                card = ModelCard(**{
                    **shipped.__dict__,
                    "version": f"{shipped.version}-fold{k + 1}-without-{'-'.join(test)}",
                    "artifacts": {"fp32": artifact(fp32), "int8": artifact(int8)},
                })  # fmt: skip
                card.save(card_path(d / beats.NAME))
    print(f"fold networks for {len(pool)} records in {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
