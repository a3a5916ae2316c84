"""One (device, stream) inside the monitor: its kernels, its timeline, its gaps and resets.

A :class:`DeviceSession` takes the checked frames of one stream (:class:`~vigil.firmware_bridge.
streams.Delivered`) and turns them into :class:`~vigil.edge.alarms.Features` for the alarm engine:

* **Kernels by modality** (the first ECG, EEG or EMG channel kind of the frame decides): ECG runs a
  :class:`~vigil.kernels.qrs.QRSDetector` on lead 0 (the first ECG channel), a
  :class:`~vigil.kernels.rhythm.RhythmTracker` and :class:`~vigil.kernels.quality.SignalQuality` of
  that lead; EEG an :class:`~vigil.kernels.eeg.EEGFeatureStream` and quality on every EEG channel;
  EMG a band-pass, :class:`~vigil.kernels.emg.EMGFeatureStream`, :class:`~vigil.kernels.emg.
  EMGEnvelope` and quality (EMG band) on every EMG channel. Other channels are ignored.
* **Array-at-a-time**: frames are buffered and the kernels run once ``chunk_s`` of signal is there,
  each on the whole chunk in one call; :meth:`feed` returns Features then, else None.
* **Timeline**: session time of stream sample ``n`` is ``anchor + n / fs`` (seconds, on the monitor
  clock): sample-exact durations for the alarm engine, anchored at the monitor time of the first
  frame and slewed toward the stream checker's clock estimate by at most ``max_slew`` (0.1 %) of
  each frame's duration, so device clock drift never separates devices over days while a replay
  at any speed keeps its own (signal) time. Session time never goes backwards.
* **Gaps** (:class:`~vigil.firmware_bridge.streams.SignalLost`, including frames dropped by the
  monitor's backpressure): nothing is reset; the lost span is filled with NaN samples, so kernels
  never see the samples on either side stitched together (they hold and count them, and the
  quality windows flag GAP), the timeline stays exact, and the snapshot that holds the fill
  carries the GAP flag. Time since the last beat counts from the end of the gap, not across it (a
  gap is no evidence of asystole). A gap longer than ``max_gap_fill_s`` restarts the kernels
  instead (holding a flat line that long teaches them nothing).
* **Resets** (:class:`~vigil.firmware_bridge.streams.StreamReset`, or a frame whose layout, rate or
  kinds changed): the kernels start over; the timeline continues from the later of the reset
  frame's monitor time and the session's last time.
* **Lead off**: ``Features.lead_off`` is true when the chunk itself holds non-finite samples of the
  device (not the gap fill), as the alarm engine asks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vigil.firmware_bridge.protocol import ChannelKind, Frame
from vigil.firmware_bridge.streams import Delivered, SignalLost
from vigil.kernels.eeg import BANDS, EEGFeatureStream
from vigil.kernels.eeg import FEATURES as EEG_FEATURES
from vigil.kernels.emg import EMGEnvelope, EMGFeatureStream
from vigil.kernels.filters import SOSFilter, design_default
from vigil.kernels.qrs import QRSDetector
from vigil.kernels.quality import QualityFlag, SignalQuality
from vigil.kernels.rhythm import RhythmSummary, RhythmTracker

from .alarms import Features

#: Channel kinds a session runs kernels for, in order of precedence within one frame.
MODALITIES = (ChannelKind.ECG, ChannelKind.EEG, ChannelKind.EMG)
_LL = EEG_FEATURES.index("line_length")


@dataclass(frozen=True)
class SessionParams:
    """Tunables of every session (seconds unless stated)."""

    chunk_s: float = 0.2  # kernels run once this much signal is buffered
    max_gap_fill_s: float = 10.0  # longer gaps restart the kernels instead of being NaN-filled
    max_slew: float = 1e-3  # largest timeline correction per second of signal
    rhythm_window_beats: int = 60
    quality_window_s: float = 5.0
    report_delay_s: float = 0.5  # Features.from_rhythm: beats are reported up to this late


def modality_of(kinds: tuple[ChannelKind, ...]) -> ChannelKind | None:
    """The modality a frame's channel kinds call for (ECG before EEG before EMG), or None."""
    for m in MODALITIES:
        if m in kinds:
            return m
    return None


