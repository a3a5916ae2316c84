"""Beat-by-beat comparison of detected beats against reference annotations (ANSI/AAMI EC57 style).

This is the scoring that WFDB's ``bxb`` performs for QRS detection: a detection matches a reference
beat when the two lie within a 150 ms window, each pairing one-to-one; unmatched references are
false negatives, unmatched detections false positives. As EC57 prescribes, scoring starts 5 minutes
into the record (the learning period) and ventricular flutter/fibrillation episodes (between the
``[`` and ``]`` annotations) are left out, because they carry no beat annotations to match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: WFDB annotation codes that denote a beat (the ``isqrs`` set of the WFDB library).
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")


@dataclass(frozen=True)
class BeatMatch:
    """Counts of one comparison; ``se`` and ``ppv`` are fractions (NaN when undefined)."""

    tp: int
    fn: int
    fp: int

    @property
    def se(self) -> float:
        """Sensitivity TP / (TP + FN)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def ppv(self) -> float:
        """Positive predictivity TP / (TP + FP)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    def __add__(self, other: BeatMatch) -> BeatMatch:
        return BeatMatch(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp)


def vf_intervals(samples: np.ndarray, symbols: list[str] | np.ndarray) -> list[tuple[int, int]]:
    """Return the ``[`` ... ``]`` (ventricular flutter/fibrillation) intervals as sample pairs."""
    out, start = [], None
    for s, sym in zip(samples, symbols, strict=True):
        if sym == "[":
            start = int(s)
        elif sym == "]" and start is not None:
            out.append((start, int(s)))
            start = None
    if start is not None:
        out.append((start, int(np.iinfo(np.int64).max)))
    return out


def _keep(x: np.ndarray, start: int, exclude: list[tuple[int, int]]) -> np.ndarray:
    mask = x >= start
    for a, b in exclude:
        mask &= ~((x >= a) & (x <= b))
    return x[mask]


def match_beats(
    reference: np.ndarray,
    detected: np.ndarray,
    fs: float,
    tolerance_s: float = 0.150,
    start_s: float = 300.0,
    exclude: list[tuple[int, int]] | None = None,
) -> BeatMatch:
    """Compare ``detected`` with ``reference`` beat sample indices.

    Each reference beat, in time order, takes the nearest not-yet-used detection within
    ``tolerance_s``, unless that detection lies closer to the next reference beat. Beats before
    ``start_s`` and inside ``exclude`` sample intervals are not scored.
    """
    tol = int(round(tolerance_s * fs))
    start = int(round(start_s * fs))
    exclude = exclude or []
    ref = np.sort(_keep(np.asarray(reference, dtype=np.int64), start, exclude))
    det = np.sort(np.asarray(detected, dtype=np.int64))
    # Detections just before the start or an excluded interval may still pair with a scored beat;
    # only the unmatched ones outside the scored region are dropped below.
    used = np.zeros(len(det), dtype=bool)
    tp = 0
    j = 0
    for k, r in enumerate(ref):
        while j < len(det) and det[j] < r - tol:
            j += 1
        best, best_d = -1, tol + 1
        m = j
        while m < len(det) and det[m] <= r + tol:
            d = abs(int(det[m]) - int(r))
            if not used[m] and d < best_d:
                if k + 1 < len(ref) and abs(int(ref[k + 1]) - int(det[m])) < d:
                    m += 1
                    continue
                best, best_d = m, d
            m += 1
        if best >= 0:
            used[best] = True
            tp += 1
    fn = len(ref) - tp
    unmatched = det[~used]
    fp = len(_keep(unmatched, start, exclude))
    return BeatMatch(tp=tp, fn=fn, fp=fp)
