"""Bad-sample policy for streams: hold the last good value and flag it.

A wearable drops samples, saturates, or sends NaN when a lead falls off. Feeding such a value into
a recursive filter poisons its state forever (every later output becomes NaN or inf). Vigil's
streaming kernels therefore pass input through :func:`hold_bad_samples` first: each bad sample is
replaced by the last good sample of its channel (0.0 before any good sample was seen) and flagged,
so the filters stay finite and the quality stage can count and report the gap.

A sample is bad when it is non-finite or its magnitude exceeds :data:`MAX_ABS` (1e12, far beyond any
physical biosignal in any unit: such values are corrupt words, and squaring or differencing them
would overflow to inf).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Largest magnitude accepted as a sample; larger values are treated like NaN.
MAX_ABS = 1e12


@njit(nogil=True, cache=True)
def hold_bad_samples(x, last, y, bad):
    """Copy ``x`` [n, ch] into ``y`` replacing bad samples by the held value.

    ``last`` [ch] carries the last good value per channel between calls and is updated in place;
    ``bad`` [n, ch] (bool) is set True where a sample was replaced. Returns the count replaced.
    """
    n, nch = x.shape
    count = 0
    for i in range(n):
        for c in range(nch):
            v = x[i, c]
            if np.isfinite(v) and abs(v) <= MAX_ABS:
                last[c] = v
                y[i, c] = v
                bad[i, c] = False
            else:
                y[i, c] = last[c]
                bad[i, c] = True
                count += 1
    return count
