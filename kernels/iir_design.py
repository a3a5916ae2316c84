"""IIR filter design in plain numpy: Butterworth and notch filters as second-order sections.

The monitor designs a handful of filters when a device connects; importing ``scipy.signal`` for that
costs over a second of start-up on an edge box, so the few designs Vigil needs are written out here
and tested against ``scipy.signal`` (``butter``, ``iirnotch``, ``sosfilt_zi``, ``group_delay``).

Butterworth: analogue prototype poles ``p_k = -exp(i pi m / 2N)``, ``m = -N+1, -N+3, ..., N-1``
(``scipy.signal.buttap``), frequency transformation (low-pass, high-pass, band-pass; Oppenheim &
Schafer, *Discrete-Time Signal Processing*, 3rd ed., sec. 7.1-7.2), edges pre-warped as
``2 fs tan(pi f / fs)`` and the bilinear transform ``z = (2 fs + s) / (2 fs - s)``. Poles are paired
with their conjugates into biquads, each taking the two zeros (real, at z = +1 or -1) nearest to it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _prototype(order: int) -> np.ndarray:
    m = np.arange(-order + 1, order, 2)
    return -np.exp(1j * np.pi * m / (2 * order))


def _bilinear(zeros: np.ndarray, poles: np.ndarray, gain: float, fs: float):
    """Analogue zpk to digital zpk; zeros at infinity go to z = -1."""
    fs2 = 2.0 * fs
    degree = len(poles) - len(zeros)
    z = np.concatenate([(fs2 + zeros) / (fs2 - zeros), -np.ones(degree)])
    p = (fs2 + poles) / (fs2 - poles)
    k = gain * np.real(np.prod(fs2 - zeros) / np.prod(fs2 - poles))
    return z, p, k


def _pairs(poles: np.ndarray) -> list[np.ndarray]:
    """Poles grouped into conjugate pairs (real poles two by two, one alone if odd), ordered by
    their distance from the unit circle, farthest first."""
    complex_up = [p for p in poles if p.imag > 1e-12]
    real = sorted((p.real for p in poles if abs(p.imag) <= 1e-12), key=abs)
    groups = [np.array([p, np.conj(p)]) for p in complex_up]
    groups += [np.array(real[i : i + 2], dtype=complex) for i in range(0, len(real), 2)]
    return sorted(groups, key=lambda g: np.max(np.abs(g)))


def _zpk2sos(z: np.ndarray, p: np.ndarray, k: float) -> np.ndarray:
    """Biquads ordered by pole radius (the pole nearest the unit circle last), each pole pair taking
    the remaining zeros nearest to it, starting from that pole (``scipy.signal.zpk2sos`` 'nearest')."""
    groups = _pairs(p)
    zeros = list(z.real)
    chosen: list[list[float]] = [[] for _ in groups]
    for i in reversed(range(len(groups))):
        for _ in range(min(len(groups[i]), len(zeros))):
            j = min(range(len(zeros)), key=lambda m: abs(groups[i][0] - zeros[m]))
            chosen[i].append(zeros.pop(j))
    sections = []
    for i, (g, zz) in enumerate(zip(groups, chosen, strict=True)):
        b = np.pad(np.real(np.poly(zz)), (0, 3 - len(zz) - 1))
        a = np.pad(np.real(np.poly(g)), (0, 3 - len(g) - 1))
        sections.append(np.concatenate([b * (k if i == 0 else 1.0), a]))
    return np.array(sections)


def butter_sos(order: int, cutoff: float | tuple[float, float], btype: str, fs: float) -> np.ndarray:
    """Digital Butterworth filter as SOS, like ``scipy.signal.butter(..., fs=fs, output='sos')``.

    ``btype`` is ``'lowpass'``, ``'highpass'`` or ``'bandpass'`` (``cutoff`` then a (low, high)
    pair, and the filter has ``2 * order`` poles). Cut-offs are in Hz and must lie in (0, fs/2).
    Designs are remembered (a monitor designs the same few filters for every device that connects);
    each call returns its own copy.
    """
    edges = tuple(float(e) for e in np.atleast_1d(np.asarray(cutoff, dtype=float)))
    return _butter_sos(int(order), edges, str(btype), float(fs)).copy()


@lru_cache(maxsize=256)
def _butter_sos(order: int, edges: tuple[float, ...], btype: str, fs: float) -> np.ndarray:
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    warped = 2.0 * fs * np.tan(np.pi * np.asarray(edges) / fs)
    proto = _prototype(order)
    if btype == "lowpass":
        zeros, poles, gain = np.array([]), proto * warped[0], warped[0] ** order
    elif btype == "highpass":
        zeros, poles = np.zeros(order), warped[0] / proto
        gain = np.real(1.0 / np.prod(-proto))
    elif btype == "bandpass":
        bw, w0 = warped[1] - warped[0], np.sqrt(warped[0] * warped[1])
        half = proto * bw / 2.0
        root = np.sqrt(half**2 - w0**2)
        zeros, poles, gain = np.zeros(order), np.concatenate([half + root, half - root]), bw**order
    else:
        raise ValueError(f"btype must be lowpass, highpass or bandpass, got {btype!r}")
    return _zpk2sos(*_bilinear(zeros, poles, gain, fs))


def notch_sos(f0: float, quality: float, fs: float) -> np.ndarray:
    """Second-order notch at ``f0`` Hz with -3 dB width ``f0 / quality`` (``scipy.signal.iirnotch``)."""
    w0 = 2.0 * np.pi * f0 / fs
    bw = w0 / quality
    gain = 1.0 / (1.0 + np.tan(bw / 2.0))
    b = gain * np.array([1.0, -2.0 * np.cos(w0), 1.0])
    a = np.array([1.0, -2.0 * gain * np.cos(w0), 2.0 * gain - 1.0])
    return np.concatenate([b, a])[None, :]


def sos_step_state(sos: np.ndarray) -> np.ndarray:
    """State (n_sections, 2) of the filter at rest under a unit step (``scipy.signal.sosfilt_zi``)."""
    zi = np.empty((len(sos), 2))
    scale = 1.0
    for s, (b0, b1, b2, _, a1, a2) in enumerate(sos):
        # direct form II transposed at steady state: (I - A^T) z = b[1:] - a[1:] b0
        lhs = np.array([[1.0 + a1, -1.0], [a2, 1.0]])
        zi[s] = scale * np.linalg.solve(lhs, [b1 - a1 * b0, b2 - a2 * b0])
        scale *= (b0 + b1 + b2) / (1.0 + a1 + a2)
    return zi


def sos_group_delay(sos: np.ndarray, f: float, fs: float) -> float:
    """Group delay (samples) of the cascade at ``f`` Hz: the sum over sections of
    ``Re(sum k c_k e^{-iwk} / sum c_k e^{-iwk})`` for the numerator minus the denominator."""
    e = np.exp(-1j * 2.0 * np.pi * f / fs * np.arange(3))
    k = np.arange(3)
    total = 0.0
    for sec in sos:
        for c, sign in ((sec[:3], 1.0), (sec[3:], -1.0)):
            total += sign * np.real(np.sum(k * c * e) / np.sum(c * e))
    return float(total)