class SampleRing:
    """The last ``size`` samples of ``channels`` channels; :meth:`write` is array-at-a-time."""

    def __init__(self, size: int, channels: int):
        self.buf = np.zeros((int(size), int(channels)), dtype=np.float32)
        self.pos = 0
        self.filled = 0

    @property
    def size(self) -> int:
        return self.buf.shape[0]

    def write(self, x: np.ndarray) -> None:
        n, size = len(x), self.size
        if n >= size:
            self.buf[:] = x[-size:]
            self.pos = 0
        elif n:
            idx = (self.pos + np.arange(n)) % size
            self.buf[idx] = x
            self.pos = (self.pos + n) % size
        self.filled = min(size, self.filled + n)

    @property
    def full(self) -> bool:
        return self.filled == self.size

    def window(self) -> np.ndarray:
        """The ring's samples, oldest first, [size, channels] float32 (a copy)."""
        return np.concatenate((self.buf[self.pos :], self.buf[: self.pos]))

    def clear(self) -> None:
        self.pos = self.filled = 0


class DeviceSession:
    """Kernels and state of one (device, stream); see the module docstring."""

    def __init__(self, name: str, frame: Frame, monitor_time: float, params: SessionParams | None = None):
        self.name = name
        self.device, self.stream = frame.device_id, frame.stream_id
        self.params = params or SessionParams()
        self.layout = layout_of(frame)
        kind = modality_of(frame.kinds)
        if kind is None:
            raise ValueError(f"{name}: no ECG, EEG or EMG channel in {frame.kinds}")
        self.kind = kind
        self.fs = float(frame.sample_rate)
        self.channels = np.array([i for i, k in enumerate(frame.kinds) if k == kind], dtype=np.int64)
        if kind == ChannelKind.ECG:
            self.channels = self.channels[:1]
        c = self.channels
        # the channels as a slice when they are adjacent (always for ECG): a view instead of a copy
        self._cols: slice | np.ndarray = slice(int(c[0]), int(c[-1]) + 1) if np.all(np.diff(c) == 1) else c
        self.chunk = max(1, int(round(self.params.chunk_s * self.fs)))
        self.max_fill = int(round(self.params.max_gap_fill_s * self.fs))
        self._max_slew = self.params.max_slew
        self.ring: SampleRing | None = None
        # counters over the session's life
        self.frames = 0
        self.gaps = 0
        self.gap_samples = 0
        self.resets = 0
        self.restarts = 0
        self.bad_samples = 0
        self.chunks = 0
        self.anchor = float(monitor_time)
        self.last_time = float(monitor_time)
        self.features: Features | None = None
        self.rhythm: RhythmSummary | None = None
        self.eeg: dict[str, float] = {}
        self.emg: dict[str, float] = {}
        self.model_pending: dict[str, Any] = {}
        #: Per-network preprocessing state (owned by :class:`~vigil.edge.networks.Networks`); a
        #: kernel restart forgets it with the kernels.
        self.net_state: dict[str, Any] = {}
        #: What the networks said of this stream, for its vitals (see Vitals.networks).
        self.net_summary: dict[str, Any] = {}
        #: The latest chunk the kernels ran on ([samples, channels], NaN gap fill included) and, for
        #: ECG, the beats found in it (session sample indices): what the networks are fed.
        self.chunk_x: np.ndarray = np.zeros((0, len(self.channels)))
        self.chunk_beats: np.ndarray = np.zeros(0, dtype=np.int64)
        self._kernels: list[Any] | None = None
        self._start_kernels()

    # -- kernels -------------------------------------------------------------------------

    def _start_kernels(self) -> None:
        """Fresh kernels; stream sample 0 is the next sample fed."""
        self.n = 0  # stream samples fed to the kernels, gap fill included
        self.gap_end = -1  # stream sample just after the latest gap fill
        self._buf: list[tuple[np.ndarray, bool]] = []  # (samples, is gap fill)
        self._n_buf = 0
        self._gap_in_buf = False
        self.quality_score, self.quality_flags = math.nan, 0
        if self._kernels is None:  # designed once per session; a restart resets them (cheap)
            self._build_kernels()
        else:
            for k in self._kernels:
                k.reset()
            if self.detector is not None:  # QRSDetector has no reset: a new one (designs are cached)
                self.detector = QRSDetector(self.fs)
        if self.ring is not None:
            self.ring.clear()
        self.net_state, self.net_summary = {}, {}

    def _build_kernels(self) -> None:
        fs, nch, qw = self.fs, len(self.channels), self.params.quality_window_s
        self.detector = self.tracker = self.eeg_stream = self.emg_stream = self.envelope = None
        self.emg_filter = None
        if self.kind == ChannelKind.ECG:
            self.detector = QRSDetector(fs)
            self.tracker = RhythmTracker(fs, window_beats=self.params.rhythm_window_beats)
            self.quality = SignalQuality(fs, 1, window_s=qw)
            self._kernels = [self.tracker, self.quality]
        elif self.kind == ChannelKind.EEG:
            self.eeg_stream = EEGFeatureStream(fs, nch)
            self.quality = SignalQuality(fs, nch, window_s=qw)
            self._kernels = [self.eeg_stream, self.quality]
        else:
            hi = 0.45 * fs
            self.emg_filter = SOSFilter(design_default("emg", fs), nch)
            self.emg_stream = EMGFeatureStream(fs, nch)
            self.envelope = EMGEnvelope(fs, nch)
            self.quality = SignalQuality(fs, nch, window_s=qw, band=(20.0, 0.8 * hi), hf_hz=hi, lf_hz=5.0)
            self._kernels = [self.emg_filter, self.emg_stream, self.envelope, self.quality]

    def attach_ring(self, seconds: float) -> None:
        """Keep the last ``seconds`` of the session's channels for model windows (None: drop)."""
        size = max(1, int(round(seconds * self.fs)))
        if self.ring is None or self.ring.size != size:
            self.ring = SampleRing(size, len(self.channels))

    def detach_ring(self) -> None:
        self.ring = None

    # -- time ----------------------------------------------------------------------------

    def time_of(self, n: int) -> float:
        """Session time (monitor clock, s) of stream sample ``n``."""
        return self.anchor + n / self.fs

    def _slew(self, monitor_time: float, n_samples: int) -> None:
        """Move the anchor toward the checker's estimate of this frame, bounded and never backwards."""
        err = monitor_time - (self.anchor + (self.n + self._n_buf) / self.fs)  # time_of, inlined
        step = self._max_slew * n_samples / self.fs
        self.anchor += min(max(err, -step), step)

    # -- inputs --------------------------------------------------------------------------

    def feed(self, delivered: Delivered) -> Features | None:
        """Buffer one in-order frame; run the kernels when ``chunk_s`` is buffered (Features), else None."""
        f = delivered.frame
        cols = self._cols
        if type(cols) is slice and cols.stop - cols.start == 1:  # one channel: scalar scale, as physical()
            c = cols.start
            x = f.raw[:, cols] * np.float64(f.scale[c]) + np.float64(f.offset[c])
        else:
            x = f.raw[:, cols] * f.scale[cols].astype(np.float64) + f.offset[cols].astype(np.float64)
        self._slew(delivered.monitor_time, len(x))
        self.frames += 1
        self._buf.append((x, False))
        self._n_buf += len(x)
        if self._n_buf >= self.chunk:
            return self.flush()
        return None

    def lost(self, event: SignalLost) -> Features | None:
        """A gap: NaN-fill it (or restart past ``max_gap_fill_s``); returns Features if a chunk ran."""
        n_fill = max(0, int(round(event.duration_us * 1e-6 * self.fs)))
        self.gaps += 1
        self.gap_samples += n_fill
        if n_fill > self.max_fill:
            out = self.flush()
            self.restarts += 1
            end = self.time_of(self.n) + n_fill / self.fs
            self._start_kernels()
            self.anchor = self.last_time = max(end, self.last_time)
            return out
        if n_fill:
            self._buf.append((np.full((n_fill, len(self.channels)), np.nan), True))
            self._n_buf += n_fill
            self._gap_in_buf = True
            self.gap_end = self.n + self._n_buf
        return None

    def reset(self, monitor_time: float) -> Features | None:
        """The stream restarted (a reboot): flush what is buffered, then start the kernels over."""
        out = self.flush()
        self.resets += 1
        self._start_kernels()
        self.anchor = self.last_time = max(float(monitor_time), self.last_time)
        return out

    def flush(self) -> Features | None:
        """Run the kernels on everything buffered; the Features at its last sample (None: nothing)."""
        if not self._n_buf:
            return None
        pieces = self._buf
        x = pieces[0][0] if len(pieces) == 1 else np.concatenate([a for a, _ in pieces])
        gap = self._gap_in_buf
        self._buf, self._n_buf, self._gap_in_buf = [], 0, False
        # the fill is all NaN: every other non-finite sample is the device's own
        n_bad = x.size - int(np.count_nonzero(np.isfinite(x))) - sum(a.size for a, fill in pieces if fill)
        lead_off = n_bad > 0  # the device's own non-finite samples, not the gap fill
        self.bad_samples += n_bad
        self.n += len(x)
        self.chunks += 1
        self.chunk_x = x
        if self.ring is not None:
            self.ring.write(x)
        t = max(self.time_of(self.n), self.last_time)
        self.last_time = t
        windows = self._quality(x)
        if windows is not None and len(windows):
            s = windows.score[-1]
            best = int(np.argmax(s))
            self.quality_score, self.quality_flags = float(s[best]), int(windows.flags[-1, best])
        flags = self.quality_flags | (int(QualityFlag.GAP) if gap else 0)
        common: dict[str, Any] = dict(
            last_seen=t, quality_score=self.quality_score, quality_flags=flags, lead_off=lead_off,
            model=self._take_model(),
        )  # fmt: skip
        if self.kind == ChannelKind.ECG:
            feats = self._ecg(x, t, common)
        elif self.kind == ChannelKind.EEG:
            feats = self._eeg(x, t, common)
        else:
            feats = self._emg(x, t, common)
        self.features = feats
        return feats

    def _quality(self, x: np.ndarray):
        """Quality windows completed by ``x`` (one fused kernel call per chunk, no buffering)."""
        return self.quality.process(x)

    def _take_model(self) -> Mapping[str, Any]:
        out, self.model_pending = self.model_pending, {}
        return out

    def _ecg(self, x: np.ndarray, t: float, common: dict[str, Any]) -> Features:
        beats = self.detector.process(x[:, 0])
        self.chunk_beats = beats
        s = self.tracker.update(beats, self.n - 1)
        if s.last_beat < self.gap_end <= self.n:  # no beat since the gap: count from its end
            since = max(0.0, (self.n - 1 - self.gap_end) / self.fs)
            s = replace(s, since_last_beat_s=since, asystole=since > self.tracker.asystole_s,
                        in_pause=since > self.tracker.pause_s)  # fmt: skip
        self.rhythm = s
        return Features.from_rhythm(t, s, report_delay_s=self.params.report_delay_s, **common)

    def _eeg(self, x: np.ndarray, t: float, common: dict[str, Any]) -> Features:
        rows = self.eeg_stream.process(x)
        if len(rows):
            last = rows[-1].mean(axis=1)  # [features], mean over channels
            self.eeg = {name: float(last[i]) for i, (name, _, _) in enumerate(BANDS)}
            self.eeg["line_length"] = float(last[_LL])
        if not self.eeg:
            return Features(t, **common)
        bands = {name: self.eeg[name] for name, _, _ in BANDS}
        return Features(t, eeg_line_length=self.eeg["line_length"], eeg_band_powers=bands, **common)

    def _emg(self, x: np.ndarray, t: float, common: dict[str, Any]) -> Features:
        y = self.emg_filter.process(x)
        rows = self.emg_stream.process(y)
        env = self.envelope.process(y)
        if len(rows):
            last = rows[-1]  # [features, channels]
            self.emg = {"rms": float(last[0].max()), "mav": float(last[1].max())}
        if len(env):
            self.emg["envelope"] = float(env[-1].max())
        return Features(t, emg_rms=self.emg.get("rms", math.nan), **common)

    def stream_counters(self) -> dict[str, int]:
        """Link counters of the session (for the vitals payload)."""
        names = ("frames", "gaps", "gap_samples", "resets", "restarts", "bad_samples")
        return {k: getattr(self, k) for k in names}


def layout_of(frame: Frame) -> tuple:
    """What a session depends on: rate and channel kinds (a change restarts the session)."""
    return (float(frame.sample_rate), tuple(frame.kinds))
