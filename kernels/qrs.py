"""Streaming QRS detector: causal, chunk-invariant, with a bounded detection delay.

The detector follows the energy-envelope family of Pan & Tompkins (1985) with the decision rules of
Hamilton & Tompkins (1986), rewritten as one explicit state machine so that a live stream and a
whole record give the same beats:

1. **Feature** (array-at-a-time): band-pass 5-15 Hz (Butterworth, causal), five-point derivative,
   squaring, and a moving-window integral of ``integration_s`` (150 ms)::

       d[n] = (2 b[n] + b[n-1] - b[n-3] - 2 b[n-4]) / 8,     e[n] = mean(d[n-L+1..n]^2)

2. **Peaks**: a local maximum of ``e`` is final once ``e`` falls below half of it (or after
   ``peak_wait_s``). Its fiducial point is the largest ``|b|`` within the QRS window that the
   integrator saw, moved back by the band-pass group delay, so beats are reported at the R (or QS)
   deflection.
3. **Decisions**: a peak above ``noise + k (qrs - noise)`` (median of the last eight QRS peak
   heights, mean of the last eight noise peaks) and outside the refractory period is a beat unless
   it is not QRS-like: a T wave (within ``t_wave_s`` of the last beat, with under half that beat's
   steepest slope) or any peak whose steepest slope is under ``min_slope`` (0.2) of the recent
   beats' median (P waves, T waves, drift). When no beat has come for 1.5 mean RR intervals, the
   largest QRS-like peak above half the threshold in the last ``searchback_max_s`` is taken
   (search-back). Long silences halve the QRS level every second after ``decay_after_s`` so
   detection resumes at lower amplitude, and the slope reference only after
   ``slope_decay_after_s`` (8 s): during ventricular asystole with P waves still conducted, the
   P waves are not reported as beats for at least that long, so the asystole is seen.

Detection delay: a beat is reported when its envelope peak is final, typically 0.2-0.35 s after the
R wave (at most ``peak_wait_s`` + integration + group delay ~ 0.5 s); a beat found by search-back is
reported up to 1.5 mean RR intervals (capped by ``searchback_max_s``) after it occurred. Reported
indices are in samples of the input stream; beats are emitted in increasing order.

Bad samples: non-finite input is held at the last finite value (see :mod:`vigil.kernels.clean`),
so a lead-off burst looks flat to the detector and never poisons its state.

References: J. Pan, W. J. Tompkins, "A real-time QRS detection algorithm", IEEE TBME 32(3), 1985;
P. S. Hamilton, W. J. Tompkins, "Quantitative investigation of QRS detection rules using the
MIT/BIH arrhythmia database", IEEE TBME 33(12), 1986.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .clean import MAX_ABS
from .filters import design_bandpass
from .iir_design import sos_group_delay
from .validate import as_signal, check_fs

# Slots of the float state vector.
_QRS_LEVEL, _NOISE_LEVEL, _RR_MEAN, _PEAK_VAL, _LAST_SLOPE, _LEARN_MAX, _MWI_SUM, _HELD, _SLOPE_REF = range(9)
# Slots of the integer state vector.
_N, _LAST_BEAT, _PEAK_T, _N_CAND = range(4)
# Slots of the configuration vector (times in samples).
(
    _C_REFRACTORY,
    _C_T_WAVE,
    _C_K,
    _C_SB_RR,
    _C_SB_MAX,
    _C_WAIT,
    _C_LEARN,
    _C_DECAY_AFTER,
    _C_LAG,
    _C_HALF,
    _C_GROUP_DELAY,
    _C_MIN_SLOPE,
    _C_SLOPE_DECAY_AFTER,
) = range(13)
# Rows of the history table: the last _HIST values of each, oldest overwritten first.
_H_QRS, _H_NOISE, _H_RR, _H_SLOPE = range(4)
_HIST = 8
_MAX_CAND = 32  # sub-threshold peaks remembered for search-back


@dataclass(frozen=True)
class QRSParams:
    """Tunable constants of the detector, in seconds or as fractions."""

    band_hz: tuple[float, float] = (5.0, 15.0)
    integration_s: float = 0.150
    refractory_s: float = 0.200
    t_wave_s: float = 0.360
    threshold_k: float = 0.4
    searchback_rr: float = 1.5
    searchback_max_s: float = 2.5
    peak_wait_s: float = 0.200
    learn_s: float = 2.0
    decay_after_s: float = 3.0
    min_slope: float = 0.2
    slope_decay_after_s: float = 8.0


@njit(nogil=True, cache=True)
def _push(hist, count, row, v):
    """Append ``v`` to history row ``row``; ``count[row]`` is the number of values pushed so far."""
    hist[row, count[row] % hist.shape[1]] = v
    count[row] += 1


@njit(nogil=True, cache=True)
def _mean(hist, count, row):
    n = min(count[row], hist.shape[1])
    return hist[row, :n].sum() / n if n else 0.0


@njit(nogil=True, cache=True)
def _median(hist, count, row):
    n = min(count[row], hist.shape[1])
    return np.median(hist[row, :n]) if n else 0.0


@njit(nogil=True, cache=True)
def _fiducial(bring, n_now, t_peak, lag, half, gd):
    """Index of the largest |b| around the QRS centre that the envelope peak at ``t_peak`` covers,
    and the steepest |slope| there. ``bring`` holds the last len(bring) band-passed samples. The
    search starts no earlier than band-passed sample ``gd`` (raw sample 0): a QRS at the very start
    of a stream is reported at or after the stream's first sample, never before it."""
    H = bring.shape[0]
    centre = t_peak - lag
    lo = max(centre - half, n_now - H + 2, gd)
    hi = min(centre + half, n_now)
    best_k = lo
    best_v = -1.0
    slope = 0.0
    j = lo % H
    prev = bring[j - 1 if j > 0 else H - 1]
    for k in range(lo, hi + 1):
        cur = bring[j]
        if abs(cur) > best_v:
            best_v = abs(cur)
            best_k = k
        slope = max(slope, abs(cur - prev))
        prev = cur
        j = j + 1 if j + 1 < H else 0
    return best_k - gd, slope


