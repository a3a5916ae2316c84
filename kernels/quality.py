"""Per-window signal-quality flags and a [0, 1] score for a [samples, channels] stream.

The stream is cut into consecutive windows of ``N = round(window_s * fs)`` samples (window ``k`` is
samples ``[k N, (k+1) N)``); each completed window gets, per channel:

* ``nonfinite``: count of non-finite samples (lead-off, dropped packets). GAP when the fraction
  ``nonfinite / N`` exceeds ``gap`` (default 0: any).
* ``flat_s``: longest run (s) of finite samples with ``|x[n] - x[n-1]| <= flat_eps`` (0: repeated
  ADC codes) ending in the window, counted from its start even in an earlier window. FLAT above
  ``flat`` (0.5 s). Real ECG repeats a code for tens of milliseconds at most.
* ``clip_frac``: fraction of finite samples at the ADC rails (``x <= lo`` or ``x >= hi``) when
  ``rails`` are given, else the fraction equal to the window's maximum or minimum (a saturated
  amplifier repeats its extreme value; clean signals reach it for a sample or two). CLIP above
  ``clip`` (1 %). Zero in a window whose finite samples are all equal (that is FLAT, not CLIP).
* ``noise_ratio``: power above ``hf_hz`` (4th-order Butterworth high-pass, 40 Hz) over power in
  ``band`` (Butterworth band-pass, 2nd order per edge, 1-40 Hz), as sums of squares over the
  window. NOISE above ``noise`` (0.15): EMG, electrode motion, mains.
* ``wander_ratio``: peak-to-peak of the ``lf_hz`` low-pass (2nd order, 0.5 Hz) over peak-to-peak of
  the band-passed signal: baseline excursion relative to the QRS amplitude (a 1 mV, 0.3 Hz sine on
  MIT-BIH 100 gives about 1.2). WANDER above ``wander`` (1.0).

The ratios are NaN when a window's finite samples are all within ``flat_eps`` of each other, and
all metrics but ``nonfinite`` are NaN when a window has no finite sample; NaN never flags.

Score: each metric ``m`` with flag threshold ``T`` and severe level ``S`` has badness
``b = 0.5 m / T`` up to ``T`` and ``0.5 + 0.5 (m - T) / (S - T)`` above (clipped to 1; ``b = 0``
at ``m = 0`` when ``T = 0``); ``score = 1 - max b``. So a window is flagged exactly when its score
is below 0.5 (enforced at the rounding edge), and a severe fault (``m >= S``) scores 0. Severe
levels: FLAT 2 s, CLIP 10 %, GAP 50 %, NOISE 0.6, WANDER 3.0 (:class:`QualityThresholds`). Clean
MIT-BIH windows score about 0.9.

Bad samples follow :mod:`vigil.kernels.clean`: the filters see the held value (so one NaN never
poisons them) while the amplitude statistics skip non-finite samples. All state (filter states,
run length, window accumulators) is explicit, so chunks of any size give the batch result exactly.
Thresholds were set on the 27 MIT-BIH records in ``../shared/data/mitdb`` (5 s windows, both
leads; 99.9th percentiles: flat run 0.025 s, clip fraction 0.44 %, noise ratio 0.54, wander ratio
2.3, the last two from records with real noise and wander). Record 100 flags no window.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np
from numba import njit

from .filters import SOSFilter, _hold_and_filter, design_bandpass, design_highpass, design_lowpass
from .validate import as_signal, check_fs


class QualityFlag(IntFlag):
    """Bitmask of quality problems in one window of one channel."""

    OK = 0
    FLAT = 1
    CLIP = 2
    GAP = 4
    NOISE = 8
    WANDER = 16


@dataclass(frozen=True)
class QualityThresholds:
    """``(flag above, severe at)`` per metric, in the metric's units (see the module docstring)."""

    flat: tuple[float, float] = (0.5, 2.0)  # s
    clip: tuple[float, float] = (0.01, 0.10)  # fraction of samples
    gap: tuple[float, float] = (0.0, 0.5)  # fraction of samples
    noise: tuple[float, float] = (0.15, 0.6)  # power ratio
    wander: tuple[float, float] = (1.0, 3.0)  # peak-to-peak ratio

    def __post_init__(self) -> None:
        for name in ("flat", "clip", "gap", "noise", "wander"):
            t, s = (float(v) for v in getattr(self, name))
            if not (0.0 <= t < s and np.isfinite(s)):
                raise ValueError(f"thresholds.{name} must be (flag, severe), 0 <= flag < severe")


