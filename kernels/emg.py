"""Surface-EMG kernels: time-domain window features, linear envelope and onset detection.

Input is EMG in signal units (e.g. mV), ideally band-passed first
(``filters.design_default("emg")``) so that it is zero-mean. All three stages stream: chunked input
gives exactly the batch output.

**Window features** (Hudgins et al. 1993; Phinyomark et al. 2012), per window ``x[0..N-1]`` of
``window_s`` seconds every ``hop_s`` seconds (:mod:`vigil.kernels.sliding`) and per channel, with an
amplitude threshold ``thr >= 0`` (signal units) that keeps noise from counting::

    RMS = sqrt(mean(x**2))          MAV = mean(|x|)          WL = sum |x[i] - x[i-1]|
    ZC  = #{i : x[i-1] * x[i] < 0  and  |x[i] - x[i-1]| >= thr}
    SSC = #{0 < i < N-1 : (x[i] - x[i-1]) * (x[i] - x[i+1]) > 0
                          and (|x[i] - x[i-1]| >= thr  or  |x[i] - x[i+1]| >= thr)}

**Envelope**: full-wave rectification then a causal Butterworth low-pass (default 6 Hz, order 2),
``scipy.signal.sosfilt(sos, |x|)`` from rest; the filter state lives in a
:class:`~vigil.kernels.filters.SOSFilter`.

**Onset detection** (after Hodges & Bui 1996): the first ``baseline_s`` seconds of the envelope give
a per-channel baseline mean ``mu`` and standard deviation ``sd`` (population, Welford's update).
After that a channel switches *on* when the envelope stays above ``mu + k*sd`` for
``min_duration_s`` seconds, and *off* when it stays at or below it as long. Each switch is
reported with the index of the first sample of the run that caused it, as rows
``(sample, channel, +1 | -1)``.

Non-finite input samples are held and counted (:mod:`vigil.kernels.clean`) in every stage.

References: Hudgins, Parker & Scott, IEEE Trans. Biomed. Eng. 40:82 (1993); Phinyomark,
Phukpattaranont & Limsakul, Expert Syst. Appl. 39:7420 (2012); Hodges & Bui,
Electroencephalogr. Clin. Neurophysiol. 101:511 (1996).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .clean import hold_bad_samples
from .filters import SOSFilter, design_lowpass
from .sliding import SlidingWindows, positive_int, window_samples
from .validate import as_signal, check_fs

#: Feature rows returned per window, in this order along axis 1.
FEATURES = ("rms", "mav", "wl", "zc", "ssc")


@njit(nogil=True, cache=True)
def _window_features(windows, thr, out):
    """RMS, MAV, WL, ZC, SSC of each window of ``windows`` [k, N, ch] into ``out`` [k, 5, ch]."""
    n_win, size, nch = windows.shape
    for k in range(n_win):
        for c in range(nch):
            sq = 0.0
            ab = 0.0
            wl = 0.0
            zc = 0
            ssc = 0
            for i in range(size):
                v = windows[k, i, c]
                sq += v * v
                ab += abs(v)
                if i > 0:
                    prev = windows[k, i - 1, c]
                    d = abs(v - prev)
                    wl += d
                    if prev * v < 0.0 and d >= thr:
                        zc += 1
                    if i < size - 1:
                        dl = v - prev
                        dr = v - windows[k, i + 1, c]
                        if dl * dr > 0.0 and (abs(dl) >= thr or abs(dr) >= thr):
                            ssc += 1
            out[k, 0, c] = np.sqrt(sq / size)
            out[k, 1, c] = ab / size
            out[k, 2, c] = wl
            out[k, 3, c] = zc
            out[k, 4, c] = ssc


def _threshold(threshold: object) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}") from None
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return t


class EMGFeatureStream:
    """Streaming RMS/MAV/WL/ZC/SSC for ``n_channels`` channels sampled at ``fs`` Hz.

    ``process(chunk)`` takes [samples, channels] and returns the rows of the windows the chunk
    completed, shape [k, len(FEATURES), channels]. Window ``k`` covers samples
    ``[k*hop, k*hop + window)``, ``window = round(window_s*fs)``, ``hop = round(hop_s*fs)``.
    """

    def __init__(
        self,
        fs: float,
        n_channels: int,
        window_s: float = 0.2,
        hop_s: float = 0.1,
        threshold: float = 0.0,
    ):
        fs = check_fs(fs)
        size = window_samples(window_s, fs, "window_s")
        self._windows = SlidingWindows(size, window_samples(hop_s, fs, "hop_s"), n_channels)
        self.threshold = _threshold(threshold)

    @property
    def n_channels(self) -> int:
        return self._windows.n_channels

    @property
    def n_bad(self) -> int:
        """Non-finite samples held so far."""
        return self._windows.n_bad

    def reset(self) -> None:
        """Forget the stream."""
        self._windows.reset()

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed one chunk [samples, channels]; return features [k, len(FEATURES), channels]."""
        rows = [np.empty((0, len(FEATURES), self.n_channels))]
        for w in self._windows.batches(x):
            out = np.empty((len(w), len(FEATURES), self.n_channels))
            _window_features(w, self.threshold, out)
            rows.append(out)
        return np.concatenate(rows)


def emg_features(
    x: np.ndarray, fs: float, window_s: float = 0.2, hop_s: float = 0.1, threshold: float = 0.0
) -> np.ndarray:
    """Features [n_windows, len(FEATURES), channels] of a whole record (one fresh stream call)."""
    a = as_signal(x)
    return EMGFeatureStream(fs, a.shape[1], window_s, hop_s, threshold).process(a)


