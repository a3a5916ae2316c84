"""Per-window EEG features: Welch band powers, relative powers, line length, spectral edge.

For each analysis window of ``window_s`` seconds (one every ``hop_s`` seconds, see
:mod:`vigil.kernels.sliding`) and each channel:

* **PSD** by Welch's method, as ``scipy.signal.welch(w, fs, window="hann", nperseg, noverlap)``:
  the window is cut into segments of ``nperseg`` samples, ``step = nperseg - noverlap`` apart
  (trailing samples that fill no segment are dropped); each segment has its mean removed, is
  tapered by the periodic Hann window ``h[j] = 0.5 - 0.5 cos(2 pi j / nperseg)`` and transformed
  (``numpy.fft.rfft``)::

      P(f_i) = c_i / (fs * sum(h**2)) * mean_segments |X(f_i)|**2      [units**2 / Hz]

  with ``f_i = i fs / nperseg`` and ``c_i = 2`` (one-sided) except ``c = 1`` at DC and, for even
  ``nperseg``, at Nyquist.
* **Band power** (units**2): ``df * sum P(f_i)`` over the bins ``lo <= f_i < hi``,
  ``df = fs/nperseg``, for delta 0.5-4, theta 4-8, alpha 8-13, beta 13-30 and gamma 30-45 Hz.
  Upper edges are clipped to fs/2; a band so clipped may hold no bin and then has power 0.
* **Relative power**: band power / total power over 0.5-45 Hz (the union of the bands), 0 if the
  total is 0.
* **Line length** (units): ``sum |w[j] - w[j-1]|`` over the window (Esteller et al. 2001, without
  the normalising constant).
* **Spectral edge frequency** (Hz): the lowest bin frequency ``f_i`` of the total band at which the
  cumulative PSD reaches ``edge`` (default 0.95) of the total; 0 if the total is 0.

Design: a :class:`~vigil.kernels.sliding.SlidingWindows` ring buffer (Numba) hands out complete
windows; the segments of a batch of windows are detrended and tapered (Numba), transformed together
by one ``numpy.fft.rfft`` call (Numba has no FFT) and reduced to features by a Numba kernel with
fixed loop order. Every window is computed by the same arithmetic whichever batch it lands in, so
chunked streaming equals the batch call exactly. Non-finite samples are held (see
:mod:`vigil.kernels.clean`) and counted in ``EEGFeatureStream.n_bad``.

References: Welch, IEEE Trans. Audio Electroacoust. 15:70 (1967); ``scipy.signal.welch``;
Esteller et al., Clin. Neurophysiol. 112:2204 (2001) (line length).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .sliding import SlidingWindows, window_samples
from .validate import as_signal, check_fs

#: EEG bands (name, low Hz, high Hz); bins with low <= f < high belong to a band.
BANDS = (
    ("delta", 0.5, 4.0),
    ("theta", 4.0, 8.0),
    ("alpha", 8.0, 13.0),
    ("beta", 13.0, 30.0),
    ("gamma", 30.0, 45.0),
)
#: Feature rows returned per window, in this order along axis 1.
FEATURES = (
    *(name for name, _, _ in BANDS),
    *(f"rel_{name}" for name, _, _ in BANDS),
    "line_length",
    "sef",
)


@njit(nogil=True, cache=True)
def _segments(windows, taper, step, out):
    """``out[k, s, c, :]`` = segment ``s`` of window ``k``, channel ``c``: mean removed, tapered."""
    n_win, n_seg, nch, nper = out.shape
    for k in range(n_win):
        for s in range(n_seg):
            o = s * step
            for c in range(nch):
                m = 0.0
                for j in range(nper):
                    m += windows[k, o + j, c]
                m /= nper
                for j in range(nper):
                    out[k, s, c, j] = (windows[k, o + j, c] - m) * taper[j]


@njit(nogil=True, cache=True)
def _welch_average(power, weight, psd):
    """``psd[k, i, c] = weight[i] * sum_s power[k, s, c, i]`` (weight: 1/n_seg and scaling)."""
    n_win, n_seg, nch, nfreq = power.shape
    for k in range(n_win):
        for c in range(nch):
            for i in range(nfreq):
                acc = 0.0
                for s in range(n_seg):
                    acc += power[k, s, c, i]
                psd[k, i, c] = weight[i] * acc


@njit(nogil=True, cache=True)
def _window_features(psd, windows, freqs, df, band_lo, band_hi, total_lo, total_hi, edge, out):
    """Band powers, relative powers, line length and SEF into ``out`` [k, 2*n_bands + 2, ch]."""
    n_win, nfreq, nch = psd.shape
    nb = band_lo.shape[0]
    size = windows.shape[1]
    for k in range(n_win):
        for c in range(nch):
            total = 0.0
            for i in range(total_lo, total_hi):
                total += psd[k, i, c]
            for b in range(nb):
                acc = 0.0
                for i in range(band_lo[b], band_hi[b]):
                    acc += psd[k, i, c]
                out[k, b, c] = df * acc
                out[k, nb + b, c] = acc / total if total > 0.0 else 0.0
            ll = 0.0
            for j in range(1, size):
                ll += abs(windows[k, j, c] - windows[k, j - 1, c])
            out[k, 2 * nb, c] = ll
            sef = 0.0
            if total > 0.0:
                # the last cum equals total (same summation order) >= edge * total, so this breaks
                target = edge * total
                cum = 0.0
                for i in range(total_lo, total_hi):
                    cum += psd[k, i, c]
                    if cum >= target:
                        sef = freqs[i]
                        break
            out[k, 2 * nb + 1, c] = sef


class _Welch:
    """Set-up of Welch's method for windows of ``size`` samples (taper, scaling, bins)."""

    def __init__(self, fs: float, size: int, nperseg: int | None, noverlap: int | None):
        nper = min(size, int(round(2.0 * fs))) if nperseg is None else nperseg
        if int(nper) != nper or not 2 <= nper <= size:
            raise ValueError(f"nperseg must be an integer in [2, window size {size}], got {nper!r}")
        nover = nper // 2 if noverlap is None else noverlap
        if int(nover) != nover or not 0 <= nover < nper:
            raise ValueError(f"noverlap must be an integer in [0, nperseg={nper}), got {nover!r}")
        self.nperseg, self.step = int(nper), int(nper - nover)
        self.n_seg = (size - self.nperseg) // self.step + 1
        self.freqs = np.fft.rfftfreq(self.nperseg, 1.0 / fs)
        self.df = fs / self.nperseg
        self.taper = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(self.nperseg) / self.nperseg)
        onesided = np.full(self.freqs.size, 2.0)
        onesided[0] = 1.0
        if self.nperseg % 2 == 0:
            onesided[-1] = 1.0
        self.weight = onesided / (fs * np.sum(self.taper**2) * self.n_seg)

    def bins(self, lo: float, hi: float) -> tuple[int, int]:
        """Index range ``[i0, i1)`` of the bins with ``lo <= f < hi``."""
        return (
            int(np.searchsorted(self.freqs, lo, side="left")),
            int(np.searchsorted(self.freqs, hi, side="left")),
        )

    def psd(self, windows: np.ndarray) -> np.ndarray:
        """PSD [k, n_freq, ch] of each window of ``windows`` [k, size, ch]."""
        n_win, _, nch = windows.shape
        seg = np.empty((n_win, self.n_seg, nch, self.nperseg))
        _segments(windows, self.taper, self.step, seg)
        spec = np.fft.rfft(seg, axis=-1)
        power = spec.real**2 + spec.imag**2
        psd = np.empty((n_win, self.freqs.size, nch))
        _welch_average(power, self.weight, psd)
        return psd


