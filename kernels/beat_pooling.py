"""``morphology-pooling/1``: a beat's ventricular evidence pooled with that of the patient's recent
beats that look like it.

An inter-patient beat network judges each beat alone, against the patient's running template. It
errs where a patient's own normal beats look unusual (MIT-BIH 203: aberrant conduction in atrial
fibrillation, about 300 normal beats called V in leave-records-out validation) and where a patient's
ectopic beats look like its normal ones. A Holter reader groups beats into morphology families and
labels families, not beats; this is the streaming, unsupervised form of that: no labels, no look-ahead,
a per-lead state of the last ``history`` classified beats.

With ``s_i`` the network's logits of beat ``i`` and ``x_i`` its ``beat-window/1`` window over samples
``[start, stop)`` (a 0.4-s span around the QRS at 128 Hz), mean removed and scaled to unit norm:

.. math::

    d_i &= s_{i,V} - \\log \\textstyle\\sum_{c \\ne V} e^{s_{i,c}}
        \\quad\\text{(the V margin: the log-odds of V against the rest)}\\\\
    w_{ij} &= e^{(r_{ij} - 1)/\\tau} \\;\\text{for}\\; r_{ij} = x_i \\cdot x_j \\ge \\text{floor},
        \\; i - \\text{history} \\le j < i, \\;\\text{else}\\; 0\\\\
    W_i &= \\textstyle\\sum_j w_{ij}, \\qquad m_i = \\textstyle\\sum_j w_{ij} d_j / W_i\\\\
    d'_i &= d_i + \\text{weight}\\, \\frac{W_i}{W_i + \\text{prior}} (m_i - d_i) + \\text{bias}

and ``s'_{i,V} = s_{i,V} + d'_i - d_i``, the other logits unchanged. ``W_i`` counts look-alike beats
(a beat with correlation ``1 - tau`` weighs ``1/e``), so a beat with few look-alikes keeps its own
margin; the neighbours' margins are the network's own, never pooled ones (no feedback). ``bias``
sets the operating point of V against the rest after pooling. The parameters are chosen by the
network's leave-records-out validation (:mod:`vigil.models.beats`) and stored in its model card.

:func:`pool_reference` is the definition over a whole record (numpy, quadratic memory; for tests);
:class:`MorphologyPooling` is the streaming form the monitor runs, array-at-a-time per batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

POOLING_ID = "morphology-pooling/1"


@dataclass(frozen=True)
class PoolingParams:
    """Parameters of ``morphology-pooling/1``; stored in the model card's ``postprocessing`` dict."""

    target: int = 2  # the pooled class (V in N, S, V, F, Q)
    start: int = 20  # first window sample compared (beat-window/1: the R wave is sample 40)
    stop: int = 72  # one past the last
    tau: float = 0.03  # correlation scale of the look-alike weight
    floor: float = 0.7  # correlations below this do not count
    weight: float = 0.7  # how far a beat's margin moves towards its look-alikes' (0..1)
    prior: float = 2.0  # look-alike weight at which half of ``weight`` applies
    history: int = 1024  # previous classified beats compared
    bias: float = 1.0  # added to the pooled V margin (operating point)

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop - 1:
            raise ValueError(f"need 0 <= start < stop - 1, got start={self.start}, stop={self.stop}")
        if not (self.tau > 0 and self.prior > 0 and self.history >= 1 and 0 <= self.weight <= 1):
            raise ValueError("need tau > 0, prior > 0, history >= 1 and 0 <= weight <= 1")
        if not -1 <= self.floor <= 1:
            raise ValueError(f"floor must lie in [-1, 1], got {self.floor}")

    def card(self) -> dict[str, Any]:
        return {"id": POOLING_ID, **asdict(self)}

    @classmethod
    def from_card(cls, post: dict[str, Any]) -> PoolingParams:
        """Parameters from a card's ``postprocessing`` dict; ``ValueError`` for another id."""
        if post.get("id") != POOLING_ID:
            raise ValueError(f"postprocessing {post.get('id')!r} is not {POOLING_ID}")
        return cls(**{k: v for k, v in post.items() if k in cls.__dataclass_fields__})