@njit(nogil=True, cache=True)
def _accept(st, it, hist, count, t_fid, amp, slope, out, n_out):
    """Record a beat at fiducial ``t_fid``; returns the new count of emitted beats."""
    last = it[_LAST_BEAT]
    if last >= 0:
        _push(hist, count, _H_RR, float(t_fid - last))
        st[_RR_MEAN] = _mean(hist, count, _H_RR)
    _push(hist, count, _H_QRS, amp)
    st[_QRS_LEVEL] = _median(hist, count, _H_QRS)
    _push(hist, count, _H_SLOPE, slope)
    st[_SLOPE_REF] = _median(hist, count, _H_SLOPE)
    st[_LAST_SLOPE] = max(slope, st[_SLOPE_REF])
    it[_LAST_BEAT] = t_fid
    out[n_out] = t_fid
    return n_out + 1


@njit(nogil=True, cache=True)
def _threshold(st, k):
    return st[_NOISE_LEVEL] + k * (st[_QRS_LEVEL] - st[_NOISE_LEVEL])


@njit(nogil=True, cache=True)
def _t_wave_like(st, since, slope, t_wave):
    """A peak soon after a beat whose steepest slope is under half the beats' is a T wave."""
    return since < t_wave and slope < 0.5 * st[_LAST_SLOPE]


@njit(nogil=True, cache=True)
def _too_slow(st, slope, cfg):
    """A peak whose steepest slope is a small fraction of the recent beats' is a P wave, a T wave
    or drift, never a QRS complex, however low the amplitude threshold has fallen."""
    return slope < cfg[_C_MIN_SLOPE] * st[_SLOPE_REF]


@njit(nogil=True, cache=True)
def _search_back(st, it, hist, count, cand, cfg, now, before, out, n_out):
    """Promote the largest candidate peak since the last beat that clears half the threshold, is
    QRS-like, lies a refractory period before ``before`` and no more than ``searchback_max`` before
    ``now`` (fiducial time), so a beat is never reported later than that. Candidates after it are
    kept for a later search; returns the new count of emitted beats."""
    refr, t_wave = cfg[_C_REFRACTORY], cfg[_C_T_WAVE]
    last = it[_LAST_BEAT]
    half_th = 0.5 * _threshold(st, cfg[_C_K])
    oldest = now - cfg[_C_SB_MAX]
    best = -1
    for c in range(it[_N_CAND]):
        since = cand[c, 0] - last
        if since < refr or before - cand[c, 0] < refr or cand[c, 0] < oldest or cand[c, 1] <= half_th:
            continue
        if _t_wave_like(st, since, cand[c, 2], t_wave) or _too_slow(st, cand[c, 2], cfg):
            continue
        if best < 0 or cand[c, 1] > cand[best, 1]:
            best = c
    if best < 0:
        return n_out
    t_fid = int(cand[best, 0])
    n_out = _accept(st, it, hist, count, t_fid, cand[best, 1], cand[best, 2], out, n_out)
    m = 0
    for c in range(it[_N_CAND]):
        if cand[c, 0] > t_fid:
            cand[m, :] = cand[c, :]
            m += 1
    it[_N_CAND] = m
    return n_out


