"""Streaming IIR filters as cascaded second-order sections, and the designs Vigil uses.

The kernel :func:`sosfilt` has the contract of ``scipy.signal.sosfilt(sos, x, axis=0, zi=zi)``:
``x`` is [samples, channels] (or [samples]), ``zi`` is [n_sections, 2, channels] (or [n_sections, 2])
and the final state ``zf`` comes back with ``zi``'s shape, so filtering a record in chunks gives the
batch result exactly. Each section is a direct-form II transposed biquad::

    y[n]  = b0 x[n] + z0
    z0   <- b1 x[n] - a1 y[n] + z1
    z1   <- b2 x[n] - a2 y[n]

Arithmetic and state are float64 whatever the sample dtype; ``y`` has the dtype of ``x`` (float32
or float64), so float32 streams halve memory traffic without accumulating rounding in the state.

:class:`SOSFilter` wraps the kernel for a live stream: it owns the state, applies the bad-sample
policy of :mod:`vigil.kernels.clean` (non-finite samples are held and counted, never fed to the
recursion) and can start from the step-response steady state to avoid the start-up transient.

Design helpers (Butterworth, notch) come from :mod:`vigil.kernels.iir_design`, plain numpy tested
against ``scipy.signal``, so the running monitor never imports ``scipy.signal`` (over a second of
start-up). References: scipy.signal.sosfilt; Oppenheim & Schafer, *Discrete-Time Signal
Processing*, 3rd ed., sec. 6.5 (transposed direct forms).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .clean import MAX_ABS, hold_bad_samples
from .iir_design import butter_sos, notch_sos, sos_step_state
from .validate import as_signal, check_fs

#: Causal default pass-bands (Hz) per modality.
DEFAULT_BANDS = {"ecg": (0.5, 40.0), "eeg": (0.5, 45.0), "emg": (20.0, 450.0)}


@njit(nogil=True, cache=True)
def _sosfilt_inplace(sos, y, z):
    """Filter ``y`` [n, ch] in place through every section; ``z`` [sections, 2, ch] float64 state.

    Sections run one after another over the whole block with channels innermost, so the inner loop
    is contiguous and vectorises across channels.
    """
    n, nch = y.shape
    for s in range(sos.shape[0]):
        b0, b1, b2 = sos[s, 0], sos[s, 1], sos[s, 2]
        a1, a2 = sos[s, 4], sos[s, 5]
        z0 = z[s, 0]
        z1 = z[s, 1]
        for i in range(n):
            for c in range(nch):
                xi = np.float64(y[i, c])
                yi = b0 * xi + z0[c]
                z0[c] = b1 * xi - a1 * yi + z1[c]
                z1[c] = b2 * xi - a2 * yi
                y[i, c] = yi


@njit(nogil=True, cache=True)
def _check_sos_values(sos):
    for s in range(sos.shape[0]):
        for k in range(6):
            if not np.isfinite(sos[s, k]):
                raise ValueError("sos contains non-finite coefficients")
        if sos[s, 3] != 1.0:
            raise ValueError("sos must be normalised so that a0 == 1 in every section")


@njit(nogil=True, cache=True)
def _sosfilt_copy(sos, x, zi):
    """Checked, allocating form of :func:`_sosfilt_inplace`: returns ``(y, zf)``."""
    _check_sos_values(sos)
    y = np.empty(x.shape, dtype=x.dtype)
    y[:] = x
    z = zi.copy()
    _sosfilt_inplace(sos, y, z)
    return y, z


@njit(nogil=True, cache=True)
def _hold_and_filter(sos, x, z, last):
    """Bad-sample hold (see :mod:`vigil.kernels.clean`) then filter; returns ``(y, n_held)``."""
    y = np.empty(x.shape, dtype=x.dtype)
    bad = np.empty(x.shape, dtype=np.bool_)
    n_held = hold_bad_samples(x, last, y, bad)
    _sosfilt_inplace(sos, y, z)
    return y, n_held


def _check_sos(sos: object) -> np.ndarray:
    s = np.asarray(sos, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 6 or s.shape[0] < 1:
        raise ValueError(f"sos must have shape (n_sections, 6), got {s.shape}")
    _check_sos_values(s)
    return s


def sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray | None = None):
    """Filter ``x`` along axis 0 with second-order sections, as ``scipy.signal.sosfilt``.

    Parameters
    ----------
    sos : (n_sections, 6) array
        Second-order sections ``[b0, b1, b2, 1, a1, a2]`` (``scipy.signal.butter(..., output='sos')``).
    x : (n,) or (n, channels) float array
        Samples; float32 and float64 are kept, integers become float64.
    zi : (n_sections, 2) or (n_sections, 2, channels) array, optional
        Initial state. Zeros if omitted (then only ``y`` is returned, as scipy does).

    Returns
    -------
    y : array like ``x``
    zf : final state, shaped like ``zi`` (only when ``zi`` is given).

    Non-finite samples propagate exactly as in scipy; use :class:`SOSFilter` for live streams.
    """
    s = np.asarray(sos, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 6 or s.shape[0] < 1:
        raise ValueError(f"sos must have shape (n_sections, 6), got {s.shape}")
    xa = np.asarray(x)
    if xa.dtype != np.float64 and xa.dtype != np.float32:
        if xa.dtype.kind not in "iu":
            raise ValueError(f"x must be a real numeric array, got dtype {xa.dtype}")
        xa = xa.astype(np.float64)
    one_d = xa.ndim == 1
    if one_d:
        xa = xa.reshape(-1, 1)
    elif xa.ndim != 2:
        raise ValueError(f"x must be [samples] or [samples, channels], got shape {xa.shape}")
    nsec, nch = s.shape[0], xa.shape[1]
    if zi is None:
        z = np.zeros((nsec, 2, nch))
    else:
        z = np.asarray(zi, dtype=np.float64)
        want = (nsec, 2) if one_d else (nsec, 2, nch)
        if z.shape != want:
            raise ValueError(f"zi must have shape {want}, got {z.shape}")
        if one_d:
            z = z.reshape(nsec, 2, 1)
    y, zf = _sosfilt_copy(s, xa, z)
    if one_d:
        y, zf = y[:, 0], zf[:, :, 0]
    return y if zi is None else (y, zf)


def sosfilt_zi(sos: np.ndarray) -> np.ndarray:
    """Steady-state initial condition for a unit step, shape (n_sections, 2) (``scipy.signal.sosfilt_zi``)."""
    return sos_step_state(_check_sos(sos))


class SOSFilter:
    """A live multichannel SOS filter that owns its state.

    ``process(x)`` filters one chunk [samples, channels] and returns the filtered chunk; chunks of any
    size give the same output as one batch call. Non-finite samples are replaced by the channel's last
    finite sample before filtering (counted in ``n_bad``), so one NaN never poisons later output.

    ``init="step"`` starts the state at the steady state of the first sample, as if the signal had
    been constant before the stream began (no start-up transient from a DC offset); ``init="zeros"``
    starts at rest, as scipy does without ``zi``.
    """

    def __init__(self, sos: np.ndarray, n_channels: int, init: str = "step"):
        if init not in ("step", "zeros"):
            raise ValueError(f"init must be 'step' or 'zeros', got {init!r}")
        if int(n_channels) < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels!r}")
        self.sos = _check_sos(sos)
        self.n_channels = int(n_channels)
        self.zi = np.zeros((self.sos.shape[0], 2, self.n_channels))
        self._zi_step = sosfilt_zi(self.sos)[:, :, None] if init == "step" else None
        self._last = np.zeros(self.n_channels)
        self._started = False
        self.n_bad = 0

    @property
    def state_bytes(self) -> int:
        """Bytes of state carried per channel between chunks."""
        return (self.zi.nbytes + self._last.nbytes) // self.n_channels

    def reset(self) -> None:
        """Forget the stream (after a device reconnects, for example)."""
        self.zi[:] = 0.0
        self._last[:] = 0.0
        self._started = False

    def process(self, x: np.ndarray) -> np.ndarray:
        """Filter one chunk [samples, channels] (or [samples] for one channel)."""
        a = as_signal(x)
        if a.shape[1] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {a.shape[1]}")
        self._begin(a)
        y, n_bad = _hold_and_filter(self.sos, a, self.zi, self._last)
        self.n_bad += n_bad
        return y

    def _begin(self, a: np.ndarray) -> None:
        """Before the first samples ``a`` [samples, channels]: the start-up state (``init``). Kernels
        that run the filter themselves (``_hold_and_filter`` on ``sos``, ``zi`` and ``_last``, adding
        the held count to ``n_bad``) call this first, as :meth:`process` does."""
        if not self._started and len(a):
            self._started = True
            if self._zi_step is not None:
                first = np.where(np.abs(a[0]) <= MAX_ABS, a[0], 0.0)  # False for NaN too
                self.zi[:] = self._zi_step * first[None, None, :]


# ---------------------------------------------------------------------------------------------
# Designs (scipy at set-up only)


def _nyquist_check(fs: float, *freqs: float) -> None:
    for f in freqs:
        if not 0.0 < f < fs / 2:
            raise ValueError(f"cut-off {f:g} Hz must lie strictly between 0 and fs/2 = {fs / 2:g} Hz")


def design_bandpass(low: float, high: float, fs: float, order: int = 2) -> np.ndarray:
    """Butterworth band-pass ``[low, high]`` Hz as SOS (``order`` per edge, so 2*order poles)."""
    fs = check_fs(fs)
    _nyquist_check(fs, low, high)
    if not low < high:
        raise ValueError(f"band-pass needs low < high, got {low:g} >= {high:g}")
    return butter_sos(order, (low, high), "bandpass", fs)


def design_highpass(cutoff: float, fs: float, order: int = 2) -> np.ndarray:
    """Butterworth high-pass at ``cutoff`` Hz as SOS."""
    fs = check_fs(fs)
    _nyquist_check(fs, cutoff)
    return butter_sos(order, cutoff, "highpass", fs)


def design_lowpass(cutoff: float, fs: float, order: int = 2) -> np.ndarray:
    """Butterworth low-pass at ``cutoff`` Hz as SOS."""
    fs = check_fs(fs)
    _nyquist_check(fs, cutoff)
    return butter_sos(order, cutoff, "lowpass", fs)


def design_notch(mains: float, fs: float, quality: float = 30.0) -> np.ndarray:
    """Second-order IIR notch at the mains frequency (50 or 60 Hz), -3 dB width ``mains/quality``."""
    fs = check_fs(fs)
    _nyquist_check(fs, mains)
    if quality <= 0:
        raise ValueError(f"quality must be > 0, got {quality!r}")
    return notch_sos(mains, quality, fs)


def design_baseline_removal(fs: float, cutoff: float = 0.5, order: int = 2) -> np.ndarray:
    """Causal baseline-wander removal: Butterworth high-pass at ``cutoff`` Hz (0.5 Hz default,
    below the slowest heart rate of interest, 30 bpm)."""
    return design_highpass(cutoff, fs, order)


def design_default(modality: str, fs: float, mains: float | None = None) -> np.ndarray:
    """Causal default chain for ``'ecg'`` (0.5-40 Hz), ``'eeg'`` (0.5-45 Hz) or ``'emg'`` (20-450 Hz).

    The upper edge is lowered to 0.45 fs when the sampling rate cannot carry it (a 200 Hz EMG armband
    gets 20-90 Hz). With ``mains`` (50 or 60), a notch is appended when it lies inside the band.
    """
    fs = check_fs(fs)
    try:
        low, high = DEFAULT_BANDS[modality]
    except KeyError:
        raise ValueError(f"modality must be one of {sorted(DEFAULT_BANDS)}, got {modality!r}") from None
    high = min(high, 0.45 * fs)
    sos = design_bandpass(low, high, fs)
    if mains is not None:
        if mains not in (50, 60, 50.0, 60.0):
            raise ValueError(f"mains must be 50 or 60 Hz, got {mains!r}")
        if low < mains < high:
            sos = np.vstack([sos, design_notch(mains, fs)])
    return sos