def morphology_vectors(windows: np.ndarray, p: PoolingParams) -> np.ndarray:
    """Unit-norm, zero-mean ``[n, stop - start]`` vectors of the beat windows ``[n, samples]``
    (a flat window gives zeros: it correlates with nothing)."""
    x = np.asarray(windows, dtype=np.float64)[:, p.start : p.stop]
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def target_margin(scores: np.ndarray, target: int) -> np.ndarray:
    """``s_target - log sum_{c != target} exp(s_c)`` per row of logits ``[n, classes]``."""
    s = np.asarray(scores, dtype=np.float64)
    rest = np.delete(s, target, axis=1)
    top = rest.max(axis=1, keepdims=True)
    return s[:, target] - (top[:, 0] + np.log(np.exp(rest - top).sum(axis=1)))


def _pooled(r: np.ndarray, allowed: np.ndarray, d_hist: np.ndarray, d: np.ndarray, p: PoolingParams):
    """``d'`` from correlations ``r`` [n, h] of the new beats with the candidates, which of them may
    count (``allowed``), the candidates' margins and the new beats' own."""
    w = np.where(allowed & (r >= p.floor), np.exp((r - 1.0) / p.tau), 0.0)
    total = w.sum(axis=1)
    mean = np.divide(w @ d_hist, total, out=d.copy(), where=total > 0)
    return d + p.weight * total / (total + p.prior) * (mean - d) + p.bias


def pool_reference(windows: np.ndarray, scores: np.ndarray, p: PoolingParams) -> np.ndarray:
    """The definition over one record's classified beats, in order: windows ``[n, samples]``, logits
    ``[n, classes]`` -> pooled logits."""
    x = morphology_vectors(windows, p)
    d = target_margin(scores, p.target)
    i, j = np.arange(len(d))[:, None], np.arange(len(d))[None, :]
    out = np.array(scores, dtype=np.float64)
    out[:, p.target] += _pooled(x @ x.T, (j < i) & (j >= i - p.history), d, d, p) - d
    return out


class MorphologyPooling:
    """Streaming ``morphology-pooling/1`` for one lead: a ring of the last ``history`` beats' vectors
    (float32, ``history x (stop - start)``: 208 KB at the defaults) and margins.

    >>> pool = MorphologyPooling(PoolingParams())
    >>> pooled = pool.process(beat_windows, logits)  # each batch in stream order
    """

    BLOCK = 1024  # new beats per matrix product (bounds memory for whole-record batches)

    def __init__(self, params: PoolingParams) -> None:
        self.params = params
        self._x = np.zeros((params.history, params.stop - params.start), np.float32)
        self._d = np.zeros(params.history)
        self._pos = 0  # the ring slot the next beat goes to
        self._held = 0  # beats in the ring

    def process(self, windows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Pooled logits ``[n, classes]`` for the next ``n`` classified beats (windows ``[n, samples]``),
        in the dtype of ``scores``."""
        scores = np.asarray(scores)
        if len(windows) != len(scores):
            raise ValueError(f"{len(windows)} windows for {len(scores)} score rows")
        out = np.array(scores, dtype=np.float64)
        for a in range(0, len(scores), self.BLOCK):
            out[a : a + self.BLOCK] = self._block(windows[a : a + self.BLOCK], scores[a : a + self.BLOCK])
        return out.astype(scores.dtype) if scores.dtype.kind == "f" else out

    def _block(self, windows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        p, h = self.params, self.params.history
        x, d = morphology_vectors(windows, p), target_margin(scores, p.target)
        k = len(d)
        i = np.arange(k)[:, None]
        age = (self._pos - np.arange(h) - 1) % h + 1  # of each ring slot: 1 = the newest beat
        old = (age <= self._held)[None, :] & (age[None, :] + i <= h)  # still within beat i's history
        j = np.arange(k)[None, :]
        r = np.concatenate([(x.astype(np.float32) @ self._x.T).astype(np.float64), x @ x.T], axis=1)
        allowed = np.concatenate([old, (j < i) & (j >= i - h)], axis=1)
        out = np.array(scores, dtype=np.float64)
        out[:, p.target] += _pooled(r, allowed, np.concatenate([self._d, d]), d, p) - d
        keep = min(k, h)
        slots = (self._pos + np.arange(keep)) % h
        self._x[slots], self._d[slots] = x[k - keep :], d[k - keep :]
        self._pos, self._held = (self._pos + keep) % h, min(h, self._held + keep)
        return out
