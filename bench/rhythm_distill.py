#!/usr/bin/env python
"""Distilling a seed ensemble of ``ecg-rhythm`` networks into one network of the same size
(``Config.teachers``): the card's 5-fold cross-validation (same split, fold seeds ``1 + fold``).

For each fold, the teachers are the recipe's networks trained on the fold's training records with
fold seed + each of ``--teachers`` (the networks ``bench/rhythm_pretrain.py --seeds`` trains); their
out-of-fold scores and their ensemble's (mean log-probabilities) are printed first. Each
``--students`` entry ``WEIGHT:TEMPERATURE`` then trains one student per fold and ``--student-seeds``
entry on the same training records, with the teachers' mean log-probabilities of its training crops as
soft targets (in-sample for the teachers, which saw those records; the held-out fold reaches neither
teacher nor student). Students are scored out of fold in torch FP32 and as INT8 with every calibration
method, against the issue's INT8 floor.

Teachers are cached under ``--cache`` (one file per fold and seed); a student trains in about the
time of a teacher. ``--workers`` trains networks side by side, one core each.

    .venv/bin/python bench/rhythm_distill.py --pretrain-epochs 10 --leads 0 1 --students 1:2 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from bench_data import data_root
from scipy.special import log_softmax

from vigil.export.quantize import METHODS
from vigil.models import rhythm
from vigil.models.metrics import macro_f1


@dataclasses.dataclass(frozen=True)
class Setup:
    data: Path
    pretrain_epochs: int
    leads: tuple[int, ...]
    teachers: tuple[int, ...]
    cache: Path

    def config(self) -> rhythm.Config:
        """The teachers' recipe: the shipped one without distillation."""
        return rhythm.Config(pretrain_epochs=self.pretrain_epochs, pretext_leads=self.leads, teachers=())

    def fold(self, index: int) -> tuple[list, list, np.ndarray]:
        """The fold's training records, held-out records and held-out indices."""
        cfg = self.config()
        records = rhythm.load_records(self.data / rhythm.DATASET, cfg.strip)
        fold = rhythm.stratified_folds(np.array([r.label for r in records]), cfg.folds, 0)
        test = np.flatnonzero(fold == index)
        return [r for r, g in zip(records, fold, strict=True) if g != index], [records[i] for i in test], test

    def teacher_path(self, index: int, t: int) -> Path:
        leads = "".join(map(str, self.leads))
        return self.cache / f"pretrain{self.pretrain_epochs}-leads{leads}-fold{index}-seed{1 + index + t}.pt"


