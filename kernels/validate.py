"""Argument checks shared by the kernels' Python entry points.

Misuse (wrong shape, wrong dtype, impossible sampling rate) raises ``ValueError`` with a message that
names the argument. Bad *samples* inside a well-formed stream are not misuse: see ``kernels.clean``.
"""

from __future__ import annotations

import math

import numpy as np

#: Sampling rates outside this range are refused as absurd (Hz).
FS_MIN, FS_MAX = 1.0, 1_000_000.0


def check_fs(fs: float) -> float:
    """Return ``fs`` as float, or raise ``ValueError`` if it is not a plausible sampling rate."""
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise ValueError(f"fs must be a number in Hz, got {fs!r}") from None
    if not math.isfinite(fs) or not FS_MIN <= fs <= FS_MAX:
        raise ValueError(f"fs must be within [{FS_MIN:g}, {FS_MAX:g}] Hz, got {fs!r}")
    return fs


def as_signal(x: object, name: str = "x", dtype: type | None = None) -> np.ndarray:
    """Return ``x`` as a C-contiguous float [samples, channels] array.

    A 1-D input becomes one channel. Integer input is converted to float64; float32 and float64
    are kept unless ``dtype`` is given. Complex, object, boolean or >2-D input raises ``ValueError``.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim != 2:
        raise ValueError(f"{name} must be [samples] or [samples, channels], got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has no channels")
    if dtype is None:
        dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(a, dtype=dtype)
