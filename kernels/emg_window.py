"""``emg-window/1``: live multichannel surface EMG -> the gesture network's input windows.

Numpy, causal, streaming; the same chain as ``eeg-segment/1`` (:class:`~vigil.kernels.eeg_segment.
WindowChain`): bad samples held and flagged, a causal Butterworth band-pass (order 2 per edge) at the
device rate ``fs_in`` that is also the anti-aliasing filter, linear-interpolation resampling to the
card's rate ``fs``, then windows of ``window_s`` every ``hop_s``. The default band, rate and window
are the card's (:data:`BAND`, :data:`FS`, :data:`WINDOW_S`).

Normalisation is *joint* over the channels, so the network sees the spatial pattern of activity
across the armband and, separately, how strong it is::

    c = w - mean_t(w)                    (per channel)
    r = sqrt(mean_{t, ch}(c ** 2))       (one RMS for the whole window)
    x = c / r   [ch, size]               level = log10(r)   (input units: V for the card)

A window is not classified (``valid`` False, counted in ``n_invalid``) when it holds a flagged
sample on any channel or when ``r <= min_rms`` (a disconnected, flat armband).
Inputs to the network: ``{"emg": [k, ch, size], "level": [k, 1]}`` (:meth:`EMGWindows.inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .eeg_segment import WindowChain
from .validate import as_signal

PREPROCESSING_ID = "emg-window/1"
#: The gesture network's sample rate (Hz), window and hop (s), pass-band (Hz) and flat limit (V).
FS = 200.0
WINDOW_S = 0.25
HOP_S = 0.05
BAND = (10.0, 90.0)
MIN_RMS = 1e-7


@dataclass(frozen=True)
class EMGWindows:
    """Windows of one chunk: ``x`` [k, ch, size] float32, ``level`` [k] float32, ``valid`` [k] bool,
    ``end_s`` [k] (s from the stream's first sample)."""

    x: np.ndarray
    level: np.ndarray
    valid: np.ndarray
    end_s: np.ndarray

    def inputs(self) -> dict[str, np.ndarray]:
        """The network's inputs for every window; mask with ``valid`` before running it."""
        return {"emg": self.x, "level": self.level[:, None]}


def normalise(w: np.ndarray, min_rms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint normalisation of ``w`` [k, size, ch]: ``(x [k, ch, size], level [k], ok [k])``."""
    c = w - w.mean(axis=1, keepdims=True)
    r = np.sqrt((c**2).mean(axis=(1, 2)))
    ok = r > min_rms
    safe = np.where(ok, r, 1.0)
    x = (c / safe[:, None, None]).transpose(0, 2, 1)
    return x.astype(np.float32), np.log10(safe).astype(np.float32), ok


class EMGWindower:
    """Streaming ``emg-window/1`` for ``n_channels`` EMG channels at ``fs_in`` Hz (see module doc)."""

    def __init__(
        self,
        fs_in: float,
        n_channels: int = 8,
        fs: float = FS,
        window_s: float = WINDOW_S,
        hop_s: float = HOP_S,
        band: tuple[float, float] = BAND,
        min_rms: float = MIN_RMS,
    ):
        self.chain = WindowChain(fs_in, n_channels, fs, window_s, hop_s, band)
        self.min_rms = float(min_rms)
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

    def process(self, x: object) -> EMGWindows:
        """Feed one chunk [samples, channels]; return the windows it completed."""
        w, bad, end_s = self.chain.process(x)
        xs, level, ok = normalise(w, self.min_rms)
        valid = ok & ~bad.any(axis=1)
        self.n_invalid += int((~valid).sum())
        return EMGWindows(xs, level, valid, end_s)


def emg_windows(x: object, fs_in: float, **kwargs: object) -> EMGWindows:
    """All windows of a whole record [samples, channels] (one call on a fresh :class:`EMGWindower`)."""
    a = as_signal(x)
    return EMGWindower(fs_in, a.shape[1], **kwargs).process(a)