#: Metric order in :attr:`QualityWindows.metrics` and the flag each one raises.
METRICS = ("nonfinite", "flat_s", "clip_frac", "noise_ratio", "wander_ratio")
_FLAGS = (QualityFlag.GAP, QualityFlag.FLAT, QualityFlag.CLIP, QualityFlag.NOISE, QualityFlag.WANDER)
_THRESHOLD_NAMES = ("gap", "flat", "clip", "noise", "wander")
_FLAG_BITS = np.array([int(f) for f in _FLAGS], dtype=np.int64)

# Accumulator rows (per channel)
_N_ACC = 14
_NBAD, _NOK, _MAX, _MIN, _NMAX, _NMIN, _NRAIL, _RUN, _PB, _PH, _BMAX, _BMIN, _LMAX, _LMIN = range(_N_ACC)


@njit(nogil=True, cache=True)
def _reset(acc):
    acc[:, :] = 0.0
    acc[_MAX, :] = -np.inf
    acc[_MIN, :] = np.inf
    acc[_BMAX, :] = -np.inf
    acc[_BMIN, :] = np.inf
    acc[_LMAX, :] = -np.inf
    acc[_LMIN, :] = np.inf


@njit(nogil=True, cache=True)
def _accumulate(x, yb, yh, yl, acc, run, prev, pos, size, lo, hi, eps, fs, out):
    """Add samples ``x`` [n, ch] (raw) with band/high/low-passed ``yb``/``yh``/``yl`` to the window.

    ``acc`` [14, ch] holds the open window's sums, ``pos`` its sample count, ``run``/``prev`` [ch]
    the flat run carried between windows. ``lo``/``hi`` [ch] are the rails (NaN: none). Each
    window completed is written to the next row of ``out`` [k, 5, ch]. Returns ``(k, pos)``.
    """
    n, nch = x.shape
    k = 0
    for i in range(n):
        for c in range(nch):
            v = x[i, c]
            if not np.isfinite(v):
                acc[_NBAD, c] += 1.0
            else:
                acc[_NOK, c] += 1.0
                if v > acc[_MAX, c]:
                    acc[_MAX, c] = v
                    acc[_NMAX, c] = 1.0
                elif v == acc[_MAX, c]:
                    acc[_NMAX, c] += 1.0
                if v < acc[_MIN, c]:
                    acc[_MIN, c] = v
                    acc[_NMIN, c] = 1.0
                elif v == acc[_MIN, c]:
                    acc[_NMIN, c] += 1.0
                if v <= lo[c] or v >= hi[c]:
                    acc[_NRAIL, c] += 1.0
                if np.isfinite(prev[c]) and abs(v - prev[c]) <= eps:
                    run[c] += 1.0
                else:
                    run[c] = 1.0
                prev[c] = v
                if run[c] > acc[_RUN, c]:
                    acc[_RUN, c] = run[c]
            b = yb[i, c]
            acc[_PB, c] += b * b
            acc[_PH, c] += yh[i, c] * yh[i, c]
            acc[_BMAX, c] = max(acc[_BMAX, c], b)
            acc[_BMIN, c] = min(acc[_BMIN, c], b)
            acc[_LMAX, c] = max(acc[_LMAX, c], yl[i, c])
            acc[_LMIN, c] = min(acc[_LMIN, c], yl[i, c])
        pos += 1
        if pos == size:
            for c in range(nch):
                nok = acc[_NOK, c]
                out[k, 0, c] = acc[_NBAD, c]
                out[k, 1:, c] = np.nan
                if nok > 0:
                    out[k, 1, c] = acc[_RUN, c] / fs
                    out[k, 2, c] = 0.0
                    if np.isfinite(lo[c]) or np.isfinite(hi[c]):
                        out[k, 2, c] = acc[_NRAIL, c] / nok
                    elif acc[_MAX, c] > acc[_MIN, c]:
                        out[k, 2, c] = (acc[_NMAX, c] + acc[_NMIN, c]) / nok
                    if acc[_MAX, c] - acc[_MIN, c] > eps:
                        if acc[_PB, c] > 0:
                            out[k, 3, c] = acc[_PH, c] / acc[_PB, c]
                        bpp = acc[_BMAX, c] - acc[_BMIN, c]
                        if bpp > 0:
                            out[k, 4, c] = (acc[_LMAX, c] - acc[_LMIN, c]) / bpp
            _reset(acc)
            pos = 0
            k += 1
    return k, pos


