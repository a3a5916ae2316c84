"""Preprocessing "rhythm-strip/1": a single-lead ECG strip -> fixed-length network windows + RR features.

The rhythm network (``ecg-rhythm``) reads windows of ``window_s`` seconds at the model rate ``fs``
(100 Hz) and, beside each window, a vector of RR-interval features. Training (random crops) and the
runtime (sliding windows) both call the functions below, so the network always sees what it was
trained on. Plain numpy plus the project's own kernels; no torch, no scipy.

Steps (:func:`prepare_strip`, then :func:`cut_windows` at chosen starts):

1. **Bad samples**: non-finite or absurd samples (:data:`vigil.kernels.clean.MAX_ABS`) are held at the
   last good value (:func:`vigil.kernels.clean.hold_bad_samples`) and remembered; a window whose
   samples depend on any of them is *not classified* but counted (``n_skipped``). The strip's median
   is subtracted (a DC offset carries no rhythm and would ring at the ends).
2. **Resampling** to the model rate ``fs`` by a rational factor ``up / down`` with a linear-phase
   windowed-sinc anti-alias filter (:func:`resample_poly`, equal to ``scipy.signal.resample_poly``):
   any device rate is accepted, and the in-band signal does not depend on it (60 Hz mains, which a
   100 Hz grid would fold onto 40 Hz, is 56 dB down).
3. **Band-pass** 0.5-40 Hz (Butterworth, 2 poles per edge,
   :func:`~vigil.kernels.filters.design_bandpass`) at the model rate, causal, started at the step
   steady state (:class:`~vigil.kernels.filters.SOSFilter`): one filter for every device.
4. **Beats**: Vigil's own QRS detector (:func:`vigil.kernels.qrs.detect`) on the whole resampled strip.
5. **Windows** (:func:`cut_windows`): ``window_s`` seconds from each start; a strip shorter than one
   window is zero-padded at the end. Each window is centred on its median and divided by its
   typical R amplitude (median over 2-s blocks of the block's largest ``|x|``), then compressed
   by ``asinh(x / knee)`` (linear below ``knee`` R amplitudes, logarithmic above) and clipped to
   ``+-clip``. The compression is for INT8: with a linear scale, one INT8 step of an input ranging
   over QRS peaks and artefacts is a large fraction of a P wave or of AF's fibrillatory waves, and
   the network's decisions moved with that rounding; compressed, small waves span many steps.
6. **RR features** (:func:`rr_features`) of the beats inside each window: heart rate, dispersion
   (CV, RMSSD, pNN50 relative to the mean RR), COSEn (Lake & Moorman, from
   :func:`vigil.kernels.rhythm.hrv`), extremes of RR, the share of large successive changes and how
   much of the window the beats cover (low for noise or lead-off). Each is scaled to about unit
   range and clipped.

:func:`strip_windows` is the runtime entry for a recorded strip: sliding windows with ``hop_s`` hop plus
one window aligned with the strip's end, so every sample is seen; the network's outputs are combined
over them (:func:`record_probabilities`). :func:`windows_from_signal` is the entry for live streams:
the last ``window_s`` seconds of each of a batch of buffers (one per device), each prepared on its
own, one window per buffer.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np
from numba import njit

from .clean import MAX_ABS, hold_bad_samples
from .filters import SOSFilter, design_bandpass
from .qrs import detect
from .rhythm import hrv
from .validate import as_signal, check_fs

PREPROCESSING_ID = "rhythm-strip/1"

#: Names of the RR features, in the order of :func:`rr_features`' output.
RR_FEATURES = (
    "has_beats",  # >= MIN_BEATS beats in the window (else every other feature is 0)
    "hr_100bpm",  # 60 / mean RR, in units of 100 bpm
    "cv_rr",  # SDNN / mean RR
    "rmssd_rel",  # RMSSD / mean RR
    "pnn50",  # fraction of successive differences > 50 ms
    "cosen_rel",  # COSEn + 1.4 (> 0 suggests AF), 0 when undefined
    "has_cosen",  # COSEn defined (>= 12 RR intervals)
    "min_rr_rel",  # shortest RR / mean RR
    "max_rr_rel",  # longest RR / mean RR
    "med_drr_rel",  # median |successive difference| / mean RR
    "big_drr",  # fraction of successive differences > 15 % of the mean RR
    "coverage",  # (last beat - first beat) / window length
    "max_rr_s",  # longest RR (s) / 2
)
MIN_BEATS = 4
_CLIP = 5.0
_AF_COSEN = -1.4


@dataclass(frozen=True)
class StripParams:
    """Parameters of "rhythm-strip/1" (stored in the model card's ``preprocessing``)."""

    fs: float = 100.0  # model rate (Hz)
    window_s: float = 10.0
    hop_s: float = 2.5
    band_hz: tuple[float, float] = (0.5, 40.0)
    knee: float = 0.25  # asinh compression knee (multiples of the R amplitude)
    clip: float = 5.0  # limit of the compressed window

    @property
    def window(self) -> int:
        """Window length in samples at the model rate."""
        return int(round(self.window_s * self.fs))

    @property
    def hop(self) -> int:
        return max(1, int(round(self.hop_s * self.fs)))

    def to_card(self) -> dict[str, object]:
        return {
            "id": PREPROCESSING_ID,
            "fs": self.fs,
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "band_hz": list(self.band_hz),
            "knee": self.knee,
            "clip": self.clip,
            "rr_features": list(RR_FEATURES),
        }

    @classmethod
    def from_card(cls, pre: dict[str, object]) -> StripParams:
        """The parameters a card's ``preprocessing`` names (``ValueError`` for another id)."""
        if pre.get("id") != PREPROCESSING_ID:
            raise ValueError(f"preprocessing {pre.get('id')!r} is not {PREPROCESSING_ID}")
        if list(pre.get("rr_features", RR_FEATURES)) != list(RR_FEATURES):
            raise ValueError("the card's RR features differ from this build's rhythm-strip/1")
        return cls(
            fs=float(pre["fs"]),
            window_s=float(pre["window_s"]),
            hop_s=float(pre["hop_s"]),
            band_hz=tuple(float(v) for v in pre["band_hz"]),
            knee=float(pre["knee"]),
            clip=float(pre["clip"]),
        )


@dataclass(frozen=True)
class Strip:
    """A strip at the model rate: filtered signal, bad-sample counts and detected beats."""

    x: np.ndarray  # float64 [n], band-passed, at params.fs
    bad_cum: np.ndarray  # int64 [n_in + 1], cumulative count of bad input samples
    fs_in: float
    beats: np.ndarray  # int64 beat sample indices at params.fs
    params: StripParams
    margin: int  # input samples either side of an output sample that the anti-alias filter reads

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class StripWindows:
    """The windows of a strip: network inputs of the classified ones, and how many were skipped."""

    ecg: np.ndarray  # float32 [n, 1, window], classified windows only
    rr: np.ndarray  # float32 [n, len(RR_FEATURES)]
    start: np.ndarray  # int64 [n], window starts (samples at params.fs)
    n_windows: int  # windows cut (classified + skipped)
    n_skipped: int  # windows not classified: they overlap NaN / absurd samples

    def inputs(self) -> dict[str, np.ndarray]:
        """The network's input mapping (``{"ecg": ..., "rr": ...}``)."""
        return {"ecg": self.ecg, "rr": self.rr}


def band_pass(params: StripParams) -> np.ndarray:
    """SOS of the band-pass, designed at the model rate (the same filter whatever the device)."""
    low, high = params.band_hz
    return design_bandpass(low, min(high, 0.45 * params.fs), params.fs)


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``x`` resampled by ``up / down`` with a linear-phase anti-alias FIR, as
    ``scipy.signal.resample_poly(x, up, down)`` (its default Kaiser window, beta 5, 20 max(up, down) + 1
    taps, cut-off at the lower Nyquist rate); output sample ``m`` lies at input time ``m down / up``:

        y[m] = sum_j x[j] h[m down - j up + L],   h = up * normalised(sinc(c k) kaiser(k)),  |k| <= L

    with ``c = 1 / max(up, down)`` and ``L = 10 max(up, down)``; samples beyond the ends count as 0.
    """
    g = math.gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    x = np.asarray(x, dtype=np.float64)
    if up == down:
        return x.copy()
    half = 10 * max(up, down)
    return _polyphase(np.ascontiguousarray(x), _anti_alias(up, down), up, down, half, -(-len(x) * up // down))


@functools.lru_cache(maxsize=32)
def _anti_alias(up: int, down: int) -> np.ndarray:
    """The FIR ``h`` of :func:`resample_poly` (designed once per ratio: the design costs more than the
    filtering of a 10-s buffer)."""
    half = 10 * max(up, down)
    k = np.arange(-half, half + 1)
    c = 1.0 / max(up, down)
    h = c * np.sinc(c * k) * np.kaiser(2 * half + 1, 5.0)
    h *= up / h.sum()
    h.flags.writeable = False
    return h


@njit(cache=True, nogil=True)
def _polyphase(x: np.ndarray, h: np.ndarray, up: int, down: int, half: int, n_out: int) -> np.ndarray:
    """``y[m] = sum_j x[j] h[m down - j up + half]`` over the inputs ``j`` under the filter
    (``|m down - j up| <= half``, ``0 <= j < len(x)``): the FIR applied only where the upsampled
    signal is non-zero and only at the kept outputs."""
    y = np.zeros(n_out)
    for m in range(n_out):
        c = m * down
        j0 = max(0, -((half - c) // up))  # ceil((c - half) / up)
        j1 = min(len(x) - 1, (c + half) // up)
        acc = 0.0
        for j in range(j0, j1 + 1):
            acc += x[j] * h[c - j * up + half]
        y[m] = acc
    return y


def rate_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """``(up, down)`` with ``up / down`` = ``fs_out / fs_in`` (to 1 part in 10^4 or better)."""
    q = Fraction(fs_out / fs_in).limit_denominator(1000)
    if abs(q.numerator / q.denominator * fs_in - fs_out) > 1e-4 * fs_out:
        raise ValueError(f"cannot resample {fs_in:g} Hz to {fs_out:g} Hz by a ratio of small integers")
    return q.numerator, q.denominator


def prepare_strip(x: np.ndarray, fs: float, params: StripParams | None = None) -> Strip:
    """Clean, resample, band-pass and detect beats on a whole strip (steps 1-4 of the module doc)."""
    p = params or StripParams()
    fs_in = check_fs(fs)
    a = as_signal(x, dtype=np.float64)
    if a.shape[1] != 1:
        raise ValueError(f"a rhythm strip has one lead, got {a.shape[1]} channels")
    bad = ~(np.abs(a[:, 0]) <= MAX_ABS)  # True for NaN too
    bad_cum = np.concatenate([[0], np.cumsum(bad)]).astype(np.int64)
    held = np.empty_like(a)
    first_good = a[~bad, 0][:1]
    hold_bad_samples(a, first_good.copy() if len(first_good) else np.zeros(1), held, np.empty(a.shape, bool))
    y = held[:, 0] - (np.median(a[~bad, 0]) if (~bad).any() else 0.0)
    xs = resample_poly(y, *rate_ratio(fs_in, p.fs))
    xs = SOSFilter(band_pass(p), 1, init="step").process(xs)[:, 0]
    beats = detect(xs, p.fs) if len(xs) else np.empty(0, dtype=np.int64)
    margin = int(math.ceil(10 * max(1.0, fs_in / p.fs)))  # resample_poly's half length, input samples
    return Strip(xs, bad_cum, fs_in, np.asarray(beats, dtype=np.int64), p, margin)


def normalise(w: np.ndarray, n_valid: int, fs: float, knee: float, clip: float) -> np.ndarray:
    """Window ``w`` centred on the median of its first ``n_valid`` samples, divided by its typical
    R amplitude (median over 2-s blocks of the block max ``|x|``), compressed by ``asinh(x / knee)``
    and clipped to ``+-clip``; the padding after ``n_valid`` is zero."""
    v = w[:n_valid]
    out = np.zeros(len(w), dtype=np.float64)
    if n_valid == 0:
        return out
    c = v - np.median(v)
    block = max(1, int(round(2.0 * fs)))
    nb = max(1, n_valid // block)
    peaks = np.abs(c[: nb * block]).reshape(nb, -1).max(axis=1) if n_valid >= block else np.abs(c).max()[None]
    scale = float(np.median(peaks))
    if not scale > 1e-9:
        scale = 1.0
    out[:n_valid] = np.clip(np.arcsinh(c / (scale * knee)), -clip, clip)
    return out


def rr_features(beats: np.ndarray, n_samples: int, fs: float) -> np.ndarray:
    """The :data:`RR_FEATURES` of ``beats`` (sample indices within a window of ``n_samples``)."""
    f = np.zeros(len(RR_FEATURES), dtype=np.float64)
    b = np.asarray(beats, dtype=np.int64)
    if len(b) < MIN_BEATS:
        return f.astype(np.float32)
    rr = np.diff(b) / fs
    mean = rr.mean()
    d = np.diff(rr)
    h = hrv(b, fs)
    f[0] = 1.0
    f[1] = 60.0 / mean / 100.0
    f[2] = rr.std(ddof=1) / mean
    f[3] = math.sqrt(np.mean(d**2)) / mean if len(d) else 0.0
    f[4] = np.mean(np.abs(d) > 0.050) if len(d) else 0.0
    if np.isfinite(h.cosen):
        f[5], f[6] = h.cosen - _AF_COSEN, 1.0
    f[7] = rr.min() / mean
    f[8] = rr.max() / mean
    f[9] = np.median(np.abs(d)) / mean if len(d) else 0.0
    f[10] = np.mean(np.abs(d) > 0.15 * mean) if len(d) else 0.0
    f[11] = (b[-1] - b[0]) / n_samples
    f[12] = rr.max() / 2.0
    return np.clip(f, -_CLIP, _CLIP).astype(np.float32)


def window_starts(n: int, params: StripParams) -> np.ndarray:
    """Sliding-window starts over a strip of ``n`` samples: every ``hop`` plus one window ending at
    the strip's end (a single start 0 for a strip shorter than a window)."""
    w, hop = params.window, params.hop
    if n <= w:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n - w + 1, hop, dtype=np.int64)
    if starts[-1] != n - w:
        starts = np.append(starts, n - w)
    return starts


