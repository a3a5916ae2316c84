#!/usr/bin/env python
"""How closely ``ecg-rhythm``'s INT8 models follow FP32, by quantization-aware epochs and calibration
windows: the card's 5-fold cross-validation (same split, fold seeds ``seed + 1 + fold``), every fold
network trained once in float (:func:`vigil.models.rhythm.fit_float`, cached under ``--cache``), then
each ``--variants`` entry ``QAT_EPOCHS:CALIBRATION_WINDOWS`` fine-tuned from that same float network
(:func:`~vigil.models.rhythm.fit_int8_aware`), exported and quantized with every calibration method
(CPU artifact, calibrated on its own training windows), and scored on the held-out fold.

Per variant and method it prints the pooled CinC F1 of FP32 (torch) and INT8, the issue's INT8 floor
(:func:`~vigil.models.rhythm.int8_floor`: F1 within 1 point, no class losing more than 2 points of
sensitivity), the strips whose INT8 label differs from FP32, and the mean absolute difference of the
record probabilities (a smoother measure of INT8 fidelity than labels, which flip one strip at a time).
The ``2:512`` variant is what ``vigil train ecg-rhythm`` does.

    .venv/bin/python bench/rhythm_int8.py --pretrain-epochs 10 --variants 2:512 2:2048 6:512 --workers 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from bench_data import data_root

from vigil.export.quantize import METHODS, quantize_int8
from vigil.models import rhythm
from vigil.models.metrics import macro_f1


def float_fit(cfg: rhythm.Config, train: list, seed: int, pretext, cache: Path) -> rhythm.Fitting:
    """The fold's float network, from ``cache`` when a run with the same recipe left it there."""
    import torch

    from vigil.models.training import seed_everything

    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=False)
        rng = seed_everything(seed)
        inputs, y = rhythm.bag_crops(train, cfg.crops_per_10s, cfg.bag, rng)
        model = rhythm.build(cfg)
        model.load_state_dict(saved["state_dict"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        return rhythm.Fitting(model, inputs, y, rng)
    fit = rhythm.fit_float(cfg, train, seed, False, "", pretext)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": fit.model.state_dict(), "numpy_rng": fit.rng.bit_generator.state,
                "torch_rng": torch.get_rng_state()}, cache)  # fmt: skip
    return fit


def fold_run(
    data: Path, fold_index: int, seed: int, pretrain_epochs: int, variants: list[tuple[int, int]], cache: Path
) -> tuple[np.ndarray, dict]:
    """Held-out record indices and ``{variant: {"torch" | method: record probabilities}}``."""
    import torch

    cfg = dataclasses.replace(rhythm.Config(), pretrain_epochs=pretrain_epochs, teachers=())
    records = rhythm.load_records(data / rhythm.DATASET, cfg.strip)
    fold = rhythm.stratified_folds(np.array([r.label for r in records]), cfg.folds, seed)
    train = [r for r, g in zip(records, fold, strict=True) if g != fold_index]
    test = np.flatnonzero(fold == fold_index)
    pretext = rhythm.load_pretext(data, cfg) if pretrain_epochs else None
    leads = "".join(map(str, cfg.pretext_leads))
    path = cache / f"seed{seed}-pretrain{pretrain_epochs}-leads{leads}-fold{fold_index}.pt"
    base = float_fit(cfg, train, seed + 1 + fold_index, pretext, path)
    x, owner, _ = rhythm.sliding([records[i] for i in test])
    out = {}
    for qat, n_calib in variants:
        vcfg = dataclasses.replace(cfg, qat_epochs=qat, calibration_windows=n_calib)
        rng = np.random.default_rng()
        rng.bit_generator.state = copy.deepcopy(base.rng.bit_generator.state)
        torch_state = torch.get_rng_state()
        fit = rhythm.Fitting(copy.deepcopy(base.model), base.inputs, base.labels, rng)
        model = rhythm.fit_int8_aware(fit, vcfg, False, "")
        torch.set_rng_state(torch_state)  # every variant starts from the same torch stream
        probs = {"torch": rhythm.per_record(rhythm.torch_scores(model, x), owner, len(test))}
        calib = rhythm.fold_calibration(train, n_calib, seed, fold_index)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fold.fp32.onnx"
            rhythm.export_fp32(model, fp32, x)
            for m in METHODS:
                q = quantize_int8(fp32, Path(tmp) / f"{m}.onnx", calib, m)
                probs[m] = rhythm.per_record(rhythm.onnx_scores(q, x), owner, len(test))
        out[qat, n_calib] = probs
    return test, out


def report(labels: np.ndarray, probs: dict, variant: tuple[int, int]) -> None:
    k = len(rhythm.CLASSES)
    fp = probs["torch"]
    fp_sum = rhythm.summary(labels, fp.argmax(1), n_boot=0)
    print(f"QAT {variant[0]} epochs, {variant[1]} calibration windows: FP32 CinC F1 {fp_sum['cinc_f1']:.4f}")
    for m in METHODS:
        q = probs[m]
        floor = rhythm.int8_floor(fp_sum, rhythm.summary(labels, q.argmax(1), n_boot=0))
        f1 = macro_f1(labels, q.argmax(1), k, rhythm.SCORED)
        drops = " ".join(f"{c} {v * 100:+.1f}" for c, v in floor["se_drop"].items())
        flips = int(np.sum(q.argmax(1) != fp.argmax(1)))
        print(f"  {m:>10}: INT8 {f1:.4f}  floor {'passes' if floor['passes'] else 'FAILS '}  "
              f"Se drop (pt) {drops}  strips relabelled {flips:>2}  "
              f"mean |dp| {np.abs(q - fp).mean():.4f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=["2:512"], help="QAT_EPOCHS:CALIBRATION_WINDOWS")
    p.add_argument("--pretrain-epochs", type=int, default=0, help="MIT-BIH pretraining epochs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="training seed (and the fold split's, as the card)")
    p.add_argument("--workers", type=int, default=1, help="folds trained side by side, one core each")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vigil" / "rhythm_float")
    p.add_argument("--data", help="root holding cinc2017_af/ and mitdb/ ($VIGIL_DATA or ../shared/data)")
    a = p.parse_args(argv)
    variants = [tuple(int(v) for v in s.split(":")) for s in a.variants]
    data = data_root(a.data)
    folds = rhythm.Config().folds
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        runs = list(pool.map(fold_run, [data] * folds, range(folds), [a.seed] * folds,
                             [a.pretrain_epochs] * folds, [variants] * folds, [a.cache] * folds))  # fmt: skip
    labels = np.array([r.label for r in rhythm.load_records(data / rhythm.DATASET, rhythm.Config().strip)])
    print(f"ecg-rhythm, {len(labels)} records, {folds}-fold record-disjoint, seed {a.seed}, "
          f"pretraining {a.pretrain_epochs} epochs ({time.time() - t0:.0f} s)")  # fmt: skip
    for v in variants:
        pooled = {key: np.zeros((len(labels), len(rhythm.CLASSES))) for key in ("torch", *METHODS)}
        for test, out in runs:
            for key in pooled:
                pooled[key][test] = out[v][key]
        report(labels, pooled, v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
