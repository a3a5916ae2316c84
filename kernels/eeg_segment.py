"""``eeg-segment/1``: live EEG -> the seizure network's input windows (numpy; causal; streaming).

The chain, per channel, at whatever rate the device streams (``fs_in``):

1. **Bad samples** (non-finite or beyond :data:`~vigil.kernels.clean.MAX_ABS`) are held at the last
   good value (:class:`~vigil.kernels.filters.SOSFilter`) and *flagged*; a window that holds a flagged
   sample is not classified (``valid`` False) and is counted in ``n_invalid``.
2. **Band-pass** 0.5-40 Hz, Butterworth order 2 per edge, causal, started at the first sample's step
   steady state (no DC start-up transient). The upper edge is lowered to ``0.45 * min(fs_in, fs)``
   when a rate cannot carry it; at ``fs_in`` it is also the anti-aliasing filter of step 3.
3. **Resampling** to the card's rate ``fs`` (128 Hz) by linear interpolation (:class:`StreamResampler`):
   output sample ``j`` is at input position ``p = j * fs_in / fs``, ``y = x[i] + (p - i) (x[i+1] - x[i])``
   with ``i = floor(p)``; it is emitted as soon as input ``i + 1`` (or ``i`` when ``p`` is whole)
   has arrived. Equal rates pass samples through unchanged.
4. **Windows** of ``window_s`` (4 s = 512 samples) every ``hop_s`` (1 s) at ``fs``
   (:class:`~vigil.kernels.sliding.SlidingWindows`): window ``k`` holds resampled samples
   ``[k*hop, k*hop + size)`` and ends at ``end_s = (k*hop + size - 1) / fs`` seconds.
5. **Normalisation** per window and channel: ``x = (w - mean) / sd`` (population sd) and
   ``level = log10(sd)`` with ``sd`` in input units (uV for the card). A window with ``sd <= min_sd``
   (a flat, disconnected lead) is not classified either.

The network takes each channel's window as one item: ``{"eeg": [n, 1, size], "level": [n, 1]}``
(:meth:`EEGSegments.inputs`). Every stage keeps its state between calls, so feeding a record in
chunks of any size gives exactly the windows of one batch call (:func:`eeg_segments`). Training
(``vigil.models.seizure``) calls the very same functions.

Reference (tests): ``scipy.signal.sosfilt`` with ``zi = sosfilt_zi(sos) * x[0]``, then ``numpy.interp``
at ``j * fs_in / fs``, then ``numpy.lib.stride_tricks.sliding_window_view(...)[::hop]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .clean import MAX_ABS
from .filters import SOSFilter, design_bandpass
from .sliding import SlidingWindows, positive_int, window_samples
from .validate import as_signal, check_fs

PREPROCESSING_ID = "eeg-segment/1"
#: The seizure network's sample rate (Hz), window and hop (s), pass-band (Hz) and flat-lead limit (uV).
FS = 128.0
WINDOW_S = 4.0
HOP_S = 1.0
BAND = (0.5, 40.0)
MIN_SD = 0.1


class StreamResampler:
    """Causal linear-interpolation resampler from ``fs_in`` to ``fs_out`` for [samples, channels].

    ``process(x, bad)`` returns the output samples the chunk completes and their flags (an output is
    flagged when an input sample it interpolates from, with a non-zero weight, was flagged).
    Positions are computed from global sample indices, so chunking never changes the result.
    """

    def __init__(self, fs_in: float, fs_out: float, n_channels: int):
        self.fs_in, self.fs_out = check_fs(fs_in), check_fs(fs_out)
        self.ratio = self.fs_in / self.fs_out
        self.n_channels = positive_int(n_channels, "n_channels")
        self.reset()

    def reset(self) -> None:
        """Forget the stream."""
        self.n_in = 0
        self.n_out = 0
        self._prev = np.zeros((1, self.n_channels))
        self._prev_bad = np.zeros((1, self.n_channels), dtype=bool)

    def process(self, x: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Resample one chunk ``x`` [n, ch] (float, finite) with its flags ``bad`` [n, ch] (bool)."""
        n = len(x)
        if n == 0:
            return np.empty((0, self.n_channels)), np.empty((0, self.n_channels), dtype=bool)
        base = self.n_in - 1 if self.n_in else 0  # global index of ext[0]
        ext = np.concatenate([self._prev, x]) if self.n_in else x
        ext_bad = np.concatenate([self._prev_bad, bad]) if self.n_in else bad
        last = self.n_in + n - 1
        j = np.arange(self.n_out, int(np.floor(last / self.ratio)) + 2)
        p = j * self.ratio
        j, p = j[p <= last], p[p <= last]
        i0 = np.floor(p).astype(np.int64)
        frac = (p - i0)[:, None]
        i1 = np.minimum(i0 + 1, last)
        a, b = ext[i0 - base], ext[i1 - base]
        y = a + frac * (b - a)
        ybad = ext_bad[i0 - base] | ((frac > 0) & ext_bad[i1 - base])
        self._prev, self._prev_bad = x[-1:].copy(), bad[-1:].copy()
        self.n_in += n
        self.n_out += len(j)
        return y, ybad


