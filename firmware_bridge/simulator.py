"""Synthetic wearables for demos and load tests: ECG, EEG and EMG devices with scheduled episodes,
impairments and link faults, thousands of them from one process, with their ground truth kept.

**Not for accuracy claims.** The signals are caricatures built to exercise the pipeline (rates,
alarms, bad samples, lost and reordered frames); a detector that scores well on them has shown only
that it runs. Accuracy is measured on real recordings (:mod:`~vigil.firmware_bridge.replay`).

Signals (array-at-a-time across devices and samples; physical units as the kernels expect):

* **ECG** (mV): every beat is a sum of Gaussians for P, Q, R, S and T as in the ECGSYN morphology of
  McSharry et al., "A dynamical model for generating synthetic electrocardiogram signals", IEEE TBME
  50(3), 2003, but written directly in time around each R peak (T wave position and width scale
  with sqrt(RR), as QT does). Each sample sums the waves of the beat before and the beat after it.
  Sinus rhythm at ``heart_rate`` with HRV (respiratory 0.25 Hz and Mayer 0.1 Hz modulation plus
  noise, SD ~ ``hrv`` x RR). Episodes: ``af`` (RR uniform in 0.55-1.45 x mean, no P wave, 4-8 Hz
  fibrillatory waves), ``vt`` (wide QRS, inverted T, no P; beats labelled ``V``), ``pause`` and
  ``asystole`` (no beats until the episode ends), ``brady`` and ``tachy`` (sinus at another rate).
* **EEG** (µV): 1/f background (a 3-pole pink-noise filter) plus a small alpha rhythm; ``seizure``
  episodes add rhythmic spike-and-wave discharges whose rate slows from 7 to 3 Hz, with 1 s ramps.
* **EMG** (mV): band-limited noise (20-150 Hz, below Nyquist) amplitude-modulated by a resting
  level and ``burst`` episodes (50 ms raised-cosine ramps).

Impairments (:class:`Impairments`): white noise, muscle (EMG-band) noise, baseline wander, motion
artifacts (scheduled ``motion`` episodes and random ones), lead-off (scheduled ``lead_off``
episodes and random ones: NaN, or the positive rail), frame loss (each frame dropped with
probability ``packet_loss``) and delivery jitter (exponential extra delay; frames delayed past
their successors arrive reordered).

Ground truth (:class:`GroundTruth`): beat samples and labels, every episode and random event with
its interval, dropped sequence numbers. Reproducibility: beats, episodes and random events of a
device depend only on its :class:`DeviceSpec`; sample noise depends on the whole fleet's seeds.

:class:`SimulatorTransport` serves a fleet as a :class:`~vigil.firmware_bridge.transport.Transport`.
Devices sharing (kind, fs, channels, frame size, format) form a cohort generated in one array per
block; frames become :class:`~vigil.firmware_bridge.protocol.Frame` objects viewing that array
(``wire=True`` also encodes and decodes every frame).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import signal as sps
from scipy.special import ndtr

from .protocol import ChannelKind, Frame, SampleFormat, decode, encode
from .replay import choose_scale, quantise
from .transport import Item, LinkEvent, LinkState, Received, Transport

EPISODE_KINDS = ("af", "vt", "pause", "asystole", "brady", "tachy", "seizure", "burst", "lead_off", "motion")
_CODE = {k: i for i, k in enumerate(EPISODE_KINDS)}
_AF, _VT, _PAUSE, _ASYS, _BRADY, _TACHY, _SEIZURE, _BURST, _LEAD_OFF, _MOTION = range(len(EPISODE_KINDS))
#: Default ventricular rate (bpm) of rate episodes.
DEFAULT_RATE = {"af": 110.0, "vt": 170.0, "brady": 40.0, "tachy": 140.0}
#: Default physical full scale (+-) per kind: the ADC range frames are quantised to.
DEFAULT_FULL_SCALE = {ChannelKind.ECG: 10.0, ChannelKind.EEG: 2000.0, ChannelKind.EMG: 10.0}
#: Default amplitude of motion artifacts per kind, physical units.
MOTION_AMPLITUDE = {ChannelKind.ECG: 1.5, ChannelKind.EEG: 300.0, ChannelKind.EMG: 1.0}
SEIZURE_AMPLITUDE_UV = 250.0
BURST_AMPLITUDE_MV = 0.5
EMG_REST_MV = 0.01
EEG_BACKGROUND_UV = 20.0


@dataclass(frozen=True)
class Episode:
    """A scheduled event: one of :data:`EPISODE_KINDS` from ``start_s`` for ``duration_s``.

    ``rate_bpm`` sets the ventricular rate of af/vt/brady/tachy (0: :data:`DEFAULT_RATE`);
    ``amplitude`` that of seizure (µV), burst (mV) or motion (0: the kind's default).
    """

    kind: str
    start_s: float
    duration_s: float
    rate_bpm: float = 0.0
    amplitude: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _CODE:
            raise ValueError(f"episode kind must be one of {EPISODE_KINDS}, got {self.kind!r}")
        if not (self.start_s >= 0 and self.duration_s > 0):
            raise ValueError("episode needs start_s >= 0 and duration_s > 0")

    @property
    def stop_s(self) -> float:
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class Impairments:
    """Signal and link impairments; amplitudes in the device's physical units, 0 disables."""

    white_noise: float = 0.0  # SD
    emg_noise: float = 0.0  # SD of muscle-band noise
    baseline_wander: float = 0.0  # amplitude of 0.25 Hz + 0.07 Hz wander
    motion_per_min: float = 0.0  # random motion artifacts per minute
    motion_amplitude: float = 0.0  # 0: MOTION_AMPLITUDE of the kind
    lead_off_per_min: float = 0.0  # random lead-off events per minute
    lead_off_s: float = 2.0  # mean duration of random lead-off events
    lead_off_value: str = "nan"  # "nan" or "rail" (+full scale)
    packet_loss: float = 0.0  # probability that a frame is dropped
    jitter_s: float = 0.0  # mean extra delivery delay (exponential)

    def __post_init__(self) -> None:
        if self.lead_off_value not in ("nan", "rail"):
            raise ValueError("lead_off_value must be 'nan' or 'rail'")
        if not 0 <= self.packet_loss < 1:
            raise ValueError("packet_loss must be in [0, 1)")


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated wearable. ``channels`` leads of one ``kind``; frames of ``frame_samples``."""

    kind: ChannelKind = ChannelKind.ECG
    fs: float = 250.0
    channels: int = 1
    episodes: tuple[Episode, ...] = ()
    impairments: Impairments = field(default_factory=Impairments)
    seed: int = 0
    device_id: int = 1
    heart_rate: float = 70.0
    hrv: float = 0.04
    amplitude: float = 1.0
    frame_samples: int = 10
    sample_format: SampleFormat = SampleFormat.INT16
    full_scale: float = 0.0  # 0: DEFAULT_FULL_SCALE of the kind
    start_us: int = 0
    first_sequence: int = 0

    @property
    def cohort_key(self) -> tuple:
        return (ChannelKind(self.kind), float(self.fs), self.channels, self.frame_samples, self.sample_format)

    @property
    def scale_range(self) -> float:
        return self.full_scale or DEFAULT_FULL_SCALE.get(ChannelKind(self.kind), 10.0)


def make_devices(
    n: int, base: DeviceSpec | None = None, seed: int = 0, vary: bool = True
) -> list[DeviceSpec]:
    """``n`` devices like ``base`` with ids 1..n and distinct seeds; ``vary`` also spreads heart
    rate (55-95 bpm), HRV, amplitude, boot time and first sequence number."""
    base = base or DeviceSpec()
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**63 - 1, n)
    hr = rng.uniform(55, 95, n)
    hrv = rng.uniform(0.02, 0.06, n)
    amp = rng.uniform(0.7, 1.3, n)
    boot = rng.integers(0, 10**12, n)
    seq = rng.integers(0, 2**32, n)
    out = []
    for i in range(n):
        extra = {}
        if vary:
            extra = dict(heart_rate=float(hr[i]), hrv=float(hrv[i]), amplitude=float(amp[i]),
                         start_us=int(boot[i]), first_sequence=int(seq[i]))  # fmt: skip
        out.append(replace(base, device_id=base.device_id + i, seed=int(seeds[i]), **extra))
    return out


@dataclass(frozen=True)
class GroundTruth:
    """What a simulated device did: beats (samples of its stream), episodes and random events
    ``(kind, start_s, stop_s)``, and the sequence numbers of frames that were dropped."""

    device_id: int
    fs: float
    beat_samples: np.ndarray
    beat_labels: np.ndarray
    episodes: tuple[tuple[str, float, float], ...]
    dropped_sequences: np.ndarray

    def intervals(self, kind: str) -> list[tuple[float, float]]:
        """``(start_s, stop_s)`` of every episode or event of ``kind``."""
        return [(a, b) for k, a, b in self.episodes if k == kind]

    def beats_between(self, start_s: float, stop_s: float) -> np.ndarray:
        b = self.beat_samples
        return b[(b >= start_s * self.fs) & (b < stop_s * self.fs)]


# ---------------------------------------------------------------------------------------------
# Beat morphology: waves P, Q, R, S, T; rows: sinus, AF (no P), VT. Centre and width in s (at
# RR = 1 s for T), amplitude in mV. Times follow ECGSYN's angles (-70, -15, 0, 15, 100 deg).

_SINUS, _AFIB, _VENT = 0, 1, 2
_CENTRE = np.array([[-0.19, -0.035, 0.0, 0.035, 0.28]] * 2 + [[-0.19, -0.05, 0.0, 0.07, 0.24]])
_WIDTH = np.array([[0.025, 0.010, 0.012, 0.012, 0.05]] * 2 + [[0.025, 0.03, 0.035, 0.035, 0.07]])
_AMP = np.array([[0.15, -0.12, 1.2, -0.3, 0.3], [0.0, -0.12, 1.2, -0.3, 0.3], [0.0, -0.3, 1.4, -0.6, -0.35]])
_T_SCALED = np.array([False, False, False, False, True])


def _beat_wave(dt: np.ndarray, kind: np.ndarray, rr: np.ndarray) -> np.ndarray:
    """ECG (mV, before device gain) at time ``dt`` (s) from R peaks of beats of ``kind`` and
    preceding interval ``rr`` (s); all arrays broadcast together."""
    q = np.sqrt(np.clip(rr, 0.25, 2.0))
    p_shift = np.minimum(1.0, 0.6 + 0.4 * rr)
    y = np.zeros(np.broadcast_shapes(dt.shape, kind.shape, rr.shape))
    for w in range(5):
        c = _CENTRE[kind, w] * (q if _T_SCALED[w] else (p_shift if w == 0 else 1.0))
        s = _WIDTH[kind, w] * (q if _T_SCALED[w] else 1.0)
        y += _AMP[kind, w] * np.exp(-0.5 * ((dt - c) / s) ** 2)
    return y


# ---------------------------------------------------------------------------------------------
# Per-device random numbers, consumed array-at-a-time


class _Pool:
    """A buffer of standard normals per device, refilled from that device's own generator."""

    def __init__(self, seeds: Sequence[int], size: int = 256) -> None:
        self.rngs = [np.random.default_rng(s) for s in seeds]
        self.buf = np.stack([r.standard_normal(size) for r in self.rngs])
        self.ptr = np.zeros(len(seeds), dtype=np.int64)

    def normal(self, rows: np.ndarray) -> np.ndarray:
        """One standard normal for each row index in ``rows`` (rows distinct)."""
        size = self.buf.shape[1]
        for r in rows[self.ptr[rows] >= size]:
            self.buf[r] = self.rngs[r].standard_normal(size)
            self.ptr[r] = 0
        out = self.buf[rows, self.ptr[rows]]
        self.ptr[rows] += 1
        return out

    def uniform(self, rows: np.ndarray) -> np.ndarray:
        return ndtr(self.normal(rows))


def _band_filter(fs: float, lo: float, hi: float) -> tuple[np.ndarray, float]:
    """Butterworth band-pass SOS (order 2) and the output SD for unit white input."""
    hi = min(hi, 0.45 * fs)
    lo = min(lo, 0.5 * hi)
    sos = sps.butter(2, [lo, hi], btype="band", fs=fs, output="sos")
    h = sps.sosfilt(sos, np.r_[1.0, np.zeros(int(4 * fs))])
    return sos, float(np.sqrt(np.sum(h * h)))


# Pink (1/f) noise: J. O. Smith's 3-pole approximation.
_PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
_PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
_PINK_GAIN = float(np.sqrt(np.sum(sps.lfilter(_PINK_B, _PINK_A, np.r_[1.0, np.zeros(200_000)]) ** 2)))


class _Noise:
    """Continuous filtered noise for a subset of devices: [rows, n, channels], unit SD."""

    def __init__(self, rows: np.ndarray, channels: int, kind: str, fs: float, rng: np.random.Generator):
        self.rows, self.rng, self.kind = rows, rng, kind
        if kind == "pink":
            self.gain = _PINK_GAIN
            self.z = np.zeros((len(rows), 3, channels))
        else:
            self.sos, self.gain = _band_filter(fs, 20.0, 150.0)
            self.z = np.zeros((self.sos.shape[0], len(rows), 2, channels))
        if len(rows):
            self.next(int(2 * fs) if kind == "pink" else int(0.2 * fs))  # settle the filter state

    def next(self, n: int) -> np.ndarray:
        x = self.rng.standard_normal((len(self.rows), n, self.z.shape[-1]))
        if self.kind == "pink":
            y, self.z = sps.lfilter(_PINK_B, _PINK_A, x, axis=1, zi=self.z)
        else:
            y, self.z = sps.sosfilt(self.sos, x, axis=1, zi=self.z)
        return y / self.gain


def _ramp(u: np.ndarray, duration: np.ndarray, ramp: float) -> np.ndarray:
    """Raised-cosine envelope over ``[0, duration)`` at time ``u`` since its start, ``ramp`` s edges."""
    r = np.minimum(ramp, duration / 2)
    up = np.clip(u / r, 0, 1)
    down = np.clip((duration - u) / r, 0, 1)
    inside = (u >= 0) & (u < duration)
    return np.where(inside, 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down)), 0.0)


