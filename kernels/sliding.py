"""Sliding analysis windows over a stream: a ring buffer that hands out every completed window.

Window ``k`` covers stream samples ``[k*hop, k*hop + size)``, so it completes when sample
``k*hop + size - 1`` arrives. :class:`SlidingWindows` keeps the last ``size`` samples per channel
in a ring (write position ``n_seen % size``) and copies each window out, oldest sample first, the
moment it completes. Input passes through the hold-and-flag policy of :mod:`vigil.kernels.clean`
first, so a non-finite sample becomes the channel's last finite value and is counted in ``n_bad``.

The windows depend only on the samples, never on how the stream was cut into chunks, which is
what makes the window-feature kernels built on this (:mod:`~vigil.kernels.eeg`,
:mod:`~vigil.kernels.emg`) give the batch result exactly whatever the chunk sizes. Reference: the
same windows are ``numpy.lib.stride_tricks.sliding_window_view(x, size, axis=0)[::hop]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numba import njit

from .clean import hold_bad_samples
from .validate import as_signal


@njit(nogil=True, cache=True)
def _push(x, ring, last, n_seen, hop, out):
    """Append ``x`` [n, ch] (float64) to ``ring`` [size, ch] after ``n_seen`` samples.

    Each window completed by ``x`` is copied, in time order, into the next row of ``out``
    [k, size, ch]; ``last`` [ch] is the hold state. Returns the number of samples held.
    """
    size = ring.shape[0]
    n = x.shape[0]
    y = np.empty_like(x)
    bad = np.empty(x.shape, dtype=np.bool_)
    n_held = hold_bad_samples(x, last, y, bad)
    pos = n_seen % size
    k = 0
    for i in range(n):
        ring[pos, :] = y[i, :]
        pos = pos + 1 if pos + 1 < size else 0  # now the oldest sample of the ring
        end = n_seen + i + 1
        if end >= size and (end - size) % hop == 0:
            for j in range(size):
                q = pos + j if pos + j < size else pos + j - size
                out[k, j, :] = ring[q, :]
            k += 1
    return n_held


def positive_int(value: object, name: str) -> int:
    """``value`` as int >= 1, or ``ValueError`` naming ``name``."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if v != value or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return v


def window_samples(seconds: float, fs: float, name: str) -> int:
    """``round(seconds * fs)`` as a sample count >= 1, or ``ValueError`` naming ``name``."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a duration in seconds, got {seconds!r}") from None
    if not np.isfinite(s) or s <= 0 or round(s * fs) < 1:
        raise ValueError(f"{name} must be > 0 s and at least one sample at fs={fs:g} Hz, got {seconds!r}")
    return int(round(s * fs))


class SlidingWindows:
    """Ring buffer turning a [samples, channels] stream into ``size``-sample windows every ``hop``.

    State: the ring [size, channels], the hold values [channels] and the count of samples seen.
    """

    def __init__(self, size: int, hop: int, n_channels: int):
        self.size = positive_int(size, "window size")
        self.hop = positive_int(hop, "hop")
        self.n_channels = positive_int(n_channels, "n_channels")
        self._ring = np.zeros((self.size, self.n_channels))
        self._last = np.zeros(self.n_channels)
        self.n_seen = 0
        self.n_bad = 0

    def reset(self) -> None:
        """Forget the stream (``n_bad`` keeps counting, as in ``SOSFilter``)."""
        self._ring[:] = 0.0
        self._last[:] = 0.0
        self.n_seen = 0

    def n_windows(self, n_samples: int) -> int:
        """Windows completed once ``n_samples`` samples have been seen in total."""
        return 0 if n_samples < self.size else (n_samples - self.size) // self.hop + 1

    def push(self, x: np.ndarray) -> np.ndarray:
        """Append a checked float64 chunk [n, channels]; return completed windows [k, size, ch]."""
        k = self.n_windows(self.n_seen + len(x)) - self.n_windows(self.n_seen)
        out = np.empty((k, self.size, self.n_channels))
        self.n_bad += _push(x, self._ring, self._last, self.n_seen, self.hop, out)
        self.n_seen += len(x)
        return out

    def batches(self, x: object, max_windows: int = 64) -> Iterator[np.ndarray]:
        """Check ``x`` and push it in pieces, yielding at most ``max_windows`` windows at a time.

        Bounds the memory of a long batch call to ``max_windows * size * channels`` floats.
        """
        a = as_signal(x, dtype=np.float64)
        if a.shape[1] != self.n_channels:
            raise ValueError(f"expected {self.n_channels} channels, got {a.shape[1]}")
        step = max_windows * self.hop
        for start in range(0, len(a), step):
            yield self.push(a[start : start + step])