@njit(nogil=True, cache=True)
def _rr_limit(st, count, cfg):
    """Silence (samples) after which the search-back looks for a missed beat."""
    if count[_H_RR] == 0:
        return cfg[_C_SB_MAX]
    return min(cfg[_C_SB_RR] * st[_RR_MEAN], cfg[_C_SB_MAX])


@njit(nogil=True, cache=True)
def _on_peak(st, it, hist, count, cand, cfg, t_fid, amp, slope, out, n_out):
    """Classify one final envelope peak as beat, noise or (ignored) refractory echo."""
    last = it[_LAST_BEAT]
    since = t_fid - last if last >= 0 else 1 << 30
    if since < cfg[_C_REFRACTORY]:
        return n_out
    qrs_like = not (_t_wave_like(st, since, slope, cfg[_C_T_WAVE]) or _too_slow(st, slope, cfg))
    if amp > _threshold(st, cfg[_C_K]) and qrs_like:
        if last >= 0 and since > _rr_limit(st, count, cfg):
            n_out = _search_back(st, it, hist, count, cand, cfg, t_fid, t_fid, out, n_out)
        it[_N_CAND] = 0
        return _accept(st, it, hist, count, t_fid, amp, slope, out, n_out)
    _push(hist, count, _H_NOISE, amp)
    st[_NOISE_LEVEL] = _mean(hist, count, _H_NOISE)
    c = it[_N_CAND]
    if c < cand.shape[0]:
        cand[c, 0] = t_fid
        cand[c, 1] = amp
        cand[c, 2] = slope
        it[_N_CAND] = c + 1
    return n_out


@njit(nogil=True, cache=True)
def _silence_due(st, it, count, cfg):
    """First sample at which the silence rules (search-back, level decay) may apply."""
    lag, gd, learn = int(cfg[_C_LAG]), int(cfg[_C_GROUP_DELAY]), int(cfg[_C_LEARN])
    decay_after = int(cfg[_C_DECAY_AFTER])
    last = it[_LAST_BEAT]
    if last < 0:
        return learn + decay_after
    return last + lag + gd + min(int(_rr_limit(st, count, cfg)), decay_after)


@njit(nogil=True, cache=True)
def _silence(n, peak_t, st, it, hist, count, cand, cfg, out, n_out):
    """Search-back after 1.5 mean RR without a beat; halve the QRS level every
    ``decay_after / 3`` samples once ``decay_after`` has passed without one, and the slope
    reference likewise once ``slope_decay_after`` has passed (a real drop in QRS amplitude)."""
    learn, decay_after = cfg[_C_LEARN], cfg[_C_DECAY_AFTER]
    lag, gd = int(cfg[_C_LAG]), int(cfg[_C_GROUP_DELAY])
    decay_every = int(decay_after / 3 + 1)
    last = it[_LAST_BEAT]
    gap = n - lag - gd - last if last >= 0 else n - int(learn)
    if last >= 0 and gap > _rr_limit(st, count, cfg) and peak_t < 0 and it[_N_CAND]:
        n_out = _search_back(st, it, hist, count, cand, cfg, n - lag - gd, 1 << 62, out, n_out)
    if gap > decay_after and (gap - decay_after) % decay_every == 0:
        hist[_H_QRS, :] *= 0.5
        st[_QRS_LEVEL] = _median(hist, count, _H_QRS)
        if gap > cfg[_C_SLOPE_DECAY_AFTER]:
            hist[_H_SLOPE, :] *= 0.5
            st[_SLOPE_REF] = _median(hist, count, _H_SLOPE)
            st[_LAST_SLOPE] *= 0.5
    return n_out