def bad_samples(a: np.ndarray) -> np.ndarray:
    """The samples the streams hold instead of using (non-finite or beyond ``MAX_ABS``)."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(a) <= MAX_ABS)


class WindowChain:
    """Steps 1-4 of the module docstring for any window/hop/band: raw chunks -> windows + flags.

    ``process(chunk)`` returns ``(windows [k, size, ch] float64, bad [k, ch] bool)``. Shared by
    ``eeg-segment/1`` and ``emg-window/1``.
    """

    def __init__(
        self,
        fs_in: float,
        n_channels: int,
        fs: float,
        window_s: float,
        hop_s: float,
        band: tuple[float, float],
    ):
        self.fs_in, self.fs = check_fs(fs_in), check_fs(fs)
        self.n_channels = positive_int(n_channels, "n_channels")
        lo, hi = band
        hi = min(hi, 0.45 * min(self.fs_in, self.fs))
        if not 0 < lo < hi:
            raise ValueError(f"fs_in = {self.fs_in:g} Hz is too low for the {band[0]:g}-{band[1]:g} Hz band")
        self.band = (float(lo), float(hi))
        self._filter = SOSFilter(design_bandpass(lo, hi, self.fs_in), self.n_channels, init="step")
        self._resampler = StreamResampler(self.fs_in, self.fs, self.n_channels)
        self.size = window_samples(window_s, self.fs, "window_s")
        self.hop = window_samples(hop_s, self.fs, "hop_s")
        self._windows = SlidingWindows(self.size, self.hop, 2 * self.n_channels)
        self.n_windows = 0

    @property
    def n_bad(self) -> int:
        """Input samples held so far (non-finite or out of range)."""
        return self._filter.n_bad

    def reset(self) -> None:
        """Forget the stream (the counters keep counting)."""
        self._filter.reset()
        self._resampler.reset()
        self._windows.reset()
        self.n_windows = 0

    def process(self, x: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows completed by chunk ``x`` [samples, ch]: ``(windows, bad, end_s)``."""
        a = as_signal(x, dtype=np.float64)
        if a.shape[1] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {a.shape[1]}")
        flags = bad_samples(a)
        y, ybad = self._resampler.process(self._filter.process(a), flags)
        w = self._windows.push(np.concatenate([y, ybad.astype(np.float64)], axis=1))
        nch = self.n_channels
        k = self.n_windows + np.arange(len(w))
        self.n_windows += len(w)
        end_s = (k * self.hop + self.size - 1) / self.fs
        return w[:, :, :nch], w[:, :, nch:].max(axis=1) > 0, end_s


@dataclass(frozen=True)
class EEGSegments:
    """Windows of one chunk: ``x`` [k, ch, size] float32 (normalised), ``level`` [k, ch] float32
    (log10 sd), ``valid`` [k, ch] bool, ``end_s`` [k] (s from the stream's first sample)."""

    x: np.ndarray
    level: np.ndarray
    valid: np.ndarray
    end_s: np.ndarray

    def inputs(self) -> dict[str, np.ndarray]:
        """The network's inputs for every (window, channel), row ``k * ch + c``; mask with
        ``valid.reshape(-1)`` before running it."""
        k, ch, size = self.x.shape
        return {"eeg": self.x.reshape(k * ch, 1, size), "level": self.level.reshape(k * ch, 1)}


def normalise(w: np.ndarray, min_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window and channel of ``w`` [k, size, ch]: ``(x [k, ch, size], level [k, ch], ok [k, ch])``."""
    mean = w.mean(axis=1, keepdims=True)
    sd = np.sqrt(((w - mean) ** 2).mean(axis=1))
    ok = sd > min_sd
    safe = np.where(ok, sd, 1.0)
    x = ((w - mean) / safe[:, None, :]).transpose(0, 2, 1)
    return x.astype(np.float32), np.log10(safe).astype(np.float32), ok


class EEGSegmenter:
    """Streaming ``eeg-segment/1`` for ``n_channels`` EEG channels at ``fs_in`` Hz (see module doc)."""

    def __init__(
        self,
        fs_in: float,
        n_channels: int = 1,
        fs: float = FS,
        window_s: float = WINDOW_S,
        hop_s: float = HOP_S,
        band: tuple[float, float] = BAND,
        min_sd: float = MIN_SD,
    ):
        self.chain = WindowChain(fs_in, n_channels, fs, window_s, hop_s, band)
        self.min_sd = float(min_sd)
        self.n_invalid = 0

    @property
    def n_bad(self) -> int:
        """Input samples held (non-finite or out of range)."""
        return self.chain.n_bad

    @property
    def size(self) -> int:
        return self.chain.size

    def reset(self) -> None:
        """Forget the stream (counters keep counting)."""
        self.chain.reset()

    def process(self, x: object) -> EEGSegments:
        """Feed one chunk [samples, channels] (uV); return the windows it completed."""
        w, bad, end_s = self.chain.process(x)
        xs, level, ok = normalise(w, self.min_sd)
        valid = ok & ~bad
        self.n_invalid += int((~valid).sum())
        return EEGSegments(xs, level, valid, end_s)


def eeg_segments(x: object, fs_in: float, **kwargs: object) -> EEGSegments:
    """All windows of a whole record [samples, channels] (one call on a fresh :class:`EEGSegmenter`)."""
    a = as_signal(x)
    return EEGSegmenter(fs_in, a.shape[1], **kwargs).process(a)
