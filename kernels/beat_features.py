"""Beat windows and RR context for the beat classifier: preprocessing ``beat-window/1`` (numpy).

The network that labels heartbeats (AAMI classes N, S, V, F, Q) sees each detected beat as

* ``beat`` [2, n]: channel 0 is the beat's window, channel 1 the patient's *template*: the
  sample-wise median of the windows of the patient's last ``template_beats`` *dominant* beats
  (beats not premature: pre-RR >= ``template_gate`` x local mean RR), so frequent ectopic beats
  (bigeminy, runs) do not turn the template into an ectopic beat;
* ``rr`` [8]: RR context normalised by the patient's own rhythm (de Chazal et al. 2004), as
  logarithms of ratios, plus two irregularity measures (see :data:`RR_FEATURES`).

Both are computed causally from the raw lead (any unit-consistent scale, mV expected) at the
device's rate ``fs``:

1. the causal ECG band-pass of :mod:`vigil.kernels.filters` (0.5-40 Hz Butterworth, as
   ``design_default("ecg", fs)``), run as one :class:`~vigil.kernels.filters.SOSFilter`;
2. a window from ``-pre/fs_model`` to ``+(n - pre - 1)/fs_model`` seconds around the detected beat
   (``-0.3125 .. +0.4375 s``, 96 samples at 128 Hz by default), taken by linear interpolation at the
   model's rate after a centred moving average of the odd length nearest ``fs / fs_model`` (a cheap
   anti-alias), so any device rate (250, 360, 500 Hz) feeds the same network;
3. the window minus its median, divided by the median QRS amplitude (peak-to-peak within
   +-0.1 s of the beat) of the patient's last ``amplitude_beats`` dominant beats, clipped to
   +-:data:`CLIP`: morphology relative to this patient's own beats, not to a population's;
   optionally mu-law companded (:func:`compand`, ``compand_mu > 0``; off by default: in the
   ``ecg-beats`` leave-records-out validation it lowered V sensitivity and +P);
4. the RR features, from the detected beat times.

Delay: a beat is emitted once its window has ended *and* the next beat has been detected (its
post-RR is a feature), i.e. one beat plus the detector's own delay after the R wave.

Bad input: a window touching a non-finite (or absurd, see :mod:`vigil.kernels.clean`) sample, a
window whose QRS amplitude is under :data:`MIN_AMPLITUDE` (flat line: lead off), a window reaching
before the stream's start or out of the buffer, the stream's first beat (no pre-RR) and its last
(no post-RR) are emitted with ``valid = False`` and counted by reason in :attr:`BeatWindows.invalid`;
the caller must not classify them. Invalid windows never enter the amplitude or template history;
RR history uses every detected beat.

Streaming: :class:`BeatWindows` keeps explicit state (a ring of filtered samples, the pending beats,
the histories); feeding a record chunk by chunk gives exactly the batch result of
:func:`beat_inputs`, because every beat is computed from the same samples and histories in beat
order whenever it becomes ready.

Labelling for training and scoring (EC57): :func:`pair_beats` pairs detections with reference beats
exactly as :func:`vigil.kernels.beat_match.match_beats` does (150 ms, one to one);
:func:`aami_class` maps MIT-BIH symbols to AAMI classes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from .clean import MAX_ABS
from .filters import SOSFilter, design_bandpass
from .validate import as_signal, check_fs

PREPROCESSING_ID = "beat-window/1"
CLASSES = ("N", "S", "V", "F", "Q")
#: AAMI EC57 classes of the MIT-BIH beat symbols (paced records are excluded from training).
AAMI = {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F", "Q": "/fQ"}
_SYMBOL_CLASS = {s: i for i, c in enumerate(CLASSES) for s in AAMI[c]}
#: The ``rr`` input, in order. Local = mean of the 8 RR intervals before this beat's pre-RR; long =
#: running mean of all RR intervals so far, becoming an exponential mean over ``long_rr_beats``.
RR_FEATURES = (
    "log(pre_rr/local_rr)",
    "log(post_rr/local_rr)",
    "log(local_rr/long_rr)",
    "log(pre_rr/long_rr)",  # prematurity against the long-term rhythm: beats inside runs (SVTA)
    "log(post_rr/long_rr)",
    "log(pre_rr/previous_rr)",
    "mean|dRR|/local_rr",  # irregularity of the recent rhythm (AF, sinus arrhythmia)
    "median|dRR|/median_rr",  # robust irregularity over the last af_beats RR (high in AF, not for PACs)
)
#: Ratios enter as logarithms (0 for a beat on time, symmetric for early and late, well scaled for a
#: network). No absolute interval (seconds) is an input: a patient's resting rate is not a property of
#: the beat, and absolute RR let a network learn "fast patient -> S" from the few records with SVTA runs.
CLIP = 6.0  # normalised window values are clipped to +-CLIP (artefacts must not set INT8 ranges)
RR_RATIO = (0.05, 5.0)  # ratios are clipped to this range before the logarithm
RR_CLIP = 5.0  # irregularity features are clipped to [0, RR_CLIP]
MIN_AMPLITUDE = 0.01  # QRS peak-to-peak (input units, mV) under which a window is flat: not classified
INVALID_REASONS = ("bad_samples", "flat", "edge", "first_beat", "no_next_beat")


@dataclass(frozen=True)
class BeatWindowParams:
    """Parameters of ``beat-window/1``; stored in the model card's ``preprocessing`` dict."""

    fs: float = 128.0  # the model's rate (Hz); the device's rate is the caller's
    samples: int = 96  # window length at ``fs``
    pre: int = 40  # samples before the beat's fiducial point
    band_hz: tuple[float, float] = (0.5, 40.0)
    qrs_s: float = 0.1  # half-width of the QRS region used for the amplitude
    amplitude_beats: int = 16
    template_beats: int = 16
    local_rr_beats: int = 8
    af_beats: int = 16
    template_gate: float = 0.9  # only beats with pre-RR >= gate * local RR update amplitude and template
    compand_mu: float = 0.0  # mu-law companding of the normalised windows (0: none)
    long_rr_beats: int = 256

    def __post_init__(self) -> None:
        check_fs(self.fs)
        if not 0 < self.pre < self.samples:
            raise ValueError(f"pre must lie in (0, samples), got pre={self.pre}, samples={self.samples}")
        if min(self.amplitude_beats, self.template_beats, self.local_rr_beats, self.long_rr_beats) < 1:
            raise ValueError("history lengths must be >= 1")
        if self.af_beats < 3:
            raise ValueError("af_beats must be >= 3")

    def card(self) -> dict[str, Any]:
        """The card's ``preprocessing`` dict (``id`` and ``fs`` first)."""
        d = asdict(self)
        d["band_hz"] = list(self.band_hz)
        return {
            "id": PREPROCESSING_ID,
            **d,
            "rr_features": list(RR_FEATURES),
            "channels": ["beat", "template"],
        }

    @classmethod
    def from_card(cls, pre: dict[str, Any]) -> BeatWindowParams:
        """Parameters from a card's ``preprocessing`` dict; ``ValueError`` for another preprocessing
        or RR feature list this code does not compute."""
        if pre.get("id") != PREPROCESSING_ID:
            raise ValueError(f"preprocessing {pre.get('id')!r} is not {PREPROCESSING_ID}")
        if list(pre.get("rr_features", RR_FEATURES)) != list(RR_FEATURES):
            raise ValueError(f"card's rr_features {pre.get('rr_features')} differ from {list(RR_FEATURES)}")
        keys = cls.__dataclass_fields__
        kw = {k: v for k, v in pre.items() if k in keys}
        if "band_hz" in kw:
            kw["band_hz"] = tuple(float(b) for b in kw["band_hz"])
        return cls(**kw)


