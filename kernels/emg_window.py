"""``emg-window/1``: live multichannel surface EMG -> the gesture network's input windows.

Numpy, causal, streaming; the same chain as ``eeg-segment/1`` (:class:`~vigil.kernels.eeg_segment.
WindowChain`): bad samples held and flagged, a causal Butterworth band-pass (order 2 per edge) at the
device rate ``fs_in`` that is also the anti-aliasing filter, linear-interpolation resampling to the
card's rate ``fs``, then windows of ``window_s`` every ``hop_s``. The default band, rate and window
are the card's (:data:`BAND`, :data:`FS`, :data:`WINDOW_S`).

Normalisation, per window, splits *what each channel's signal looks like* from *how strong it is*::

    c_i = w_i - mean_t(w_i),   r_i = sqrt(mean_t(c_i ** 2))      (channel i, over the window)
    emg[i]     = c_i / r_i                                        [ch, size]  unit RMS per channel
    pattern[i] = log10(r_i) - mean_j log10(r_j)                   [ch]        the spatial pattern
    level      = mean_j log10(r_j / level_ref)                    [1]         overall strength

``level_ref`` (:data:`LEVEL_REF`, 1e-4 V = 100 uV) centres the level near 0 for surface EMG, so that
its INT8 scale resolves ~0.005 decades instead of spending the range on the unit's offset.

The spatial pattern of activity round the forearm is what tells gestures apart; in the log domain a
weak channel is as well resolved as a strong one, and each part gets its own INT8 scale (a jointly
scaled waveform leaves the weak channels a few quantization steps). A window is not classified
(``valid`` False, counted in ``n_invalid``) when it holds a flagged sample on any channel or when
any channel is flat (``r_i <= min_rms``: a lifted electrode or a disconnected armband).
Inputs to the network: ``{"emg": [k, ch, size], "pattern": [k, ch], "level": [k, 1]}``
(:meth:`EMGWindows.inputs`).
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
LEVEL_REF = 1e-4


@dataclass(frozen=True)
class EMGWindows:
    """Windows of one chunk: ``x`` [k, ch, size], ``pattern`` [k, ch], ``level`` [k] (float32),
    ``valid`` [k] bool, ``end_s`` [k] (s from the stream's first sample)."""

    x: np.ndarray
    pattern: np.ndarray
    level: np.ndarray
    valid: np.ndarray
    end_s: np.ndarray

    def inputs(self) -> dict[str, np.ndarray]:
        """The network's inputs for every window; mask with ``valid`` before running it."""
        return {"emg": self.x, "pattern": self.pattern, "level": self.level[:, None]}


def normalise(
    w: np.ndarray, min_rms: float, level_ref: float = LEVEL_REF
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel normalisation of ``w`` [k, size, ch] (module docstring):
    ``(x [k, ch, size], pattern [k, ch], level [k], ok [k])``."""
    c = w - w.mean(axis=1, keepdims=True)
    r = np.sqrt((c**2).mean(axis=1))  # [k, ch]
    ok = (r > min_rms).all(axis=1)
    safe = np.where(r > min_rms, r, 1.0)
    x = (c / safe[:, None, :]).transpose(0, 2, 1)
    lg = np.log10(safe)
    mean = lg.mean(axis=1)
    pattern = (lg - mean[:, None]).astype(np.float32)
    return x.astype(np.float32), pattern, (mean - np.log10(level_ref)).astype(np.float32), ok


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
        level_ref: float = LEVEL_REF,
    ):
        self.chain = WindowChain(fs_in, n_channels, fs, window_s, hop_s, band)
        self.min_rms = float(min_rms)
        self.level_ref = float(level_ref)
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
        xs, pattern, level, ok = normalise(w, self.min_rms, self.level_ref)
        valid = ok & ~bad.any(axis=1)
        self.n_invalid += int((~valid).sum())
        return EMGWindows(xs, pattern, level, valid, end_s)


def emg_windows(x: object, fs_in: float, **kwargs: object) -> EMGWindows:
    """All windows of a whole record [samples, channels] (one call on a fresh :class:`EMGWindower`)."""
    a = as_signal(x)
    return EMGWindower(fs_in, a.shape[1], **kwargs).process(a)