class EMGEnvelope:
    """Streaming linear envelope: ``|x|`` through a causal Butterworth low-pass at ``cutoff`` Hz."""

    def __init__(self, fs: float, n_channels: int, cutoff: float = 6.0, order: int = 2):
        self._filter = SOSFilter(design_lowpass(cutoff, fs, order), n_channels, init="zeros")

    @property
    def n_bad(self) -> int:
        """Non-finite samples held so far."""
        return self._filter.n_bad

    def reset(self) -> None:
        """Forget the stream."""
        self._filter.reset()

    def process(self, x: np.ndarray) -> np.ndarray:
        """Envelope of one chunk [samples, channels] (``abs`` keeps NaN, which the filter holds)."""
        return self._filter.process(np.abs(as_signal(x)))


def emg_envelope(x: np.ndarray, fs: float, cutoff: float = 6.0, order: int = 2) -> np.ndarray:
    """Envelope of a whole record [samples, channels] (one fresh :class:`EMGEnvelope` call)."""
    a = as_signal(x)
    return EMGEnvelope(fs, a.shape[1], cutoff, order).process(a)


@njit(nogil=True, cache=True)
def _onsets(env, n_seen, n_base, k_sd, min_run, last, mean, m2, thr, active, run, start, out):
    """Baseline (Welford) then run-length threshold detection over ``env`` [n, ch].

    State per channel: ``last`` hold value, ``mean``/``m2`` baseline moments, ``thr`` threshold
    (set when the baseline completes), ``active`` (0/1), ``run`` length and ``start`` index of the
    current opposite-side run. Writes events ``(sample, channel, +1|-1)`` into ``out``; returns
    ``(n_events, n_held)``.
    """
    n, nch = env.shape
    y = np.empty_like(env)
    bad = np.empty(env.shape, dtype=np.bool_)
    n_held = hold_bad_samples(env, last, y, bad)
    n_ev = 0
    for i in range(n):
        t = n_seen + i
        for c in range(nch):
            v = y[i, c]
            if t < n_base:
                delta = v - mean[c]
                mean[c] += delta / (t + 1)
                m2[c] += delta * (v - mean[c])
                if t == n_base - 1:
                    thr[c] = mean[c] + k_sd * np.sqrt(m2[c] / n_base)
                continue
            above = 1 if v > thr[c] else 0
            if above == active[c]:
                run[c] = 0
                continue
            if run[c] == 0:
                start[c] = t
            run[c] += 1
            if run[c] >= min_run:
                active[c] = above
                run[c] = 0
                out[n_ev, 0] = start[c]
                out[n_ev, 1] = c
                out[n_ev, 2] = 1 if above else -1
                n_ev += 1
    return n_ev, n_held


class OnsetDetector:
    """Streaming muscle on/off detection on an envelope [samples, channels] (see module docstring).

    ``process(envelope_chunk)`` returns the events confirmed in the chunk as an int64 array
    [n_events, 3] of ``(sample index in the stream, channel, +1 onset | -1 offset)``.
    ``k`` is the threshold in baseline SDs; ``min_duration_s`` the time the envelope must stay on
    the new side; ``baseline_s`` the quiet lead-in used for the baseline (no events during it).
    """

    def __init__(
        self,
        fs: float,
        n_channels: int,
        k: float = 3.0,
        min_duration_s: float = 0.025,
        baseline_s: float = 1.0,
    ):
        fs = check_fs(fs)
        if not isinstance(k, int | float | np.number) or not np.isfinite(k) or k < 0:
            raise ValueError(f"k must be a finite number of SDs >= 0, got {k!r}")
        self.k = float(k)
        self.min_run = window_samples(min_duration_s, fs, "min_duration_s")
        self.n_base = window_samples(baseline_s, fs, "baseline_s")
        self.n_channels = positive_int(n_channels, "n_channels")
        self.n_bad = 0
        self.reset()

    def reset(self) -> None:
        """Forget the stream, including the baseline."""
        nch = self.n_channels
        self.n_seen = 0
        self._last = np.zeros(nch)
        self._mean = np.zeros(nch)
        self._m2 = np.zeros(nch)
        self._thr = np.zeros(nch)
        self._active = np.zeros(nch, dtype=np.int64)
        self._run = np.zeros(nch, dtype=np.int64)
        self._start = np.zeros(nch, dtype=np.int64)

    @property
    def threshold(self) -> np.ndarray | None:
        """Per-channel threshold ``mu + k*sd`` once the baseline is complete, else None."""
        if self.n_seen < self.n_base:
            return None
        return self._thr.copy()

    @property
    def active(self) -> np.ndarray:
        """Per-channel on/off state (bool)."""
        return self._active.astype(bool)

    def process(self, envelope: np.ndarray) -> np.ndarray:
        """Feed one envelope chunk [samples, channels]; return events [n_events, 3] (int64)."""
        env = as_signal(envelope, name="envelope", dtype=np.float64)
        if env.shape[1] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {env.shape[1]}")
        out = np.empty(((len(env) // self.min_run + 1) * self.n_channels, 3), dtype=np.int64)
        state = (self._last, self._mean, self._m2, self._thr, self._active, self._run, self._start)
        n_ev, n_held = _onsets(env, self.n_seen, self.n_base, self.k, self.min_run, *state, out)
        self.n_seen += len(env)
        self.n_bad += n_held
        return out[:n_ev].copy()


def detect_onsets(
    envelope: np.ndarray,
    fs: float,
    k: float = 3.0,
    min_duration_s: float = 0.025,
    baseline_s: float = 1.0,
) -> np.ndarray:
    """On/off events [n_events, 3] of a whole envelope record (one fresh :class:`OnsetDetector`)."""
    env = as_signal(envelope, name="envelope")
    return OnsetDetector(fs, env.shape[1], k, min_duration_s, baseline_s).process(env)