@dataclass
class BeatBatch:
    """Beats emitted by one call: fiducial sample index (device rate), network inputs, validity."""

    sample: np.ndarray  # int64 [m]
    beat: np.ndarray  # float32 [m, 2, samples]
    rr: np.ndarray  # float32 [m, len(RR_FEATURES)]
    valid: np.ndarray  # bool [m]

    def __len__(self) -> int:
        return len(self.sample)

    @staticmethod
    def concat(parts: list[BeatBatch], p: BeatWindowParams) -> BeatBatch:
        if not parts:
            return BeatBatch(
                np.zeros(0, np.int64),
                np.zeros((0, 2, p.samples), np.float32),
                np.zeros((0, len(RR_FEATURES)), np.float32),
                np.zeros(0, bool),
            )
        if len(parts) == 1:
            return parts[0]
        return BeatBatch(*(np.concatenate([getattr(b, f) for b in parts]) for f in BeatBatch.__annotations__))


def anti_alias_length(fs: float, fs_model: float) -> int:
    """Odd moving-average length nearest ``fs / fs_model`` (1 when the device is not faster)."""
    r = fs / fs_model
    return max(1, 2 * int(np.floor((r - 1) / 2 + 0.5)) + 1) if r > 1 else 1


@dataclass
class _Pending:
    t: int
    window: np.ndarray | None = None  # raw band-passed window at the model rate, float64
    reason: str | None = None  # why it cannot be classified (set once known)