@njit(nogil=True, cache=True)
def _end_learning(st, it, hist, count, cand, cfg, out, n_out):
    """Seed the QRS level from the largest peak of the learning period, then judge its peaks."""
    hist[_H_QRS, :] = st[_LEARN_MAX]
    count[_H_QRS] = hist.shape[1]
    st[_QRS_LEVEL] = st[_LEARN_MAX]
    seen = cand[: it[_N_CAND]].copy()
    it[_N_CAND] = 0
    for c in range(seen.shape[0]):
        n_out = _on_peak(st, it, hist, count, cand, cfg, int(seen[c, 0]), seen[c, 1], seen[c, 2], out, n_out)
    return n_out


@njit(nogil=True, cache=True)
def _run(x, sos, z, dh, ring, bring, st, it, hist, count, cand, cfg, out):
    """Run the whole detector over one chunk ``x``; returns (beats written to ``out``, bad samples).

    Per sample: bad-sample hold, the two band-pass biquads (direct form II transposed), the
    five-point derivative, |d| into the moving-window integral ``e``, then envelope peak tracking.
    The per-sample state lives in local variables for speed and is written back at the end; the
    decision rules run only when a peak is final or a silence deadline is reached.

    ``cfg`` = [refractory, t_wave, k, searchback_rr, searchback_max, peak_wait, learn, decay_after,
    lag, half_window, group_delay] with times in samples. ``cand`` rows are the sub-threshold peaks
    since the last beat: (fiducial, amplitude, slope).
    """
    wait, learn = int(cfg[_C_WAIT]), int(cfg[_C_LEARN])
    lag, half, gd = int(cfg[_C_LAG]), int(cfg[_C_HALF]), int(cfg[_C_GROUP_DELAY])
    b00, b01, b02, a01, a02 = sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5]
    b10, b11, b12, a11, a12 = sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5]
    z00, z01, z10, z11 = z[0], z[1], z[2], z[3]
    d0, d1, d2, d3 = dh[0], dh[1], dh[2], dh[3]
    L, H = ring.shape[0], bring.shape[0]
    n = it[_N]
    k_ring, k_bring = n % L, n % H
    mwi, held = st[_MWI_SUM], st[_HELD]
    peak_t, peak_val = it[_PEAK_T], st[_PEAK_VAL]
    due = _silence_due(st, it, count, cfg)
    n_out = 0
    n_bad = 0
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        if abs(v) <= MAX_ABS:  # False for NaN and inf as well
            held = v
        else:
            v = held
            n_bad += 1
        y = b00 * v + z00
        z00 = b01 * v - a01 * y + z01
        z01 = b02 * v - a02 * y
        w = b10 * y + z10
        z10 = b11 * y - a11 * w + z11
        z11 = b12 * y - a12 * w
        d = abs(2.0 * w + d3 - d1 - 2.0 * d0) / 8.0
        d0, d1, d2, d3 = d1, d2, d3, w
        mwi += d - ring[k_ring]
        ring[k_ring] = d
        k_ring = k_ring + 1 if k_ring + 1 < L else 0
        e = mwi / L
        bring[k_bring] = w
        k_bring = k_bring + 1 if k_bring + 1 < H else 0
        # Envelope peaks: follow the valley between peaks, start a peak when the envelope turns
        # up, finish it when it falls to half or after `wait` samples.
        if peak_t < 0:
            if e > peak_val:
                peak_t = n
            peak_val = e
        elif e > peak_val:
            peak_t = n
            peak_val = e
        elif e < 0.5 * peak_val or n - peak_t > wait:
            t_fid, slope = _fiducial(bring, n, peak_t, lag, half, gd)
            peak_t = -1
            if n < learn:
                st[_LEARN_MAX] = max(st[_LEARN_MAX], peak_val)
                c = it[_N_CAND]
                if c < cand.shape[0]:
                    cand[c, 0] = t_fid
                    cand[c, 1] = peak_val
                    cand[c, 2] = slope
                    it[_N_CAND] = c + 1
            else:
                n_out = _on_peak(st, it, hist, count, cand, cfg, t_fid, peak_val, slope, out, n_out)
                due = _silence_due(st, it, count, cfg)
        if n == learn and count[_H_QRS] == 0:
            n_out = _end_learning(st, it, hist, count, cand, cfg, out, n_out)
            due = _silence_due(st, it, count, cfg)
        if n > learn and n >= due:
            n_out = _silence(n, peak_t, st, it, hist, count, cand, cfg, out, n_out)
            due = _silence_due(st, it, count, cfg)
        n += 1
    z[0], z[1], z[2], z[3] = z00, z01, z10, z11
    dh[0], dh[1], dh[2], dh[3] = d0, d1, d2, d3
    it[_N], it[_PEAK_T] = n, peak_t
    st[_MWI_SUM], st[_HELD], st[_PEAK_VAL] = mwi, held, peak_val
    return n_out, n_bad