def _bad_in(strip: Strip, a: int, b: int) -> bool:
    """Whether input samples that the model-rate samples ``[a, b)`` depend on include bad ones."""
    r = strip.fs_in / strip.params.fs
    lo = max(0, int(math.floor(a * r)) - strip.margin)
    hi = min(len(strip.bad_cum) - 1, int(math.ceil((b - 1) * r)) + 1 + strip.margin)
    return bool(strip.bad_cum[hi] - strip.bad_cum[lo] > 0) if hi > lo else False


def cut_windows(strip: Strip, starts: np.ndarray) -> StripWindows:
    """Normalised windows and RR features at ``starts``; windows over bad samples are skipped."""
    p = strip.params
    w = p.window
    n = len(strip.x)
    keep, ecg, rr = [], [], []
    skipped = 0
    for s in np.asarray(starts, dtype=np.int64):
        s = int(s)
        e = min(s + w, n)
        if s < 0 or s >= max(n, 1):
            raise ValueError(f"window start {s} outside the strip of {n} samples")
        if _bad_in(strip, s, e):
            skipped += 1
            continue
        seg = np.zeros(w)
        seg[: e - s] = strip.x[s:e]
        ecg.append(normalise(seg, e - s, p.fs, p.knee, p.clip))
        inside = strip.beats[(strip.beats >= s) & (strip.beats < e)] - s
        rr.append(rr_features(inside, e - s, p.fs))
        keep.append(s)
    k = len(keep)
    return StripWindows(
        ecg=np.asarray(ecg, dtype=np.float32).reshape(k, 1, w),
        rr=np.asarray(rr, dtype=np.float32).reshape(k, len(RR_FEATURES)),
        start=np.asarray(keep, dtype=np.int64),
        n_windows=len(starts),
        n_skipped=skipped,
    )