@dataclass
class _History:
    """Per-patient running state: amplitudes, templates, RR intervals."""

    amps: deque = field(default_factory=deque)
    templates: np.ndarray | None = None  # ring of the last dominant windows [template_beats, samples]
    n_templates: int = 0  # windows written so far (the ring holds min(n, template_beats) of them)
    rrs: deque = field(default_factory=deque)
    long_rr: float = 0.0
    n_rr: int = 0
    last_t: int = -1


class BeatWindows:
    """Streaming ``beat-window/1`` for one lead at device rate ``fs``; see the module docstring.

    >>> bw = BeatWindows(fs=360.0)
    >>> out = [bw.process(chunk, det.process(chunk)) for chunk in chunks] + [bw.finish()]

    ``process(chunk, beats)`` takes the next samples of the raw lead and the beats the detector
    reported for them (absolute sample indices, increasing, at most the samples seen so far; the
    detector may report them late) and returns the beats that became ready, in order.
    """

    def __init__(self, fs: float, params: BeatWindowParams | None = None, buffer_s: float = 8.0) -> None:
        self.fs = check_fs(fs)
        p = self.params = params or BeatWindowParams()
        # == design_default("ecg", fs) for the default band
        sos = design_bandpass(p.band_hz[0], min(p.band_hz[1], 0.45 * self.fs), self.fs)
        self._filter = SOSFilter(sos, 1)
        self._ratio = self.fs / p.fs
        self._box = anti_alias_length(self.fs, p.fs)
        half = self._box // 2
        offs = (np.arange(p.samples) - p.pre) * self._ratio
        self._offsets = offs  # window sample times relative to the beat, device samples
        self._span = (int(np.floor(offs[0])) - half - 1, int(np.ceil(offs[-1])) + half + 1)
        self._ring_len = int(np.ceil(buffer_s * self.fs)) + (self._span[1] - self._span[0]) + 1
        self._step = max(1, int(self.fs))  # sub-chunk length: beats wait at most this long
        self._ring = np.zeros(self._ring_len)
        self._bad = np.zeros(self._ring_len, dtype=bool)
        self._n = 0  # samples seen
        self._queue: deque[_Pending] = deque()
        self._hist = _History()
        self._qrs = np.abs(np.arange(p.samples) - p.pre) <= p.qrs_s * p.fs
        self.invalid = dict.fromkeys(INVALID_REASONS, 0)
        self.emitted = 0

    # -- stream ---------------------------------------------------------------------------------
    def process(self, chunk: np.ndarray, beats: np.ndarray | list[int] = ()) -> BeatBatch:
        """Feed raw samples and newly detected beats; return the beats that became ready."""
        x = as_signal(chunk, "chunk", dtype=np.float64)
        if x.shape[1] != 1:
            raise ValueError(f"BeatWindows takes one lead, got {x.shape[1]} channels")
        x = x[:, 0]
        beats = np.asarray(beats, dtype=np.int64).ravel()
        end = self._n + len(x)
        last = self._queue[-1].t if self._queue else self._hist.last_t
        if len(beats) and (np.any(np.diff(beats) <= 0) or beats[0] <= last or beats[-1] >= end):
            raise ValueError("beats must increase, follow the previous ones and lie within the samples seen")
        self._queue.extend(_Pending(int(t)) for t in beats)
        out: list[BeatBatch] = []
        for a in range(0, len(x), self._step):
            self._write(x[a : a + self._step])
            self._extract_ready()
            out.append(self._emit_ready())
        if not len(x):
            self._extract_ready()
            out.append(self._emit_ready())
        return BeatBatch.concat(out, self.params)

    def finish(self) -> BeatBatch:
        """End of stream: the beats still waiting (no next beat, or window unfinished) come out invalid."""
        parts = []
        while self._queue:
            b = self._queue[0]
            if b.reason is None:
                b.reason = "no_next_beat" if b.window is not None else "edge"
            parts.append(self._emit(b, None))
            self._queue.popleft()
        return BeatBatch.concat(parts, self.params)

    # -- internals ------------------------------------------------------------------------------
    def _write(self, x: np.ndarray) -> None:
        bad = ~(np.abs(x) <= MAX_ABS)
        y = self._filter.process(x)[:, 0]
        idx = (self._n + np.arange(len(x))) % self._ring_len
        self._ring[idx] = y
        self._bad[idx] = bad
        self._n += len(x)

    def _extract_ready(self) -> None:
        lo_off, hi_off = self._span
        for b in self._queue:
            if b.window is not None or b.reason is not None:
                continue
            lo, hi = b.t + lo_off, b.t + hi_off
            if hi >= self._n:
                break  # later beats end later still
            if lo < 0 or lo < self._n - self._ring_len:
                b.reason = "edge"
                continue
            idx = np.arange(lo, hi + 1) % self._ring_len
            if self._bad[idx].any():
                b.reason = "bad_samples"
                continue
            seg = self._ring[idx]
            if self._box > 1:
                seg = np.convolve(seg, np.full(self._box, 1.0 / self._box), mode="same")
            b.window = np.interp(b.t + self._offsets, np.arange(lo, hi + 1, dtype=np.float64), seg)

    def _emit_ready(self) -> BeatBatch:
        parts = []
        while len(self._queue) >= 2:
            b = self._queue[0]
            if b.window is None and b.reason is None:
                break
            parts.append(self._emit(b, self._queue[1].t))
            self._queue.popleft()
        return BeatBatch.concat(parts, self.params)

    def _emit(self, b: _Pending, next_t: int | None) -> BeatBatch:
        p, h = self.params, self._hist
        beat = np.zeros((1, 2, p.samples), np.float32)
        rr = np.zeros((1, len(RR_FEATURES)), np.float32)
        reason = b.reason
        pre = (b.t - h.last_t) / self.fs if h.last_t >= 0 else 0.0
        local = _mean(list(h.rrs)[-p.local_rr_beats :]) if h.rrs else pre
        dominant = pre >= p.template_gate * local  # not premature: likely the patient's dominant beat
        if b.window is not None:
            w = b.window - _median(b.window.tolist())
            amp = float(np.ptp(w[self._qrs]))
            if amp < MIN_AMPLITUDE:
                reason = reason or "flat"
            else:
                if dominant:
                    _push(h.amps, amp, p.amplitude_beats)
                z = np.clip(w / float(_median(h.amps) if h.amps else amp), -CLIP, CLIP)
                if dominant:
                    if h.templates is None:
                        h.templates = np.empty((p.template_beats, p.samples))
                    h.templates[h.n_templates % p.template_beats] = z
                    h.n_templates += 1
                held = min(h.n_templates, p.template_beats)
                beat[0, 0] = compand(z, p.compand_mu)
                beat[0, 1] = compand(_column_median(h.templates[:held]) if held else z, p.compand_mu)
        if h.last_t < 0:
            reason = reason or "first_beat"
        else:
            if reason is None and next_t is not None:
                rr[0] = _rr_features(pre, (next_t - b.t) / self.fs, h, p)
            _update_rr(h, pre, p)
        if reason is None and next_t is None:
            reason = "no_next_beat"
        h.last_t = b.t
        valid = reason is None
        if not valid:
            self.invalid[reason] += 1
            beat[:] = 0.0
            rr[:] = 0.0
        self.emitted += 1
        return BeatBatch(np.array([b.t], np.int64), beat, rr, np.array([valid]))