class QRSDetector:
    """Streaming single-lead QRS detector; see the module docstring for the method.

    >>> det = QRSDetector(fs=360.0)
    >>> beats = np.concatenate([det.process(chunk) for chunk in chunks] + [det.finish()])

    ``process`` takes a chunk of samples (1-D, or [samples, 1]) of any length, in physical units
    (the detector is scale-free), and returns the sample indices of the beats that became final.
    """

    def __init__(self, fs: float, params: QRSParams | None = None):
        self.fs = check_fs(fs)
        p = self.params = params or QRSParams()
        if fs < 2.2 * p.band_hz[1]:
            raise ValueError(f"fs = {fs:g} Hz is too low for QRS detection (needs >= {2.2 * p.band_hz[1]:g})")
        self.sos = design_bandpass(p.band_hz[0], p.band_hz[1], self.fs, order=2)
        assert self.sos.shape == (2, 6), "the fused kernel runs exactly two biquads"
        self._gd = int(round(sos_group_delay(self.sos, sum(p.band_hz) / 2, self.fs)))
        L = max(2, int(round(p.integration_s * fs)))
        s = lambda sec: float(round(sec * fs))  # noqa: E731
        lag = 2 + (L - 1) // 2
        half = int(round(0.5 * L)) + 1
        self._cfg = np.array(
            [
                s(p.refractory_s),
                s(p.t_wave_s),
                p.threshold_k,
                p.searchback_rr,
                s(p.searchback_max_s),
                s(p.peak_wait_s),
                s(p.learn_s),
                s(p.decay_after_s),
                lag,
                half,
                self._gd,
                p.min_slope,
                s(p.slope_decay_after_s),
            ]
        )
        self._zi = np.zeros(4)  # two biquads, two state values each
        self._dhist = np.zeros(4)
        self._ring = np.zeros(L)
        self._bring = np.zeros(lag + half + int(s(p.peak_wait_s)) + 8)
        self._st = np.zeros(9)
        self._it = np.zeros(4, dtype=np.int64)
        self._it[_LAST_BEAT] = -1
        self._it[_PEAK_T] = -1
        self._hist = np.zeros((4, _HIST))
        self._count = np.zeros(4, dtype=np.int64)
        self._cand = np.zeros((_MAX_CAND, 3))
        self._state = (
            self._zi,
            self._dhist,
            self._ring,
            self._bring,
            self._st,
            self._it,
            self._hist,
            self._count,
            self._cand,
        )  # in _run's argument order
        self.n_bad = 0
        self._closed = False

    @property
    def state_bytes(self) -> int:
        """Bytes of state the detector carries between chunks."""
        return sum(a.nbytes for a in self._state)

    @property
    def max_delay_s(self) -> float:
        """Worst-case delay between a beat and its report, search-back excluded."""
        c = self._cfg
        return (c[_C_WAIT] + c[_C_LAG] + c[_C_HALF] + c[_C_GROUP_DELAY]) / self.fs

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed a chunk; return the sample indices of beats that became final (int64, ascending)."""
        if self._closed:
            raise ValueError("QRSDetector.process after finish(): the stream has ended")
        a = as_signal(x)
        if a.shape[1] != 1:
            raise ValueError(f"QRSDetector takes one lead, got {a.shape[1]} channels")
        # at most two beats per sample (a search-back and a detection), plus the learning replay
        out = np.empty(2 * len(a) + 2 * _MAX_CAND, dtype=np.int64)
        n, n_bad = _run(a[:, 0], self.sos, *self._state, self._cfg, out)
        self.n_bad += n_bad
        return out[:n].copy()

    def finish(self) -> np.ndarray:
        """End the stream: settle a pending envelope peak and return the last beats.

        The detector is closed afterwards; start a new one for a new stream.
        """
        pad = int(self._cfg[_C_WAIT]) + 2
        n0 = int(self._it[_N])
        beats = self.process(np.full(pad, self._st[_HELD]))
        self._closed = True
        return beats[beats < n0]


def detect(x: np.ndarray, fs: float, params: QRSParams | None = None) -> np.ndarray:
    """Detect beats in a whole single-lead record; identical to streaming it through QRSDetector."""
    det = QRSDetector(fs, params)
    return np.concatenate([det.process(x), det.finish()])