# ---------------------------------------------------------------------------------------------
# A cohort: devices generated together


class Cohort:
    """Devices sharing kind, rate, channels, frame size and format; :meth:`next_block` generates
    the next ``n`` samples of all of them as one [devices, n, channels] array (physical units)."""

    def __init__(self, specs: Sequence[DeviceSpec]) -> None:
        keys = {s.cohort_key for s in specs}
        if len(keys) != 1:
            raise ValueError("a cohort's devices must share kind, fs, channels, frame size and format")
        self.specs = list(specs)
        self.kind, self.fs, self.channels, self.frame_samples, self.sample_format = keys.pop()
        d, c = len(specs), self.channels
        self.n_done = 0
        self.pool = _Pool([s.seed for s in specs])
        self.rng = np.random.default_rng(np.random.SeedSequence([s.seed % 2**63 for s in specs]))
        # per-device constants from the device's own seed: phases, lead gains, EEG gains, alpha
        u = np.stack([np.random.default_rng([s.seed % 2**63, 1]).random(5 + 2 * c) for s in specs])
        self.phase = 2 * np.pi * u[:, :4]
        self.gain = np.ones((d, c))
        self.gain[:, 1:] = 2 * u[:, 5 : 4 + c] - 1
        self.gain *= np.array([s.amplitude for s in specs])[:, None]
        self.ch_gain = 0.6 + 0.4 * u[:, 4 + c : 4 + 2 * c]
        self.alpha_amp = 2.0 + 6.0 * u[:, 4 + 2 * c]
        imp = [s.impairments for s in specs]
        self.white = np.array([i.white_noise for i in imp])
        self.wander = np.array([i.baseline_wander for i in imp])
        self.loss = np.array([i.packet_loss for i in imp])
        self.jitter = np.array([i.jitter_s for i in imp])
        self.rail = np.array([s.scale_range for s in specs])
        self.lead_nan = np.array([i.lead_off_value == "nan" for i in imp])
        self.motion_amp = np.array([i.motion_amplitude or MOTION_AMPLITUDE.get(self.kind, 1.0) for i in imp])
        self.emg_sd = np.array([i.emg_noise for i in imp])
        self.emg = _Noise(np.flatnonzero(self.emg_sd > 0), c, "band", self.fs, self.rng)
        # wire: ids, quantisation, sequence numbers and clocks
        self.ids = [s.device_id for s in specs]
        full = np.repeat(self.rail[:, None], c, 1)
        self.scale, self.offset = choose_scale(-full, full, self.sample_format)
        self.seq0 = np.array([s.first_sequence for s in specs], dtype=np.int64)
        self.start_us = np.array([s.start_us for s in specs], dtype=np.int64)
        self._episode_table(specs)
        # random events: next onset per device (s), rate per s
        self.motion_rate = np.array([i.motion_per_min / 60 for i in imp])
        self.lead_rate = np.array([i.lead_off_per_min / 60 for i in imp])
        self.lead_mean = np.array([i.lead_off_s for i in imp])
        self.next_motion = self._exp_wait(np.arange(d), self.motion_rate, 0.0)
        self.next_lead = self._exp_wait(np.arange(d), self.lead_rate, 0.0)
        # events overlapping the future: (row, kind, start, stop, amplitude, freq, phase)
        self.events: list[tuple[int, int, float, float, float, float, float]] = []
        for r, s in enumerate(specs):
            for e in s.episodes:
                if e.kind in ("motion", "lead_off"):
                    amp = e.amplitude or self.motion_amp[r]
                    f, ph = 0.5 + 2.5 * self.pool.uniform(np.array([r]))[0], self.phase[r, 3]
                    self.events.append((r, _CODE[e.kind], e.start_s, e.stop_s, amp, f, ph))
        # ground truth logs
        self._beat_log: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._event_log: list[tuple[int, str, float, float]] = []
        self._drop_log: list[tuple[np.ndarray, np.ndarray]] = []
        if self.kind == ChannelKind.ECG:
            self._init_beats()
        elif self.kind == ChannelKind.EEG:
            self.pink = _Noise(np.arange(d), c, "pink", self.fs, self.rng)
        elif self.kind == ChannelKind.EMG:
            self.band = _Noise(np.arange(d), c, "band", self.fs, self.rng)

    # -- schedules -------------------------------------------------------------------------

    def _episode_table(self, specs: Sequence[DeviceSpec]) -> None:
        e = max(1, max(len(s.episodes) for s in specs))
        d = len(specs)
        self.ep_kind = np.full((d, e), -1)
        self.ep_start = np.zeros((d, e))
        self.ep_stop = np.zeros((d, e))
        self.ep_rate = np.zeros((d, e))
        self.ep_amp = np.zeros((d, e))
        for r, s in enumerate(specs):
            for j, ep in enumerate(s.episodes):
                self.ep_kind[r, j] = _CODE[ep.kind]
                self.ep_start[r, j], self.ep_stop[r, j] = ep.start_s, ep.stop_s
                self.ep_rate[r, j] = ep.rate_bpm or DEFAULT_RATE.get(ep.kind, 0.0)
                self.ep_amp[r, j] = ep.amplitude

    def _active(self, rows: np.ndarray, t: np.ndarray, codes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """For devices ``rows`` at times ``t`` (one each): the slot of the first episode among
        ``codes`` active then (-1 if none) and a mask of where one is."""
        k, a, b = self.ep_kind[rows], self.ep_start[rows], self.ep_stop[rows]
        on = np.isin(k, codes) & (a <= t[:, None]) & (t[:, None] < b)
        slot = np.where(on.any(1), on.argmax(1), -1)
        return slot, slot >= 0

    def _exp_wait(self, rows: np.ndarray, rate: np.ndarray, t: float | np.ndarray) -> np.ndarray:
        u = self.pool.uniform(rows)
        with np.errstate(divide="ignore"):
            return np.where(rate[rows] > 0, t - np.log1p(-u * 0.999999) / rate[rows], np.inf)

    def _init_beats(self) -> None:
        d = len(self.specs)
        self.hr = np.array([s.heart_rate for s in self.specs])
        self.hrv = np.array([s.hrv for s in self.specs])
        k = 16
        self.bt = np.full((d, k), np.inf)
        self.btype = np.zeros((d, k), dtype=np.int64)
        self.brr = np.ones((d, k))
        self.cnt = np.zeros(d, dtype=np.int64)
        rows = np.arange(d)
        self.next_beat = self.pool.uniform(rows) * 60 / self.hr
        self.last_beat = self.next_beat - 60 / self.hr

    def _schedule_beats(self, horizon: float) -> None:
        """Draw beats for every device up to ``horizon`` s (vectorised rounds of one beat each)."""
        fs = self.fs
        while True:
            rows = np.flatnonzero(self.next_beat < horizon)
            if not len(rows):
                return
            t = self.next_beat[rows]
            slot, silent = self._active(rows, t, (_PAUSE, _ASYS))
            if silent.any():
                r = rows[silent]
                self.next_beat[r] = self.ep_stop[r, slot[silent]]
            rows, t = rows[~silent], t[~silent]
            if not len(rows):
                continue
            slot, on = self._active(rows, t, (_AF, _VT, _BRADY, _TACHY))
            code = np.where(on, self.ep_kind[rows, np.maximum(slot, 0)], -1)
            rate = np.where(on, self.ep_rate[rows, np.maximum(slot, 0)], self.hr[rows])
            kind = np.select([code == _AF, code == _VT], [_AFIB, _VENT], _SINUS)
            mean = 60.0 / rate
            z = self.pool.normal(rows)
            hrv = self.hrv[rows]
            ph = self.phase[rows]
            mod = np.sin(2 * np.pi * 0.25 * t + ph[:, 0]) + 0.7 * np.sin(2 * np.pi * 0.1 * t + ph[:, 1])
            rr = np.select(
                [kind == _AFIB, kind == _VENT],
                [mean * (0.55 + 0.9 * ndtr(z)), mean * (1 + 0.02 * z)],
                mean * (1 + hrv * (0.8 * mod + 0.5 * z)),
            )
            rr = np.maximum(rr, 0.25)
            self._append_beats(rows, t, kind, t - self.last_beat[rows])
            self._beat_log.append((rows, np.rint(t * fs).astype(np.int64), kind))
            self.last_beat[rows] = t
            self.next_beat[rows] = t + rr

    def _append_beats(self, rows: np.ndarray, t: np.ndarray, kind: np.ndarray, rr: np.ndarray) -> None:
        if self.cnt[rows].max() >= self.bt.shape[1]:
            pad = ((0, 0), (0, self.bt.shape[1]))
            self.bt = np.pad(self.bt, pad, constant_values=np.inf)
            self.btype = np.pad(self.btype, pad)
            self.brr = np.pad(self.brr, pad, constant_values=1.0)
        j = self.cnt[rows]
        self.bt[rows, j], self.btype[rows, j], self.brr[rows, j] = t, kind, rr
        self.cnt[rows] += 1

    def _drop_old_beats(self, t_end: float) -> None:
        """Keep the last beat at or before ``t_end`` and every later one."""
        drop = np.maximum((self.bt <= t_end).sum(1) - 1, 0)
        if not drop.any():
            return
        k = self.bt.shape[1]
        idx = np.arange(k) + drop[:, None]
        keep = idx < self.cnt[:, None]
        idx = np.minimum(idx, k - 1)
        self.bt = np.where(keep, np.take_along_axis(self.bt, idx, 1), np.inf)
        self.btype = np.take_along_axis(self.btype, idx, 1)
        self.brr = np.take_along_axis(self.brr, idx, 1)
        self.cnt -= drop

    def _schedule_events(self, horizon: float) -> None:
        """Random motion and lead-off events with onsets before ``horizon``."""
        for nxt, code, rate in ((self.next_motion, _MOTION, self.motion_rate),
                                (self.next_lead, _LEAD_OFF, self.lead_rate)):  # fmt: skip
            while True:
                rows = np.flatnonzero(nxt < horizon)
                if not len(rows):
                    break
                if code == _MOTION:
                    dur = 0.3 + 1.2 * self.pool.uniform(rows)
                else:
                    dur = (
                        np.clip(-np.log1p(-0.999999 * self.pool.uniform(rows)), 0.1, 5.0)
                        * self.lead_mean[rows]
                    )
                freq = 0.5 + 2.5 * self.pool.uniform(rows)
                for r, a, b, f in zip(rows.tolist(), nxt[rows].tolist(), (nxt[rows] + dur).tolist(),
                                      freq.tolist(), strict=True):  # fmt: skip
                    self.events.append((r, code, a, b, float(self.motion_amp[r]), f, float(self.phase[r, 3])))
                    self._event_log.append((r, EPISODE_KINDS[code], a, b))
                nxt[rows] = self._exp_wait(rows, rate, nxt[rows] + dur)

    # -- signals -------------------------------------------------------------------------

    def _ecg(self, t: np.ndarray) -> np.ndarray:
        self._schedule_beats(t[-1] + 1.0)
        live = max(1, int(self.cnt.max()))
        bt, bk, brr = self.bt[:, :live], self.btype[:, :live], self.brr[:, :live]
        after = (bt[:, :, None] <= t[None, None, :]).sum(1)  # beats at or before each sample
        y = np.zeros((len(self.specs), len(t)))
        for j, ok in ((after - 1, after >= 1), (after, after < self.cnt[:, None])):
            jj = np.clip(j, 0, live - 1)
            tb = np.take_along_axis(bt, jj, 1)
            dt = np.where(ok, t[None, :] - tb, 10.0)
            y += _beat_wave(dt, np.take_along_axis(bk, jj, 1), np.take_along_axis(brr, jj, 1))
        af = np.zeros_like(y, dtype=bool)
        for e in range(self.ep_kind.shape[1]):
            af |= (
                (self.ep_kind[:, e, None] == _AF)
                & (self.ep_start[:, e, None] <= t)
                & (t < self.ep_stop[:, e, None])
            )
        if af.any():
            ph = self.phase[:, 2:3]
            fw = 0.05 * np.sin(2 * np.pi * (6.0 * t + 0.3 * np.sin(2 * np.pi * 0.2 * t + ph)) + ph)
            y += np.where(af, fw, 0.0)
        self._drop_old_beats(t[-1])
        return y[:, :, None] * self.gain[:, None, :]

    def _episode_envelope(self, t: np.ndarray, code: int, ramp: float, default_amp: float):
        """Sum over episodes of ``code`` of amplitude x raised-cosine envelope: [devices, n]; and
        time since each sample's episode start (for phase), or None when no device has one."""
        if not (self.ep_kind == code).any():
            return None, None
        env = np.zeros((len(self.specs), len(t)))
        since = np.zeros_like(env)
        dur = np.ones_like(env)
        for e in range(self.ep_kind.shape[1]):
            mine = (self.ep_kind[:, e] == code)[:, None]
            u = t[None, :] - self.ep_start[:, e, None]
            d = (self.ep_stop[:, e] - self.ep_start[:, e])[:, None]
            amp = np.where(self.ep_amp[:, e] > 0, self.ep_amp[:, e], default_amp)[:, None]
            w = np.where(mine, amp * _ramp(u, d, ramp), 0.0)
            inside = w > 0
            since, dur = np.where(inside, u, since), np.where(inside, d, dur)
            env += w
        return env, (since, dur)

    def _eeg(self, t: np.ndarray) -> np.ndarray:
        x = EEG_BACKGROUND_UV * self.pink.next(len(t))
        alpha = self.alpha_amp[:, None] * np.sin(2 * np.pi * 10.0 * t[None, :] + self.phase[:, 2:3])
        x += alpha[:, :, None]
        env, sd = self._episode_envelope(t, _SEIZURE, 1.0, SEIZURE_AMPLITUDE_UV)
        if env is not None:
            u, d = sd
            phase = 2 * np.pi * (7.0 * u - 4.0 * u * u / (2 * d))  # 7 Hz slowing to 3 Hz
            wrapped = np.angle(np.exp(1j * phase))
            w = np.exp(-0.5 * (wrapped / 0.35) ** 2) - 0.45 * np.exp(
                -0.5 * ((np.abs(wrapped) - 2.2) / 0.7) ** 2
            )
            x += (env * w)[:, :, None] * self.ch_gain[:, None, :]
        return x * np.array([s.amplitude for s in self.specs])[:, None, None]

    def _emg(self, t: np.ndarray) -> np.ndarray:
        env, _ = self._episode_envelope(t, _BURST, 0.05, BURST_AMPLITUDE_MV)
        level = EMG_REST_MV + (0.0 if env is None else env)
        amp = np.array([s.amplitude for s in self.specs])[:, None]
        return self.band.next(len(t)) * (level * amp)[:, :, None]

    def _impair(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        if self.white.any():
            x += self.rng.standard_normal(x.shape) * self.white[:, None, None]
        if len(self.emg.rows):
            x[self.emg.rows] += self.emg.next(len(t)) * self.emg_sd[self.emg.rows, None, None]
        if self.wander.any():
            ph = self.phase
            w = np.sin(2 * np.pi * 0.25 * t + ph[:, 0:1]) + 0.5 * np.sin(2 * np.pi * 0.07 * t + ph[:, 1:2])
            x += (self.wander[:, None] * w)[:, :, None]
        self._schedule_events(t[-1] + 1 / self.fs)
        t0, t1 = t[0], t[-1] + 1 / self.fs
        keep = []
        lead = []
        for ev in self.events:
            r, code, a, b, amp, f, ph = ev
            if b > t1:
                keep.append(ev)
            if b <= t0 or a >= t1:
                continue
            i0, i1 = np.searchsorted(t, [a, b])
            if code == _MOTION:
                u = t[i0:i1] - a
                win = np.sin(np.pi * u / (b - a)) ** 2
                x[r, i0:i1, :] += (amp * win * np.sin(2 * np.pi * f * u + ph))[:, None]
            else:
                lead.append((r, i0, i1))
        for r, i0, i1 in lead:  # after every additive impairment
            x[r, i0:i1, :] = np.nan if self.lead_nan[r] else self.rail[r]
        self.events = keep
        return x

    def next_block(self, n: int) -> np.ndarray:
        """The next ``n`` samples of every device, [devices, n, channels] float64, physical units."""
        t = (self.n_done + np.arange(n)) / self.fs
        if self.kind == ChannelKind.ECG:
            x = self._ecg(t)
        elif self.kind == ChannelKind.EEG:
            x = self._eeg(t)
        elif self.kind == ChannelKind.EMG:
            x = self._emg(t)
        else:
            x = np.zeros((len(self.specs), n, self.channels))
        x = self._impair(np.ascontiguousarray(x), t)
        self.n_done += n
        return x

    # -- ground truth ----------------------------------------------------------------------

    def log_dropped(self, rows: np.ndarray, seqs: np.ndarray) -> None:
        self._drop_log.append((rows, seqs))

    def truth(self, row: int) -> GroundTruth:
        """Ground truth of device ``row`` of this cohort up to the samples generated so far."""
        spec = self.specs[row]
        beats, labels = np.zeros(0, dtype=np.int64), np.zeros(0, dtype="<U1")
        if self._beat_log:
            r = np.concatenate([b[0] for b in self._beat_log])
            s = np.concatenate([b[1] for b in self._beat_log])
            k = np.concatenate([b[2] for b in self._beat_log])
            m = (r == row) & (s < self.n_done)
            beats, labels = s[m], np.where(k[m] == _VENT, "V", "N")
        eps = [(e.kind, e.start_s, e.stop_s) for e in spec.episodes]
        eps += [(k, a, b) for r, k, a, b in self._event_log if r == row]
        dropped = np.zeros(0, dtype=np.int64)
        if self._drop_log:
            r = np.concatenate([d[0] for d in self._drop_log])
            dropped = np.concatenate([d[1] for d in self._drop_log])[r == row]
        return GroundTruth(
            spec.device_id, self.fs, beats, labels, tuple(sorted(eps, key=lambda e: e[1])), dropped
        )


def simulate(spec: DeviceSpec, duration_s: float, block_s: float = 2.0) -> tuple[np.ndarray, GroundTruth]:
    """One device's signal for ``duration_s`` ([samples, channels], physical units, before
    quantisation and link faults) and its ground truth."""
    cohort = Cohort([spec])
    n = int(round(duration_s * spec.fs))
    step = max(1, int(round(block_s * spec.fs)))
    parts = [cohort.next_block(min(step, n - i))[0] for i in range(0, n, step)]
    x = np.concatenate(parts) if parts else np.zeros((0, spec.channels))
    return x, cohort.truth(0)


# ---------------------------------------------------------------------------------------------
# The transport


class SimulatorTransport(Transport):
    """Serve simulated devices as Vigil frames, paced at ``speed`` x real time (0: as fast as
    possible), for ``duration_s`` of simulated time (``None``: until :meth:`close`).

    Each block (``block_s`` of signal per cohort) is generated for all of a cohort's devices at
    once, quantised to each device's format (scale and offset from its full scale), cut into
    frames, thinned by packet loss, and delivered in order of delivery time: the time of a frame's
    last sample plus its jitter delay. Yields one ``LinkEvent(CONNECTED)`` per device first and one
    ``LinkEvent(CLOSED)`` per device last. :meth:`truth` gives a device's :class:`GroundTruth`.
    """

    name = "simulator"

    def __init__(
        self,
        devices: Sequence[DeviceSpec],
        speed: float = 1.0,
        duration_s: float | None = None,
        block_s: float = 1.0,
        wire: bool = False,
        stream_id: int = 0,
    ) -> None:
        super().__init__()
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids must be distinct")
        groups: dict[tuple, list[DeviceSpec]] = {}
        for d in devices:
            groups.setdefault(d.cohort_key, []).append(d)
        self.cohorts = [Cohort(g) for g in groups.values()]
        self._where = {s.device_id: (c, r) for c in self.cohorts for r, s in enumerate(c.specs)}
        self.speed, self.duration_s, self.block_s, self.wire = float(speed), duration_s, block_s, wire
        self.stream_id = stream_id
        self.samples_generated = 0
        self._sources = {i: f"sim:{i}" for i in ids}

    def truth(self, device_id: int) -> GroundTruth:
        c, r = self._where[device_id]
        return c.truth(r)

    def _frames(self, c: Cohort, x: np.ndarray, n0: int) -> tuple[list[Frame], np.ndarray, list[str]]:
        """Frames of one block (device-major), their virtual delivery times, their sources."""
        d, n, ch = x.shape
        ns = c.frame_samples
        fmt = c.sample_format
        raw = quantise(x, c.scale[:, None, :], c.offset[:, None, :], fmt)
        nf = -(-n // ns)
        first = n0 + np.arange(nf) * ns  # stream sample index of each frame's first sample
        k0 = n0 // ns
        seq = (c.seq0[:, None] + k0 + np.arange(nf)) % (1 << 32)
        ts = c.start_us[:, None] + np.round(first * (1e6 / c.fs)).astype(np.int64)
        last_t = (np.minimum(first + ns, n0 + n)) / c.fs
        deliv = np.broadcast_to(last_t, (d, nf)).copy()
        if c.jitter.any():
            deliv += c.rng.exponential(1.0, (d, nf)) * c.jitter[:, None]
        keep = np.ones((d, nf), dtype=bool)
        if c.loss.any():
            keep = c.rng.random((d, nf)) >= c.loss[:, None]
            lost = np.nonzero(~keep)
            c.log_dropped(lost[0], seq[lost])
        kinds = (c.kind,) * ch
        rows, cols = np.nonzero(keep)
        seq_l, ts_l = seq[rows, cols].tolist(), ts[rows, cols].tolist()
        ids, scale, offset = c.ids, list(c.scale), list(c.offset)
        frames = [
            Frame(
                ids[r],
                self.stream_id,
                s,
                t,
                c.fs,
                fmt,
                kinds,
                scale[r],
                offset[r],
                raw[r, j * ns : (j + 1) * ns],
            )
            for r, j, s, t in zip(rows.tolist(), cols.tolist(), seq_l, ts_l, strict=True)
        ]
        sources = [self._sources[ids[r]] for r in rows.tolist()]
        return frames, deliv[rows, cols], sources

    async def _emit(self, frames, sources, deliv, t0: float) -> AsyncIterator[Received]:
        """Yield frames in delivery order, sleeping until each is due when paced."""
        i, m = 0, len(frames)
        due = t0 + deliv / self.speed if self.speed > 0 else None
        while i < m and not self._closed:
            if due is None:
                j = m
            else:
                now = time.monotonic()
                j = int(np.searchsorted(due, now, side="right"))
                if j <= i:
                    await asyncio.sleep(due[i] - now)
                    continue
            for k in range(i, j):
                f = frames[k]
                if self.wire:
                    data = encode(f)
                    self.stats.bytes += len(data)
                    f = decode(data)
                self.stats.frames += 1
                yield Received(f, sources[k], time.monotonic())
            i = j

    async def items(self) -> AsyncIterator[Item]:
        for c in self.cohorts:
            for s in c.specs:
                yield LinkEvent(
                    f"sim:{s.device_id}", LinkState.CONNECTED, f"simulated {ChannelKind(s.kind).name}"
                )
        t0 = time.monotonic()
        pend_f: list[Frame] = []
        pend_s: list[str] = []
        pend_t = np.zeros(0)
        limit = {
            id(c): math.inf if self.duration_s is None else round(self.duration_s * c.fs)
            for c in self.cohorts
        }
        while not self._closed:
            live = [c for c in self.cohorts if c.n_done < limit[id(c)]]
            if not live:
                break
            c = min(live, key=lambda c: c.n_done / c.fs)
            per = max(1, round(self.block_s * c.fs / c.frame_samples)) * c.frame_samples
            n = int(min(per, limit[id(c)] - c.n_done))
            n0 = c.n_done
            frames, deliv, sources = self._frames(c, c.next_block(n), n0)
            self.samples_generated += n * len(c.specs)
            pend_f += frames
            pend_s += sources
            pend_t = np.concatenate([pend_t, deliv])
            live = [c for c in self.cohorts if c.n_done < limit[id(c)]]
            horizon = min((c.n_done / c.fs for c in live), default=math.inf)
            order = np.argsort(pend_t, kind="stable")
            ready = int(np.searchsorted(pend_t[order], horizon, side="right"))
            out, rest = order[:ready], order[ready:]
            async for item in self._emit([pend_f[k] for k in out], [pend_s[k] for k in out], pend_t[out], t0):
                yield item
            pend_f, pend_s, pend_t = [pend_f[k] for k in rest], [pend_s[k] for k in rest], pend_t[rest]
            await asyncio.sleep(0)
        for c in self.cohorts:
            for s in c.specs:
                yield LinkEvent(f"sim:{s.device_id}", LinkState.CLOSED)
        self._closed = True