def teacher(setup: Setup, index: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Train (or load) one teacher; its held-out indices and record log-probabilities."""
    import torch

    path = setup.teacher_path(index, t)
    if not path.is_file():
        cfg = setup.config()
        train, test, idx = setup.fold(index)
        pretext = rhythm.load_pretext(setup.data, cfg) if cfg.pretrain_epochs else None
        model = rhythm.fit_model(cfg, train, 1 + index + t, False, "", pretext)
        x, owner, _ = rhythm.sliding(test)
        logp = np.log(rhythm.per_record(rhythm.torch_scores(model, x), owner, len(test)))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": model.state_dict(), "test": idx, "logp": logp}, path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return saved["test"], saved["logp"]


def load_teachers(setup: Setup, index: int) -> list:
    import torch

    def state(t: int) -> dict:
        return torch.load(setup.teacher_path(index, t), map_location="cpu", weights_only=False)["state_dict"]

    return [rhythm.inference_network(setup.config(), state(t)) for t in setup.teachers]


def student(
    setup: Setup, index: int, seed: int, weight: float, temperature: float
) -> tuple[np.ndarray, dict]:
    """Train one student on the fold; its held-out indices and ``{"torch" | method: probabilities}``."""
    cfg = dataclasses.replace(
        setup.config(), teachers=setup.teachers, distill_weight=weight, distill_temperature=temperature
    )
    train, test, idx = setup.fold(index)
    pretext = rhythm.load_pretext(setup.data, cfg) if cfg.pretrain_epochs else None
    model = rhythm.fit_model(cfg, train, 1 + index + seed, False, "", pretext, load_teachers(setup, index))
    return idx, rhythm.held_out_probabilities(model, train, test, cfg.calibration_windows, 0, index)


def f1(labels: np.ndarray, p: np.ndarray) -> float:
    return macro_f1(labels, p.argmax(1), len(rhythm.CLASSES), rhythm.SCORED)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-epochs", type=int, default=10, help="MIT-BIH pretraining of every network")
    leads = list(rhythm.Config().pretext_leads)
    p.add_argument(
        "--leads", type=int, nargs="+", default=leads, help=f"MIT-BIH leads pretraining reads ({leads})"
    )
    p.add_argument("--teachers", type=int, nargs="+", default=[0, 10, 20], help="teacher seed offsets")
    p.add_argument("--students", nargs="*", default=["1:2"], help="WEIGHT:TEMPERATURE per student recipe")
    p.add_argument("--student-seeds", type=int, nargs="+", default=[0], help="student seed offsets")
    p.add_argument("--workers", type=int, default=1, help="networks trained side by side, one core each")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vigil" / "rhythm_teachers")
    p.add_argument("--data", help="root holding cinc2017_af/ and mitdb/ ($VIGIL_DATA or ../shared/data)")
    a = p.parse_args(argv)
    setup = Setup(data_root(a.data), a.pretrain_epochs, tuple(a.leads), tuple(a.teachers), a.cache)
    folds = rhythm.Config().folds
    records = rhythm.load_records(setup.data / rhythm.DATASET, rhythm.Config().strip)
    labels = np.array([r.label for r in records])
    n = len(labels)
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        jobs = [(f, t) for t in setup.teachers for f in range(folds)]
        runs = list(pool.map(teacher, [setup] * len(jobs), *zip(*jobs, strict=True)))
        logp = {t: np.zeros((n, len(rhythm.CLASSES))) for t in setup.teachers}
        for (_, t), (idx, lp) in zip(jobs, runs, strict=True):
            logp[t][idx] = lp
        print(f"ecg-rhythm, {n} records, 5-fold record-disjoint, pretraining {a.pretrain_epochs} epochs, "
              f"leads {a.leads} ({time.time() - t0:.0f} s)")  # fmt: skip
        for t in setup.teachers:
            print(f"teacher seed +{t}: CinC F1 {f1(labels, logp[t]):.4f} (torch FP32)")
        ensemble = np.mean([log_softmax(v, axis=1) for v in logp.values()], axis=0)
        print(f"teachers' ensemble: CinC F1 {f1(labels, ensemble):.4f}")
        variants = [tuple(float(v) for v in s.split(":")) for s in a.students]
        jobs = [(f, s, w, tt) for w, tt in variants for s in a.student_seeds for f in range(folds)]
        runs = list(pool.map(student, [setup] * len(jobs), *zip(*jobs, strict=True)))
    for w, tt in variants:
        scores = []
        for s in a.student_seeds:
            prob = {k: np.zeros((n, len(rhythm.CLASSES))) for k in ("torch", *METHODS)}
            for (_, js, jw, jt), (idx, out) in zip(jobs, runs, strict=True):
                if (js, jw, jt) == (s, w, tt):
                    for k, v in out.items():
                        prob[k][idx] = v
            fp32 = rhythm.summary(labels, prob["torch"].argmax(1), n_boot=0)
            scores.append(fp32["cinc_f1"])
            int8 = []
            for m in METHODS:
                floor = rhythm.int8_floor(fp32, rhythm.summary(labels, prob[m].argmax(1), n_boot=0))
                int8.append(f"{m} {f1(labels, prob[m]):.4f} ({'passes' if floor['passes'] else 'fails'})")
            print(f"student weight {w:g}, temperature {tt:g}, seed +{s}: CinC F1 FP32 {fp32['cinc_f1']:.4f}; "
                  f"INT8 {', '.join(int8)}")  # fmt: skip
        if len(scores) > 1:
            print(f"student weight {w:g}, temperature {tt:g}: mean over seeds {np.mean(scores):.4f}, "
                  f"sd {np.std(scores, ddof=1):.4f}")  # fmt: skip
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