def compand(z: np.ndarray, mu: float) -> np.ndarray:
    """mu-law companding of values in [-CLIP, CLIP] onto the same range: ``sign(z) CLIP ln(1 + mu |z|) /
    ln(1 + mu CLIP)``. Small deflections (P waves, ~0.1 of the QRS) are spread over many more of an INT8
    input's 255 levels (about 7x finer at mu = 8), large ones (QRS, PVCs) compressed; monotone, so no
    morphology is lost. ``mu = 0``: identity."""
    if mu <= 0:
        return z
    return np.sign(z) * CLIP * np.log1p(mu * np.abs(z)) / np.log1p(mu * CLIP)


def _median(values: Any) -> float:
    """``np.median`` of a short 1-D sequence, bit for bit (the middle value, or the mean of the two
    middle ones as ``(a + b) / 2``), without numpy's per-call overhead: a beat takes four of them."""
    s = sorted(values)
    n = len(s)
    m = n // 2
    return float(s[m]) if n % 2 else (s[m - 1] + s[m]) / 2


def _mean(values: list[float]) -> float:
    """``np.mean`` of a short list of floats, bit for bit, without numpy's per-call overhead: numpy sums
    fewer than 8 values in order from 0, and up to 128 in 8 interleaved partial sums combined as a
    tree (its pairwise summation), then divides by the count."""
    n = len(values)
    if n > 128:
        return float(np.mean(values))
    if n < 8:
        s = 0.0
        for v in values:
            s += v
        return s / n
    r = list(values[:8])
    i = 8
    while i + 8 <= n:
        for j in range(8):
            r[j] += values[i + j]
        i += 8
    s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for v in values[i:]:
        s += v
    return s / n