def welch_psd(
    x: np.ndarray, fs: float, nperseg: int | None = None, noverlap: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD of ``x`` [samples, channels] (or [samples]), as ``scipy.signal.welch(x, fs,
    axis=0)`` with a Hann window: returns ``(f [n_freq] Hz, psd [n_freq, channels] units**2/Hz)``.

    ``nperseg`` defaults to 2 s of samples (at most ``len(x)``), ``noverlap`` to ``nperseg // 2``.
    Non-finite samples propagate; use :class:`EEGFeatureStream` for live streams.
    """
    fs = check_fs(fs)
    a = as_signal(x, dtype=np.float64)
    if len(a) < 2:
        raise ValueError(f"x needs at least 2 samples, got {len(a)}")
    plan = _Welch(fs, len(a), nperseg, noverlap)
    return plan.freqs.copy(), plan.psd(a[None])[0]


class EEGFeatureStream:
    """Streaming per-window EEG features for ``n_channels`` channels sampled at ``fs`` Hz.

    ``process(chunk)`` takes [samples, channels] and returns the feature rows of the windows the
    chunk completed, shape [k, len(FEATURES), channels] (k may be 0). Window ``k`` covers samples
    ``[k*hop, k*hop + window)`` with ``window = round(window_s*fs)``, ``hop = round(hop_s*fs)``.
    ``nperseg``/``noverlap`` are the Welch segment length and overlap in samples (defaults: 2 s,
    at most the window, and half of it); ``edge`` is the SEF fraction in (0, 1].
    """

    def __init__(
        self,
        fs: float,
        n_channels: int,
        window_s: float = 4.0,
        hop_s: float = 1.0,
        nperseg: int | None = None,
        noverlap: int | None = None,
        edge: float = 0.95,
    ):
        self.fs = check_fs(fs)
        size = window_samples(window_s, self.fs, "window_s")
        if size < 2:
            raise ValueError(f"window_s must span at least 2 samples, got {window_s!r}")
        self._windows = SlidingWindows(size, window_samples(hop_s, self.fs, "hop_s"), n_channels)
        self._welch = _Welch(self.fs, size, nperseg, noverlap)
        if not isinstance(edge, int | float | np.floating) or not 0.0 < edge <= 1.0:
            raise ValueError(f"edge must be a fraction in (0, 1], got {edge!r}")
        self.edge = float(edge)
        nyq = self.fs / 2
        lo = np.empty(len(BANDS), dtype=np.int64)
        hi = np.empty(len(BANDS), dtype=np.int64)
        for b, (name, f_lo, f_hi) in enumerate(BANDS):
            lo[b], hi[b] = self._welch.bins(f_lo, min(f_hi, nyq))
            if f_hi <= nyq and hi[b] <= lo[b]:  # a band cut by fs/2 may be empty (power 0)
                raise ValueError(
                    f"{name} band {f_lo:g}-{min(f_hi, nyq):g} Hz holds no frequency bin at a"
                    f" resolution of fs/nperseg = {self._welch.df:g} Hz: use a longer nperseg"
                )
        self._band_lo, self._band_hi = lo, hi
        self._total = (int(lo[0]), int(hi[-1]))
        if self._total[1] <= self._total[0]:
            raise ValueError(f"fs = {self.fs:g} Hz is too low for EEG above {BANDS[0][1]:g} Hz")

    @property
    def n_channels(self) -> int:
        return self._windows.n_channels

    @property
    def n_bad(self) -> int:
        """Non-finite samples held so far."""
        return self._windows.n_bad

    @property
    def freqs(self) -> np.ndarray:
        """Welch bin frequencies (Hz)."""
        return self._welch.freqs

    def reset(self) -> None:
        """Forget the stream."""
        self._windows.reset()

    def _features(self, windows: np.ndarray) -> np.ndarray:
        out = np.empty((len(windows), len(FEATURES), self.n_channels))
        psd = self._welch.psd(windows)
        t0, t1 = self._total
        w = self._welch
        _window_features(psd, windows, w.freqs, w.df, self._band_lo, self._band_hi, t0, t1, self.edge, out)
        return out

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed one chunk [samples, channels]; return features [k, len(FEATURES), channels]."""
        rows = [self._features(w) for w in self._windows.batches(x) if len(w)]
        if not rows:
            return np.empty((0, len(FEATURES), self.n_channels))
        return np.concatenate(rows)


def eeg_features(
    x: np.ndarray,
    fs: float,
    window_s: float = 4.0,
    hop_s: float = 1.0,
    nperseg: int | None = None,
    noverlap: int | None = None,
    edge: float = 0.95,
) -> np.ndarray:
    """Features [n_windows, len(FEATURES), channels] of a whole record [samples, channels].

    Same as one :meth:`EEGFeatureStream.process` call on a fresh stream.
    """
    a = as_signal(x)
    stream = EEGFeatureStream(fs, a.shape[1], window_s, hop_s, nperseg, noverlap, edge)
    return stream.process(a)


def band_powers(
    x: np.ndarray,
    fs: float,
    window_s: float = 4.0,
    hop_s: float = 1.0,
    nperseg: int | None = None,
    noverlap: int | None = None,
) -> np.ndarray:
    """Absolute band powers [n_windows, len(BANDS), channels] (units**2) of :func:`eeg_features`."""
    return eeg_features(x, fs, window_s, hop_s, nperseg, noverlap)[:, : len(BANDS)]
