"""Bad-sample policy for streams: hold the last finite value and flag it.

A wearable drops samples, saturates, or sends NaN when a lead falls off. Feeding such a value into
a recursive filter poisons its state forever (every later output becomes NaN). Vigil's streaming
kernels therefore pass input through :func:`hold_nonfinite` first: each non-finite sample is replaced
by the last finite sample of its channel (0.0 before any finite sample was seen) and flagged, so
the filters stay finite and the quality stage can count and report the gap.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def hold_nonfinite(x, last, y, bad):
    """Copy ``x`` [n, ch] into ``y`` replacing non-finite samples by the held value.

    ``last`` [ch] carries the last finite value per channel between calls and is updated in place;
    ``bad`` [n, ch] (bool) is set True where a sample was replaced. Returns the count replaced.
    """
    n, nch = x.shape
    count = 0
    for i in range(n):
        for c in range(nch):
            v = x[i, c]
            if np.isfinite(v):
                last[c] = v
                y[i, c] = v
                bad[i, c] = False
            else:
                y[i, c] = last[c]
                bad[i, c] = True
                count += 1
    return count
