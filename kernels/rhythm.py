"""Heart rhythm from beat times: RR intervals, heart rate, HRV, AF irregularity, pauses, asystole.

Input is what a QRS detector emits: beat sample indices (int64, strictly increasing, >= 0) at a
sampling rate ``fs`` (Hz), possibly in chunks. With ``k[i] = beat[i] - beat[i-1]`` (samples):

* RR interval ``rr[i] = k[i] / fs`` (s); instantaneous heart rate ``60 / rr[i]`` (bpm).
* Over a window of the last ``N`` RR intervals (``window_beats`` of them, or those ending less
  than ``window_s`` seconds before the current beat), the time-domain HRV of the Task Force (1996):
  ``mean RR`` (ms), windowed heart rate ``60 / mean RR`` (bpm), ``SDNN = sqrt(sum (rr - mean)^2 /
  (N - 1))`` (ms), ``RMSSD = sqrt(sum d^2 / (N - 1))`` with ``d[i] = rr[i] - rr[i-1]`` (ms), and
  ``pNN50 = 100 * #{|d| > 50 ms} / (N - 1)`` (%; a difference of exactly 50 ms does not count).
  Every RR interval counts: there is no beat labelling here, so ectopic beats are not edited out.
* AF irregularity: the coefficient of sample entropy, COSEn (Lake & Moorman, Am J Physiol Heart
  Circ Physiol 300:H319, 2011), chosen because it was built for AF detection in short RR series
  (>= 12 beats) and, unlike a dispersion index such as RMSSD / mean RR, scores a regularly
  repeating irregularity (steady bigeminy) low. Sample entropy, template length m = 1, tolerance
  ``r`` (s)::

      B = #{i < j : |rr_i - rr_j| <= r},  A = #{i < j : max(|rr_i - rr_j|, |rr_i+1 - rr_j+1|) <= r}
      SampEn = ln(B / A),    COSEn = SampEn + ln(2 r) - ln(mean RR)

  over templates ``i, j < N - 1``. ``r`` starts at 30 ms and grows to the smallest value with at
  least 5 matches ``A`` (the paper's minimum numerator count), so the estimate always exists.
  COSEn > -1.4 (:data:`AF_COSEN_THRESHOLD`, the cut-off usually quoted for COSEn) suggests AF.
  On 27 MIT-BIH records (reference beats, 984 non-overlapping 60-beat windows, 36 of them AF from
  201, 203 and 217): AUC 0.994; at -1.4 sensitivity 100 %, specificity 90 %
  (``bench/rhythm_af_screen.py``). RR intervals alone cannot tell AF from dense multiform
  ventricular ectopy: record 208 (>= 10 % PVCs in every 60-beat window) scores above the cut-off
  in most windows, 106 and 115 in some.
* Pauses: RR intervals longer than ``pause_s`` (2.5 s default) as ``(start_sample, end_sample)``;
  asystole: no beat for more than ``asystole_s`` (4 s default) up to the current sample.

Malformed beat input (not integer, negative, not strictly increasing, within a chunk or across
chunks) raises ``ValueError`` and leaves a tracker's state untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from .validate import check_fs

#: COSEn starting tolerance (s) and the minimum number of (m+1)-template matches.
COSEN_R0_S = 0.030
COSEN_MIN_MATCHES = 5
#: Fewest RR intervals for which COSEn is reported (NaN below).
COSEN_MIN_RR = 12
#: COSEn above this suggests atrial fibrillation (Lake & Moorman 2011).
AF_COSEN_THRESHOLD = -1.4
#: Fastest rate a seconds-window is sized for (bpm); faster beats shorten the window.
MAX_HR_BPM = 300.0

_N_METRICS = 7  # n_rr, mean_rr_ms, hr_bpm, sdnn_ms, rmssd_ms, pnn50_pct, cosen


@njit(nogil=True, cache=True)
def _cosen(k, mean, r0):
    """COSEn of RR intervals ``k`` (samples) with mean ``mean`` and starting tolerance ``r0``.

    Two passes over the template pairs: the first finds the 5th smallest (m+1)-distance, which is
    the smallest tolerance giving 5 matches; the second counts matches at the chosen tolerance.
    """
    t = k.shape[0] - 1
    best = np.full(COSEN_MIN_MATCHES, np.inf)
    for i in range(t):
        for j in range(i + 1, t):
            d2 = max(abs(k[i] - k[j]), abs(k[i + 1] - k[j + 1]))
            if d2 < best[-1]:
                q = COSEN_MIN_MATCHES - 1
                while q > 0 and best[q - 1] > d2:
                    best[q] = best[q - 1]
                    q -= 1
                best[q] = d2
    r = max(r0, best[-1])
    a = 0
    b = 0
    for i in range(t):
        for j in range(i + 1, t):
            if abs(k[i] - k[j]) <= r:
                b += 1
                if abs(k[i + 1] - k[j + 1]) <= r:
                    a += 1
    return math.log(b / a) + math.log(2.0 * r / mean)


@njit(nogil=True, cache=True)
def _window_metrics(k, fs, r0, out):
    """HRV of RR intervals ``k`` (int64 samples) into ``out`` [7]; undefined values are NaN."""
    n = k.shape[0]
    out[:] = np.nan
    out[0] = n
    if n == 0:
        return
    s = 0.0
    for v in k:
        s += v
    mean = s / n
    out[1] = 1000.0 * mean / fs
    out[2] = 60.0 * fs / mean
    if n >= 2:
        ss = 0.0
        sd = 0.0
        nn50 = 0
        for j in range(n):
            ss += (k[j] - mean) ** 2
            if j > 0:
                d = float(k[j] - k[j - 1])
                sd += d * d
                if abs(d) * 1000.0 > 50.0 * fs:
                    nn50 += 1
        out[3] = 1000.0 * math.sqrt(ss / (n - 1)) / fs
        out[4] = 1000.0 * math.sqrt(sd / (n - 1)) / fs
        out[5] = 100.0 * nn50 / (n - 1)
    if n >= COSEN_MIN_RR:
        out[6] = _cosen(k, mean, r0)


@njit(nogil=True, cache=True)
def _track(beats, fs, win, r0, last, buf_rr, buf_end, nbuf, out_i, out_f):
    """Feed ``beats`` to the RR window; one output row per beat that has a predecessor.

    ``last`` [1] is the previous beat (-1: none); ``buf_rr``/``buf_end`` [cap] hold the window's RR
    intervals and end samples oldest first, ``nbuf`` [1] how many. ``win`` > 0 also drops intervals
    ending ``win`` samples or more before the current beat. Rows: ``out_i`` [beat, rr samples],
    ``out_f`` [rr_s, hr_bpm, metrics...]. Returns the number of rows written.
    """
    cap = buf_rr.shape[0]
    rows = 0
    for i in range(beats.shape[0]):
        b = beats[i]
        if last[0] >= 0:
            rr = b - last[0]
            n = nbuf[0]
            drop = 1 if n == cap else 0
            if win > 0:
                while drop < n and b - buf_end[drop] >= win:
                    drop += 1
            if drop > 0:
                for j in range(n - drop):
                    buf_rr[j] = buf_rr[j + drop]
                    buf_end[j] = buf_end[j + drop]
                n -= drop
            buf_rr[n] = rr
            buf_end[n] = b
            n += 1
            nbuf[0] = n
            out_i[rows, 0] = b
            out_i[rows, 1] = rr
            out_f[rows, 0] = rr / fs
            out_f[rows, 1] = 60.0 * fs / rr
            _window_metrics(buf_rr[:n], fs, r0, out_f[rows, 2:])
            rows += 1
        last[0] = b
    return rows


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class HRV:
    """Time-domain HRV and AF irregularity of one window of ``n_rr`` RR intervals (NaN: too few)."""

    n_rr: int
    mean_rr_ms: float
    hr_bpm: float
    sdnn_ms: float
    rmssd_ms: float
    pnn50_pct: float
    cosen: float

    @classmethod
    def _from_row(cls, row: np.ndarray) -> HRV:
        return cls(int(row[0]), *(float(v) for v in row[1:]))


_EMPTY_SERIES: RhythmSeries | None = None


@dataclass(frozen=True)
class RhythmSeries:
    """Per-beat values: one entry per beat that has a preceding beat (window ending at it)."""

    beat: np.ndarray  # int64 sample index of the beat ending the RR interval
    rr_samples: np.ndarray  # int64
    rr_s: np.ndarray
    hr_bpm: np.ndarray  # instantaneous, 60 / rr_s
    n_rr: np.ndarray  # int64, RR intervals in the window
    mean_rr_ms: np.ndarray
    hr_window_bpm: np.ndarray  # 60 / mean RR of the window
    sdnn_ms: np.ndarray
    rmssd_ms: np.ndarray
    pnn50_pct: np.ndarray
    cosen: np.ndarray

    @classmethod
    def _from_rows(cls, oi: np.ndarray, of: np.ndarray) -> RhythmSeries:
        return cls(
            oi[:, 0].copy(),
            oi[:, 1].copy(),
            of[:, 0].copy(),
            of[:, 1].copy(),
            of[:, 2].astype(np.int64),
            *(of[:, c].copy() for c in range(3, 9)),
        )

    @classmethod
    def _empty(cls) -> RhythmSeries:
        """The series of an update without beats (one shared instance; its arrays are read-only)."""
        global _EMPTY_SERIES
        if _EMPTY_SERIES is None:
            e = cls._from_rows(np.empty((0, 2), dtype=np.int64), np.empty((0, 2 + _N_METRICS)))
            for a in vars(e).values():
                a.setflags(write=False)
            _EMPTY_SERIES = e
        return _EMPTY_SERIES

    def __len__(self) -> int:
        return len(self.beat)


@dataclass(frozen=True)
class RhythmSummary:
    """State of the rhythm at ``now_sample``, returned by :meth:`RhythmTracker.update`."""

    now_sample: int
    n_beats: int  # beats seen since the stream began
    last_beat: int  # -1 before the first beat
    since_last_beat_s: float  # from the last beat (or the stream start) to now_sample
    asystole: bool  # since_last_beat_s > asystole_s
    in_pause: bool  # since_last_beat_s > pause_s (a pause still open)
    rr_s: float  # latest RR interval (NaN before two beats)
    hr_bpm: float  # 60 / rr_s
    window: HRV  # over the current window
    af_suspected: bool  # window.cosen > af_threshold
    longest_rr_s: float  # longest RR so far (NaN before two beats)
    longest_rr: tuple[int, int] | None  # its (start_sample, end_sample)
    pauses: list[tuple[int, int]]  # pauses closed by the beats of this update
    beats: RhythmSeries  # per-beat values for the beats of this update


# ---------------------------------------------------------------------------------------------
# Argument checks


def _as_beats(beats: object, name: str = "beats") -> np.ndarray:
    """``beats`` as a strictly increasing, non-negative int64 vector, or ``ValueError``."""
    a = np.asarray(beats)
    if a.size == 0:
        return np.empty(0, dtype=np.int64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of sample indices, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer sample indices, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has indices beyond the int64 range")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.min() < 0:
        raise ValueError(f"{name} must be non-negative sample indices, got {int(a.min())}")
    if len(a) > 1 and np.any(a[1:] <= a[:-1]):
        i = int(np.flatnonzero(a[1:] <= a[:-1])[0])
        raise ValueError(f"{name} must be strictly increasing, got {int(a[i])} then {int(a[i + 1])} at {i}")
    return a


def _as_sample(value: object, name: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer sample index, got {value!r}") from None
    if v != value or v < 0:
        raise ValueError(f"{name} must be a non-negative integer sample index, got {value!r}")
    return v


def _positive(value: object, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def _window_config(fs: float, window_beats: int | None, window_s: float | None) -> tuple[int, float]:
    """Return ``(capacity in RR intervals, window in samples or 0)``."""
    if window_beats is not None and window_s is not None:
        raise ValueError("give window_beats or window_s, not both")
    if window_s is None:
        wb = 60 if window_beats is None else window_beats
        if isinstance(wb, bool) or int(wb) != wb or wb < 2:
            raise ValueError(f"window_beats must be an integer >= 2, got {window_beats!r}")
        return int(wb), 0.0
    ws = _positive(window_s, "window_s")
    cap = max(2, math.ceil(ws * MAX_HR_BPM / 60.0))
    return cap, ws * fs


# ---------------------------------------------------------------------------------------------
# Batch functions


def rr_intervals(beats: np.ndarray, fs: float) -> np.ndarray:
    """RR intervals (s) between consecutive beats, length ``len(beats) - 1``."""
    fs = check_fs(fs)
    return np.diff(_as_beats(beats)) / fs


def heart_rate(beats: np.ndarray, fs: float) -> np.ndarray:
    """Instantaneous heart rate ``60 / RR`` (bpm), one value per RR interval."""
    return 60.0 / rr_intervals(beats, fs)


def hrv(beats: np.ndarray, fs: float) -> HRV:
    """HRV and COSEn over all RR intervals of ``beats`` taken as one window."""
    fs = check_fs(fs)
    out = np.empty(_N_METRICS)
    _window_metrics(np.diff(_as_beats(beats)), fs, COSEN_R0_S * fs, out)
    return HRV._from_row(out)


def rhythm_series(
    beats: np.ndarray, fs: float, window_beats: int | None = None, window_s: float | None = None
) -> RhythmSeries:
    """Per-beat RR, heart rate and sliding-window HRV/COSEn (window: 60 beats unless given).

    ``window_beats``: the last that many RR intervals. ``window_s``: intervals ending less than
    ``window_s`` seconds before the current beat, at most ``ceil(window_s * 300 / 60)`` of them.
    """
    fs = check_fs(fs)
    b = _as_beats(beats)
    cap, win = _window_config(fs, window_beats, window_s)
    out_i = np.empty((len(b), 2), dtype=np.int64)
    out_f = np.empty((len(b), 2 + _N_METRICS))
    rows = _track(
        b,
        fs,
        win,
        COSEN_R0_S * fs,
        np.full(1, -1, dtype=np.int64),
        np.zeros(cap, dtype=np.int64),
        np.zeros(cap, dtype=np.int64),
        np.zeros(1, dtype=np.int64),
        out_i,
        out_f,
    )
    return RhythmSeries._from_rows(out_i[:rows], out_f[:rows])


def cosen(beats: np.ndarray, fs: float) -> float:
    """COSEn of the RR intervals of ``beats`` (NaN with fewer than 12 intervals)."""
    return hrv(beats, fs).cosen


def find_pauses(beats: np.ndarray, fs: float, pause_s: float = 2.5) -> list[tuple[int, int]]:
    """RR intervals longer than ``pause_s`` seconds, as ``(start_sample, end_sample)`` pairs."""
    fs = check_fs(fs)
    b = _as_beats(beats)
    thr = _positive(pause_s, "pause_s") * fs
    i = np.flatnonzero(np.diff(b) > thr)
    return [(int(b[j]), int(b[j + 1])) for j in i]


def longest_rr(beats: np.ndarray, fs: float) -> tuple[float, int, int] | None:
    """``(seconds, start_sample, end_sample)`` of the longest RR (the first if tied), or None."""
    fs = check_fs(fs)
    b = _as_beats(beats)
    if len(b) < 2:
        return None
    j = int(np.argmax(np.diff(b)))
    return (b[j + 1] - b[j]) / fs, int(b[j]), int(b[j + 1])


def seconds_since_last_beat(last_beat: int, now_sample: int, fs: float) -> float:
    """Seconds from ``last_beat`` to ``now_sample`` (asystole when this exceeds ~4 s)."""
    fs = check_fs(fs)
    last = _as_sample(last_beat, "last_beat")
    now = _as_sample(now_sample, "now_sample")
    if now < last:
        raise ValueError(f"now_sample {now} precedes last_beat {last}")
    return (now - last) / fs


# ---------------------------------------------------------------------------------------------
# Streaming


class RhythmTracker:
    """Live rhythm monitor fed with beat indices in chunks of any size.

    ``update(beats, now_sample)`` takes the beats detected since the last call (sample indices on
    the stream's clock) and the current sample, and returns a :class:`RhythmSummary`. The per-beat
    values it returns, concatenated over calls, equal :func:`rhythm_series` on all the beats.
    Before the first beat, time since the last beat counts from ``start_sample``.

    State: the previous beat, the window's RR intervals (``window_beats`` or a ``window_s`` window
    of at most ``ceil(window_s * 5)`` intervals), the longest RR so far, and the current sample.
    """

    def __init__(
        self,
        fs: float,
        window_beats: int | None = None,
        window_s: float | None = None,
        pause_s: float = 2.5,
        asystole_s: float = 4.0,
        af_threshold: float = AF_COSEN_THRESHOLD,
        start_sample: int = 0,
    ):
        self.fs = check_fs(fs)
        self._cap, self._win = _window_config(self.fs, window_beats, window_s)
        self.pause_s = _positive(pause_s, "pause_s")
        self.asystole_s = _positive(asystole_s, "asystole_s")
        self.af_threshold = float(af_threshold)
        if not math.isfinite(self.af_threshold):
            raise ValueError(f"af_threshold must be finite, got {af_threshold!r}")
        self.start_sample = _as_sample(start_sample, "start_sample")
        self._r0 = COSEN_R0_S * self.fs
        self._last = np.full(1, -1, dtype=np.int64)
        self._buf_rr = np.zeros(self._cap, dtype=np.int64)
        self._buf_end = np.zeros(self._cap, dtype=np.int64)
        self._nbuf = np.zeros(1, dtype=np.int64)
        self._rr = -1  # latest RR (samples)
        self._longest = (-1, -1, -1)  # (rr samples, start, end)
        self._now = self.start_sample
        self.n_beats = 0
        self._hrv: HRV | None = None  # window() of the current window, until a beat changes it

    def reset(self, start_sample: int = 0) -> None:
        """Forget the stream (after a reconnect, say) and restart the clock at ``start_sample``."""
        self.start_sample = _as_sample(start_sample, "start_sample")
        self._last[0] = -1
        self._nbuf[0] = 0
        self._rr = -1
        self._longest = (-1, -1, -1)
        self._now = self.start_sample
        self.n_beats = 0
        self._hrv = None

    def since_last_beat(self, now_sample: int) -> float:
        """Seconds from the last beat (or the stream start) to ``now_sample``; changes nothing."""
        now = _as_sample(now_sample, "now_sample")
        ref = int(self._last[0]) if self._last[0] >= 0 else self.start_sample
        if now < ref:
            raise ValueError(f"now_sample {now} precedes the last beat / stream start {ref}")
        return (now - ref) / self.fs

    def window(self) -> HRV:
        """HRV and COSEn of the current window (computed once per window: only beats change it)."""
        if self._hrv is None:
            out = np.empty(_N_METRICS)
            _window_metrics(self._buf_rr[: self._nbuf[0]], self.fs, self._r0, out)
            self._hrv = HRV._from_row(out)
        return self._hrv

    def update(self, beats: np.ndarray, now_sample: int) -> RhythmSummary:
        """Add the beats detected up to ``now_sample`` and summarise the rhythm at that sample."""
        b = _as_beats(beats)
        now = _as_sample(now_sample, "now_sample")
        if now < self._now:
            raise ValueError(f"now_sample went backwards: {now} after {self._now}")
        if len(b):
            if b[0] <= self._last[0]:
                last = int(self._last[0])
                raise ValueError(f"beat {int(b[0])} does not follow the last beat {last}")
            if b[0] < self.start_sample:
                raise ValueError(f"beat {int(b[0])} precedes the stream start {self.start_sample}")
            if b[-1] > now:
                raise ValueError(f"beat {int(b[-1])} lies after now_sample {now}")
        pauses = []
        if len(b):
            out_i = np.empty((len(b), 2), dtype=np.int64)
            out_f = np.empty((len(b), 2 + _N_METRICS))
            rows = _track(
                b,
                self.fs,
                self._win,
                self._r0,
                self._last,
                self._buf_rr,
                self._buf_end,
                self._nbuf,
                out_i,
                out_f,
            )
            series = RhythmSeries._from_rows(out_i[:rows], out_f[:rows])
            self.n_beats += len(b)
            # the row of the last beat holds the metrics of the window as it is now
            self._hrv = HRV._from_row(out_f[rows - 1, 2:]) if rows and out_i[rows - 1, 0] == b[-1] else None
            for end, rr in out_i[:rows].tolist():
                if rr > self.pause_s * self.fs:
                    pauses.append((end - rr, end))
                if rr > self._longest[0]:
                    self._longest = (rr, end - rr, end)
            if rows:
                self._rr = int(out_i[rows - 1, 1])
        else:  # most chunks hold no beat: nothing to track, the window is unchanged
            series = RhythmSeries._empty()
        self._now = now
        since = self.since_last_beat(now)
        win = self.window()
        rr_s = self._rr / self.fs if self._rr > 0 else math.nan
        lrr = self._longest
        return RhythmSummary(
            now_sample=now,
            n_beats=self.n_beats,
            last_beat=int(self._last[0]),
            since_last_beat_s=since,
            asystole=since > self.asystole_s,
            in_pause=since > self.pause_s,
            rr_s=rr_s,
            hr_bpm=60.0 / rr_s if self._rr > 0 else math.nan,
            window=win,
            af_suspected=bool(win.cosen > self.af_threshold),
            longest_rr_s=lrr[0] / self.fs if lrr[0] > 0 else math.nan,
            longest_rr=(lrr[1], lrr[2]) if lrr[0] > 0 else None,
            pauses=pauses,
            beats=series,
        )