@njit(nogil=True, cache=True)
def _filter_accumulate(
    x, sb, zb, lb, sh, zh, lh, sl, zl, ll, acc, run, prev, pos, size, lo, hi, eps, fs, out
):
    """One chunk in one call: the band-, high- and low-passed ``x`` (each as ``SOSFilter.process``:
    sections ``s*``, state ``z*``, held values ``l*``, updated) into :func:`_accumulate`.

    Returns ``(k, pos, held_band, held_high, held_low)``: windows completed, the open window's
    sample count, and the bad samples each filter held.
    """
    yb, nb = _hold_and_filter(sb, x, zb, lb)
    yh, nh = _hold_and_filter(sh, x, zh, lh)
    yl, nl = _hold_and_filter(sl, x, zl, ll)
    k, pos = _accumulate(x, yb, yh, yl, acc, run, prev, pos, size, lo, hi, eps, fs, out)
    return k, pos, nb, nh, nl


_BIG = float(np.finfo(np.float64).max)
_BELOW_HALF = float(np.nextafter(0.5, 0.0))


@njit(nogil=True, cache=True)
def _score(metric, size, th, bits, flags, score):
    """Flags and score of completed windows ``metric`` [w, 5, ch] (in :data:`METRICS` order).

    Per window and channel, metric ``j`` (GAP as the fraction ``nonfinite / size``; NaN as 0, +-inf
    as the largest finite magnitude, as ``np.nan_to_num``) sets flag ``bits[j]`` when it exceeds its
    flag threshold ``T = th[j, 0]`` and has badness ``b = 0.5 m / T`` up to ``T`` (0 when ``T`` is 0),
    ``0.5 + 0.5 (m - T) / (S - T)`` above, clipped to [0, 1], with ``S = th[j, 1]`` the severe level
    (:func:`badness`). ``score = 1 - max_j b``, just below 0.5 when a flag is set. Writes ``flags``
    and ``score`` [w, ch].
    """
    w, nm, nch = metric.shape
    for i in range(w):
        for c in range(nch):
            f = 0
            worst = 0.0
            for j in range(nm):
                m = metric[i, j, c]
                if j == 0:
                    m = m / size
                if np.isnan(m):
                    m = 0.0
                elif m == np.inf:
                    m = _BIG
                elif m == -np.inf:
                    m = -_BIG
                t = th[j, 0]
                if m > t:
                    f |= bits[j]
                    b = 0.5 + 0.5 * (m - t) / (th[j, 1] - t)
                elif t > 0:
                    b = 0.5 * m / t
                else:
                    b = 0.0
                worst = max(worst, min(max(b, 0.0), 1.0))
            flags[i, c] = f
            score[i, c] = min(1.0 - worst, _BELOW_HALF) if f != 0 else 1.0 - worst


def badness(m: np.ndarray, flag: float, severe: float) -> np.ndarray:
    """Piecewise-linear badness: 0 at 0, 0.5 at ``flag``, 1 from ``severe``; NaN counts as 0."""
    m = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0)
    below = 0.5 * m / flag if flag > 0 else np.zeros_like(m)
    above = 0.5 + 0.5 * (m - flag) / (severe - flag)
    return np.clip(np.where(m > flag, above, below), 0.0, 1.0)


@dataclass(frozen=True)
class QualityWindows:
    """Quality of completed windows: rows are windows, columns channels."""

    start: np.ndarray  # int64 [w], first sample of each window
    flags: np.ndarray  # int64 [w, ch], QualityFlag bits
    score: np.ndarray  # float64 [w, ch] in [0, 1]
    metrics: np.ndarray  # float64 [w, 5, ch] in METRICS order

    def __len__(self) -> int:
        return len(self.start)

    def metric(self, name: str) -> np.ndarray:
        """One metric [w, ch] by name (see :data:`METRICS`)."""
        return self.metrics[:, METRICS.index(name), :]

    def flag(self, window: int, channel: int = 0) -> QualityFlag:
        """The flags of one window and channel as a :class:`QualityFlag`."""
        return QualityFlag(int(self.flags[window, channel]))