def _column_median(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=0)`` of finite rows, bit for bit (the middle row of each column, or the
    mean of the two middle ones), without its per-call overhead; the order of the rows is irrelevant."""
    n = len(a)
    m = n // 2
    if n % 2:
        return np.partition(a, m, axis=0)[m]
    part = np.partition(a, (m - 1, m), axis=0)
    return (part[m - 1] + part[m]) / 2


def _push(d: deque, v: Any, n: int) -> None:
    d.append(v)
    while len(d) > n:
        d.popleft()


def _rr_features(pre: float, post: float, h: _History, p: BeatWindowParams) -> np.ndarray:
    """RR features of a beat from its pre/post RR (s) and the history *before* its pre-RR."""
    hist = list(h.rrs) if h.rrs else [pre]
    recent = hist[-p.local_rr_beats :]
    local = _mean(recent)
    long = h.long_rr if h.n_rr else local
    prev = recent[-1]
    seq = [*recent, pre]
    irregular = _mean([abs(b - a) for a, b in pairwise(seq)])  # seq has >= 2 values
    seq = [*hist[-(p.af_beats - 1) :], pre]
    af = _median([abs(b - a) for a, b in pairwise(seq)]) / _median(seq) if len(seq) > 2 else 0.0
    ratios = np.log(
        np.clip([pre / local, post / local, local / long, pre / long, post / long, pre / prev], *RR_RATIO)
    )
    irregularity = np.clip([irregular / local, af], 0.0, RR_CLIP)
    return np.concatenate([ratios, irregularity]).astype(np.float32)


def _update_rr(h: _History, rr: float, p: BeatWindowParams) -> None:
    _push(h.rrs, rr, max(p.local_rr_beats, p.af_beats))
    h.n_rr += 1
    h.long_rr += (rr - h.long_rr) / min(h.n_rr, p.long_rr_beats)


def beat_inputs(
    x: np.ndarray, fs: float, beats: np.ndarray, params: BeatWindowParams | None = None
) -> tuple[BeatBatch, dict[str, int]]:
    """Batch ``beat-window/1`` of a whole lead ``x`` with its detected ``beats``: every beat, in
    order, with its validity; and the count of invalid beats by reason."""
    bw = BeatWindows(fs, params, buffer_s=len(x) / check_fs(fs) + 1.0)
    out = BeatBatch.concat([bw.process(x, beats), bw.finish()], bw.params)
    return out, dict(bw.invalid)


# -- labels (training and scoring) ----------------------------------------------------------------


def aami_class(symbol: str) -> int:
    """Index into :data:`CLASSES` of a MIT-BIH beat symbol; -1 for a non-beat or unmapped symbol."""
    return _SYMBOL_CLASS.get(symbol, -1)


def pair_beats(
    reference: np.ndarray, detected: np.ndarray, fs: float, tolerance_s: float = 0.150
) -> np.ndarray:
    """For each reference beat (sorted), the index of its matched detection (sorted) or -1.

    The rule of :func:`vigil.kernels.beat_match.match_beats`: each reference beat, in time order,
    takes the nearest unused detection within the tolerance unless that detection lies closer to the
    next reference beat.
    """
    ref = np.asarray(reference, dtype=np.int64)
    det = np.asarray(detected, dtype=np.int64)
    tol = int(round(tolerance_s * check_fs(fs)))
    used = np.zeros(len(det), dtype=bool)
    out = np.full(len(ref), -1, dtype=np.int64)
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
            out[k] = best
    return out