def strip_windows(x: np.ndarray, fs: float, params: StripParams | None = None) -> StripWindows:
    """The runtime entry: a whole strip at the device rate ``fs`` -> sliding network windows."""
    strip = prepare_strip(x, fs, params)
    return cut_windows(strip, window_starts(len(strip), strip.params))


class SignalWindows(NamedTuple):
    """One network window per buffer of :func:`windows_from_signal` (row ``i`` is buffer ``i``)."""

    ecg: np.ndarray  # float32 [n, 1, window]; zero where not ok
    rr: np.ndarray  # float32 [n, len(RR_FEATURES)]; zero where not ok
    ok: np.ndarray  # bool [n]: False where the window overlaps NaN / absurd samples (count, don't classify)

    def inputs(self) -> dict[str, np.ndarray]:
        """The network's input mapping for the classifiable rows only (``ok``)."""
        return {"ecg": self.ecg[self.ok], "rr": self.rr[self.ok]}


def windows_from_signal(x: np.ndarray, fs: float, params: StripParams | None = None) -> SignalWindows:
    """The live-stream entry: the last ``window_s`` seconds of each buffer -> one network window each.

    ``x`` is ``[n, samples]`` (e.g. each device's ring buffer of the last 10 s, all at ``fs`` Hz) or one
    1-D buffer (``n = 1``). Each row goes through :func:`prepare_strip` on its own and the window that
    ends with the row is cut (:func:`cut_windows`); a row shorter than a window is zero-padded at the
    end, like a short strip. A longer row (a few seconds more than the window) lets the band-pass and
    the QRS detector settle before the window starts. Rows whose window depends on bad samples come
    back with ``ok`` False and zero inputs."""
    p = params or StripParams()
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"x must be [buffers, samples] or [samples], got shape {a.shape}")
    n, w, k = len(a), p.window, len(RR_FEATURES)
    ecg, rr, ok = np.zeros((n, 1, w), np.float32), np.zeros((n, k), np.float32), np.zeros(n, bool)
    for i, row in enumerate(a):
        strip = prepare_strip(row, fs, p)
        win = cut_windows(strip, np.array([max(0, len(strip) - w)]))
        if len(win.ecg):
            ecg[i], rr[i], ok[i] = win.ecg[0], win.rr[0], True
    return SignalWindows(ecg, rr, ok)


def record_probabilities(scores: np.ndarray) -> np.ndarray:
    """A strip's class probabilities from its windows' network scores (logits ``[windows, classes]``):
    the softmax of the windows' mean logits, i.e. the normalised geometric mean of the windows'
    probabilities (each window's evidence multiplies; one confident window does not outvote many).
    NaN for a strip without classified windows."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be [windows, classes], got shape {s.shape}")
    if len(s) == 0:
        return np.full(s.shape[1], np.nan)
    m = s.mean(axis=0)
    e = np.exp(m - m.max())
    return e / e.sum()