def _rails(rails: object, nch: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.full(nch, -np.inf), np.full(nch, np.inf)
    if rails is None:
        return lo, hi
    try:
        a, b = rails
        lo[:] = np.broadcast_to(np.asarray(a, dtype=np.float64), nch)
        hi[:] = np.broadcast_to(np.asarray(b, dtype=np.float64), nch)
    except (TypeError, ValueError):
        raise ValueError(f"rails must be (low, high), scalar or per channel: {rails!r}") from None
    if not np.all(lo < hi):
        raise ValueError(f"rails must have low < high, got {rails!r}")
    return lo, hi


class SignalQuality:
    """Streaming quality monitor: ``process(chunk)`` returns the windows the chunk completed.

    Parameters: ``window_s`` window length (s); ``band`` in-band range (Hz) for the noise and
    wander references; ``hf_hz`` noise cut-off, ``lf_hz`` wander cut-off (Hz); ``flat_eps`` the
    largest step (signal units) still counted as flat; ``rails`` the ADC limits (signal units,
    ``(low, high)``, scalars or per channel) if known; ``thresholds`` a :class:`QualityThresholds`.
    """

    def __init__(
        self,
        fs: float,
        n_channels: int,
        window_s: float = 5.0,
        band: tuple[float, float] = (1.0, 40.0),
        hf_hz: float = 40.0,
        lf_hz: float = 0.5,
        flat_eps: float = 0.0,
        rails: tuple[float, float] | None = None,
        thresholds: QualityThresholds | None = None,
    ):
        self.fs = check_fs(fs)
        if isinstance(n_channels, bool) or int(n_channels) != n_channels or n_channels < 1:
            raise ValueError(f"n_channels must be an integer >= 1, got {n_channels!r}")
        self.n_channels = int(n_channels)
        try:
            ws = float(window_s)
        except (TypeError, ValueError):
            ws = float("nan")
        if not np.isfinite(ws) or round(ws * self.fs) < 2:
            raise ValueError(f"window_s must span at least 2 samples, got {window_s!r}")
        self.size = int(round(ws * self.fs))
        self.flat_eps = float(flat_eps)
        if not (np.isfinite(self.flat_eps) and self.flat_eps >= 0):
            raise ValueError(f"flat_eps must be >= 0, got {flat_eps!r}")
        self.thresholds = QualityThresholds() if thresholds is None else thresholds
        if not isinstance(self.thresholds, QualityThresholds):
            raise ValueError("thresholds must be a QualityThresholds")
        self._lo, self._hi = _rails(rails, self.n_channels)
        self._th_of: QualityThresholds | None = None  # the thresholds _th was made from
        self._none: QualityWindows | None = None
        nch = self.n_channels
        self._band = SOSFilter(design_bandpass(band[0], band[1], self.fs), nch)
        self._hf = SOSFilter(design_highpass(hf_hz, self.fs, order=4), nch)
        self._lf = SOSFilter(design_lowpass(lf_hz, self.fs), nch)
        self._acc = np.empty((_N_ACC, nch))
        self._run = np.zeros(nch)
        self._prev = np.full(nch, np.nan)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: filters, flat run and the open window."""
        for f in (self._band, self._hf, self._lf):
            f.reset()
        _reset(self._acc)
        self._run[:] = 0.0
        self._prev[:] = np.nan
        self._pos = 0
        self.n_seen = 0

    def process(self, x: np.ndarray) -> QualityWindows:
        """Feed one chunk [samples, channels] (or [samples]); return the windows it completed."""
        a = as_signal(x, dtype=np.float64)
        if a.shape[1] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {a.shape[1]}")
        fb, fh, fl = self._band, self._hf, self._lf
        for f in (fb, fh, fl):
            f._begin(a)
        out = np.empty(((self._pos + len(a)) // self.size, len(METRICS), self.n_channels))
        k, self._pos, nb, nh, nl = _filter_accumulate(
            a, fb.sos, fb.zi, fb._last, fh.sos, fh.zi, fh._last, fl.sos, fl.zi, fl._last,
            self._acc, self._run, self._prev, self._pos, self.size,
            self._lo, self._hi, self.flat_eps, self.fs, out,
        )  # fmt: skip
        fb.n_bad += nb
        fh.n_bad += nh
        fl.n_bad += nl
        first = (self.n_seen + len(a)) // self.size - k
        self.n_seen += len(a)
        return self._windows(first, out[:k])

    def _windows(self, first: int, m: np.ndarray) -> QualityWindows:
        if len(m) == 0:  # most chunks complete no window: one shared empty result (read-only arrays)
            if self._none is None:
                empty = np.zeros((0, self.n_channels))
                self._none = QualityWindows(
                    np.zeros(0, dtype=np.int64), empty.astype(np.int64), empty, m.copy()
                )
                for a in vars(self._none).values():
                    a.setflags(write=False)
            return self._none
        if self._th_of is not self.thresholds:
            self._th = np.array([getattr(self.thresholds, n) for n in _THRESHOLD_NAMES], dtype=np.float64)
            self._th_of = self.thresholds
        metric = m.copy()
        flags = np.empty((len(m), self.n_channels), dtype=np.int64)
        score = np.empty((len(m), self.n_channels))
        _score(metric, float(self.size), self._th, _FLAG_BITS, flags, score)
        start = (first + np.arange(len(m), dtype=np.int64)) * self.size
        return QualityWindows(start, flags, score, metric)


def signal_quality(x: np.ndarray, fs: float, **kwargs: object) -> QualityWindows:
    """Batch form of :class:`SignalQuality`: the complete windows of ``x`` [samples, channels]."""
    a = as_signal(x, dtype=np.float64)
    return SignalQuality(fs, a.shape[1], **kwargs).process(a)
