"""Classification metrics as the field reports them (pure numpy; no torch).

* :func:`class_stats`: per class sensitivity (recall) and positive predictivity (precision) from
  reference and predicted labels, the EC57 way (gross statistics over all beats of all records).
* :func:`f1_scores` / :func:`macro_f1`: per-class F1 and their mean over chosen classes (the
  PhysioNet/CinC 2017 score is the mean F1 of Normal, AF and Other).
* :func:`bootstrap_ci`: a percentile confidence interval of any statistic by resampling *groups*
  (records, subjects), so the interval reflects between-patient variation, not beat counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassStats:
    label: str
    n_ref: int  # reference items of the class
    tp: int
    fn: int
    fp: int

    @property
    def se(self) -> float:
        """Sensitivity TP / (TP + FN); NaN when the class is absent from the reference."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def ppv(self) -> float:
        """Positive predictivity TP / (TP + FP); NaN when the class was never predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fn + self.fp
        return 2 * self.tp / d if d else float("nan")


def confusion(ref: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[reference class, predicted class]`` counts."""
    ref, pred = np.asarray(ref, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if ref.shape != pred.shape:
        raise ValueError("ref and pred must have the same shape")
    return np.bincount(ref * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_stats(ref: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> list[ClassStats]:
    """Per-class TP/FN/FP from integer labels (indices into ``labels``)."""
    k = len(labels)
    c = confusion(ref, pred, k)
    out = []
    for i, name in enumerate(labels):
        tp = int(c[i, i])
        out.append(ClassStats(name, int(c[i].sum()), tp, int(c[i].sum()) - tp, int(c[:, i].sum()) - tp))
    return out


def f1_scores(ref: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    c = confusion(ref, pred, n_classes)
    tp = np.diag(c).astype(float)
    d = c.sum(0) + c.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d > 0, 2 * tp / d, np.nan)


def macro_f1(
    ref: np.ndarray, pred: np.ndarray, n_classes: int, classes: Sequence[int] | None = None
) -> float:
    """Mean F1 over ``classes`` (default all) — CinC 2017: classes N, A, O."""
    f = f1_scores(ref, pred, n_classes)
    sel = f[list(classes)] if classes is not None else f
    return float(np.nanmean(sel))


def bootstrap_ci(
    groups: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(index array)`` over resamples of whole groups with replacement.

    ``groups``: one group id per item (record, subject). ``statistic`` receives the indices of the
    items of a resample (a group drawn twice contributes its items twice).
    """
    groups = np.asarray(groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(ids))]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(ids), len(ids))
        v = statistic(np.concatenate([members[g] for g in pick]))
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return float(lo), float(hi)
