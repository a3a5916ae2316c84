"""Recordings as streams: read WFDB and EDF/BDF records and replay them as Vigil frames.

:func:`read_wfdb`, :func:`read_edf` (EDF, EDF+, BDF) and :func:`read_recording` (either, by suffix)
return a :class:`Recording` in physical units with its :class:`Annotations`. :class:`ReplayTransport`
streams a recording as one device would: frames of ``frame_samples`` samples, sequence numbers
``+1`` per frame and device timestamps taken from the sample index, paced at real time, at
``speed`` x real time, or as fast as possible (``speed=0``).

Annotations are ground truth, not wire data (Vigil frame v1 has no annotation field): the transport
keeps them beside the stream as ``transport.annotations`` (sample indices of the stream) and
``transport.annotation_times_us`` (the same instants in the device clock of the frames'
``timestamp_us``), so an evaluator matches alarms against them by device time;
``transport.annotations_sent()`` gives those whose sample has already been streamed.

Quantisation: int16/int24 frames carry ``physical = raw * scale + offset`` with scale and offset per
channel from the recording's own range (:func:`choose_scale`), so the error is at most half a step
(``span / (2 * (2**(bits-1) - 2))``). NaN samples (WFDB's invalid value) become the format's most
negative code, which decodes below the signal's range; use float32 to keep NaN as NaN.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .protocol import ChannelKind, Frame, SampleFormat, decode, encode, make_frame
from .transport import Item, LinkEvent, LinkState, Received, Transport

# ---------------------------------------------------------------------------------------------
# Recordings and annotations


@dataclass(frozen=True, eq=False)
class Annotations:
    """Time-stamped labels of a recording: ``sample`` (int64, ascending) indexes the signal.

    ``symbol`` is the WFDB annotation code (``N``, ``V``, ``+`` ...; ``"`` for free text such as an
    EDF+ annotation), ``aux_note`` its text (WFDB rhythm labels like ``(AFIB``), ``duration`` a
    length in samples (0 for point events; EDF+ annotations may have one).
    """

    sample: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    symbol: tuple[str, ...] = ()
    aux_note: tuple[str, ...] = ()
    duration: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        n = len(self.sample)
        if not len(self.symbol) == len(self.aux_note) == len(self.duration) == n:
            raise ValueError("annotation fields must have equal lengths")

    def __len__(self) -> int:
        return len(self.sample)

    def times_us(self, fs: float, start_us: int = 0) -> np.ndarray:
        """Annotation instants in a device clock whose sample 0 is at ``start_us`` (int64 µs)."""
        return start_us + np.round(self.sample * (1e6 / fs)).astype(np.int64)

    def select(self, mask: np.ndarray) -> Annotations:
        """The annotations where boolean ``mask`` is true."""
        idx = np.flatnonzero(mask)
        return Annotations(
            self.sample[idx],
            tuple(self.symbol[i] for i in idx),
            tuple(self.aux_note[i] for i in idx),
            self.duration[idx],
        )

    def window(self, start: int, stop: int) -> Annotations:
        """Annotations with ``start <= sample < stop``, re-indexed so ``start`` is sample 0."""
        sel = self.select((self.sample >= start) & (self.sample < stop))
        return replace(sel, sample=sel.sample - start)


def _ann_arrays(sample, symbol, aux, duration=None) -> Annotations:
    s = np.asarray(sample, dtype=np.int64)
    d = np.zeros(len(s), dtype=np.int64) if duration is None else np.asarray(duration, dtype=np.int64)
    order = np.argsort(s, kind="stable")
    return Annotations(s[order], tuple(symbol[i] for i in order), tuple(aux[i] for i in order), d[order])


@dataclass(frozen=True)
class Recording:
    """A multichannel recording in physical units: ``signal`` is [samples, channels]."""

    name: str
    fs: float
    signal: np.ndarray
    channel_names: tuple[str, ...]
    units: tuple[str, ...]
    annotations: Annotations = field(default_factory=Annotations, compare=False)

    @property
    def duration_s(self) -> float:
        return len(self.signal) / self.fs

    def segment(self, start_s: float = 0.0, stop_s: float | None = None) -> Recording:
        """The part from ``start_s`` to ``stop_s`` seconds, annotations re-indexed to it."""
        a = max(0, int(round(start_s * self.fs)))
        b = len(self.signal) if stop_s is None else min(len(self.signal), int(round(stop_s * self.fs)))
        b = max(a, b)
        return replace(self, signal=self.signal[a:b], annotations=self.annotations.window(a, b))


def read_wfdb(
    path: str | Path, channels: list[int] | None = None, annotator: str | None = "atr"
) -> Recording:
    """Read WFDB record ``path`` (without extension, e.g. ``data/mitdb/100``).

    Annotations come from ``<path>.<annotator>`` when that file exists (none with ``annotator=None``).
    Raises ``FileNotFoundError`` when the header is missing and ``ValueError`` for a bad channel.
    """
    import wfdb

    path = Path(path)
    if path.suffix in (".hea", ".dat", ".atr"):
        path = path.with_suffix("")
    if not path.with_suffix(".hea").exists():
        raise FileNotFoundError(f"no WFDB header {path.with_suffix('.hea')}")
    header = wfdb.rdheader(str(path))
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < header.n_sig]
        if bad:
            raise ValueError(f"record {path.name} has channels 0..{header.n_sig - 1}, not {bad}")
    rec = wfdb.rdrecord(str(path), channels=channels)
    ann = Annotations()
    if annotator and path.with_name(f"{path.name}.{annotator}").exists():
        ann = read_wfdb_annotations(path, annotator)
    return Recording(
        name=path.name,
        fs=float(rec.fs),
        signal=np.ascontiguousarray(rec.p_signal, dtype=np.float64),
        channel_names=tuple(rec.sig_name),
        units=tuple(rec.units),
        annotations=ann,
    )


def read_wfdb_annotations(path: str | Path, extension: str = "atr") -> Annotations:
    """All annotations of a WFDB annotation file: sample, symbol and aux_note."""
    import wfdb

    a = wfdb.rdann(str(Path(path).with_suffix("")), extension)
    aux = [s.rstrip("\x00") for s in (a.aux_note or [""] * len(a.sample))]
    return _ann_arrays(a.sample, list(a.symbol), aux)


def read_annotations(path: str | Path, extension: str = "atr") -> tuple[np.ndarray, list[str]]:
    """Sample indices and symbols of a WFDB annotation file."""
    import wfdb

    ann = wfdb.rdann(str(Path(path).with_suffix("")), extension)
    return np.asarray(ann.sample, dtype=np.int64), list(ann.symbol)


def read_edf(path: str | Path, channels: list[int] | None = None) -> Recording:
    """Read an EDF, EDF+ or BDF file in physical units, with its EDF+ annotations (if any).

    The selected channels (all by default) must share one sampling rate; ``ValueError`` otherwise,
    naming the rates, and for a bad channel index. Annotations get symbol ``"`` and the text as
    ``aux_note``; onsets and durations are converted to samples.
    """
    import pyedflib

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no EDF/BDF file {path}")
    with pyedflib.EdfReader(str(path)) as f:
        n = f.signals_in_file
        chans = list(range(n)) if channels is None else list(channels)
        bad = [c for c in chans if not 0 <= c < n]
        if bad or not chans:
            raise ValueError(f"{path.name} has channels 0..{n - 1}, not {bad or chans}")
        rates = sorted({float(f.getSampleFrequency(c)) for c in chans})
        if len(rates) > 1:
            raise ValueError(f"{path.name}: channels {chans} have rates {rates} Hz; select one rate")
        fs = rates[0]
        signal = np.stack([f.readSignal(c) for c in chans], axis=1).astype(np.float64)
        names = tuple(f.getLabel(c) for c in chans)
        units = tuple(f.getPhysicalDimension(c) for c in chans)
        onset, dur, text = f.readAnnotations()
    ann = _ann_arrays(
        np.round(np.asarray(onset, dtype=np.float64) * fs),
        ['"'] * len(text),
        [str(t) for t in text],
        np.round(np.asarray(dur, dtype=np.float64).clip(min=0) * fs),
    )
    return Recording(path.stem, fs, np.ascontiguousarray(signal), names, units, ann)


def read_recording(path: str | Path, channels: list[int] | None = None) -> Recording:
    """:func:`read_edf` for ``.edf``/``.bdf`` files, :func:`read_wfdb` otherwise."""
    if Path(path).suffix.lower() in (".edf", ".bdf"):
        return read_edf(path, channels)
    return read_wfdb(path, channels)


def chunks(signal: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of ``size`` samples (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(signal), size):
        yield signal[start : start + size]


# ---------------------------------------------------------------------------------------------
# Units and channel kinds

_ECG_LEADS = {"i", "ii", "iii", "avr", "avl", "avf", "mlii", "mli", "mliii", "ml2", "v", "ecg", "ekg"}
_ECG_LEADS |= {f"v{i}" for i in range(1, 7)} | {f"mv{i}" for i in range(1, 7)}
_UNIT_SCALE = {"v": 1.0, "mv": 1e-3, "uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "nv": 1e-9}
#: Units the monitor's kernels expect per channel kind.
STANDARD_UNITS = {ChannelKind.ECG: "mV", ChannelKind.EEG: "uV", ChannelKind.EMG: "mV"}


def guess_kind(name: str) -> ChannelKind:
    """Channel kind from a channel label (``MLII`` and ``V5`` are ECG, ``EEG Fp1`` is EEG ...)."""
    n = name.strip().lower()
    for word, kind in (("ecg", ChannelKind.ECG), ("ekg", ChannelKind.ECG), ("eeg", ChannelKind.EEG),
                       ("emg", ChannelKind.EMG), ("ppg", ChannelKind.PPG), ("pleth", ChannelKind.PPG),
                       ("resp", ChannelKind.RESP), ("temp", ChannelKind.TEMP)):  # fmt: skip
        if word in n:
            return kind
    return ChannelKind.ECG if n in _ECG_LEADS else ChannelKind.OTHER


def to_standard_units(rec: Recording, kinds: Sequence[ChannelKind]) -> Recording:
    """Rescale voltage channels to the unit their kind expects (ECG/EMG mV, EEG µV)."""
    signal, units = rec.signal.copy(), list(rec.units)
    for c, kind in enumerate(kinds):
        want = STANDARD_UNITS.get(ChannelKind(kind))
        have = _UNIT_SCALE.get(units[c].strip().lower())
        if want and have:
            signal[:, c] *= have / _UNIT_SCALE[want.lower()]
            units[c] = want
    return replace(rec, signal=signal, units=tuple(units))


# ---------------------------------------------------------------------------------------------
# Quantisation


def code_limit(fmt: SampleFormat) -> int:
    """Largest code a signal is scaled to: ``2**(bits-1) - 2``; the minimum code marks NaN."""
    return (1 << (8 * SampleFormat(fmt).width - 1)) - 2


def choose_scale(lo: np.ndarray, hi: np.ndarray, fmt: SampleFormat) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 (scale, offset) mapping physical ``[lo, hi]`` onto ``[-q, q]`` codes."""
    fmt = SampleFormat(fmt)
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if fmt == SampleFormat.FLOAT32:
        return np.ones(lo.shape, np.float32), np.zeros(lo.shape, np.float32)
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    lo, hi = np.where(bad, -1.0, lo), np.where(bad, 1.0, hi)
    offset = ((lo + hi) / 2).astype(np.float32)
    half = np.maximum(hi - offset, offset - lo)  # the float32 offset may sit off-centre
    scale = np.maximum(half * (1 + 1e-6) / code_limit(fmt), 1e-30).astype(np.float32)
    scale = np.where(half > 0, scale, np.float32(1.0)).astype(np.float32)
    return scale, offset


def quantise(x: np.ndarray, scale: np.ndarray, offset: np.ndarray, fmt: SampleFormat) -> np.ndarray:
    """Wire codes of physical ``x`` [..., channels]: rounded, clipped to the format, NaN -> min code."""
    fmt = SampleFormat(fmt)
    if fmt == SampleFormat.FLOAT32:
        return np.asarray(x, dtype=np.float32)
    q = code_limit(fmt) + 1
    with np.errstate(invalid="ignore"):
        r = np.rint((x - offset.astype(np.float64)) / scale.astype(np.float64))
    r = np.where(np.isnan(r), -q - 1.0, np.clip(r, -q, q))
    return r.astype(np.int16 if fmt == SampleFormat.INT16 else np.int32)


def quantisation_step(scale: np.ndarray, fmt: SampleFormat) -> np.ndarray:
    """The physical size of one code per channel (0 for float32)."""
    return np.zeros_like(scale, dtype=np.float64) if fmt == SampleFormat.FLOAT32 else scale.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Replay as frames


def frame_plan(n_samples: int, frame_samples: int, fs: float, start_us: int = 0, first_sequence: int = 0):
    """First sample, sequence number and device timestamp (µs) of every frame of a stream."""
    first = np.arange(0, n_samples, frame_samples, dtype=np.int64)
    seq = (first_sequence + np.arange(len(first), dtype=np.int64)) % (1 << 32)
    ts = start_us + np.round(first * (1e6 / fs)).astype(np.int64)
    return first, seq, ts


class ReplayTransport(Transport):
    """Stream a :class:`Recording` as one device's Vigil frames.

    Frames hold ``frame_samples`` samples (the last may be shorter), ``sequence = first_sequence +
    frame index`` (mod 2**32) and ``timestamp_us = start_us + round(first sample * 1e6 / fs)``.
    Frame ``k`` is released when its last sample would have been acquired, ``speed`` x faster than
    real time; ``speed=0`` releases frames as fast as possible (yielding to the event loop between
    frames). With ``wire=True`` (default) each frame is encoded and decoded, so consumers see what
    the link would deliver and ``stats.bytes`` counts wire bytes.

    Yields ``LinkEvent(CONNECTED)`` first and ``LinkEvent(CLOSED)`` last (at the end of the
    recording, or after :meth:`close`). Ground-truth annotations: see the module docstring.

    ``loop=True`` starts the recording again after its last sample, as one continuous stream
    (sequence numbers and timestamps go on) until :meth:`close`; annotations cover the first pass.
    """

    name = "replay"

    def __init__(
        self,
        recording: Recording,
        device_id: int = 1,
        frame_samples: int = 32,
        sample_format: SampleFormat = SampleFormat.INT16,
        speed: float = 1.0,
        kinds: Sequence[ChannelKind] | None = None,
        start_us: int = 0,
        first_sequence: int = 0,
        stream_id: int = 0,
        wire: bool = True,
        loop: bool = False,
    ) -> None:
        super().__init__()
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        if not 1 <= frame_samples <= 4096:
            raise ValueError(f"frame_samples must be 1..4096, got {frame_samples}")
        self.recording = recording
        self.device_id = int(device_id)
        self.frame_samples = int(frame_samples)
        self.sample_format = SampleFormat(sample_format)
        self.speed = float(speed)
        self.kinds = tuple(kinds) if kinds is not None else tuple(map(guess_kind, recording.channel_names))
        self.start_us = int(start_us)
        self.first_sequence = int(first_sequence)
        self.stream_id = int(stream_id)
        self.wire = wire
        self.loop = bool(loop)
        if self.loop and len(recording.signal) == 0:
            raise ValueError("cannot loop an empty recording")
        self.source = f"replay:{recording.name}:{self.device_id}"
        x = recording.signal
        with np.errstate(all="ignore"):
            lo = np.nanmin(x, axis=0) if len(x) else np.zeros(x.shape[1])
            hi = np.nanmax(x, axis=0) if len(x) else np.zeros(x.shape[1])
        self.scale, self.offset = choose_scale(lo, hi, self.sample_format)
        self.samples_sent = 0

    @property
    def annotations(self) -> Annotations:
        """The recording's annotations; ``sample`` indexes the stream (sample 0 = ``start_us``)."""
        return self.recording.annotations

    @property
    def annotation_times_us(self) -> np.ndarray:
        """Annotation instants in the frames' device clock (µs)."""
        return self.annotations.times_us(self.recording.fs, self.start_us)

    @property
    def step(self) -> np.ndarray:
        """Quantisation step per channel, physical units (0 for float32)."""
        return quantisation_step(self.scale, self.sample_format)

    def annotations_sent(self) -> Annotations:
        """Annotations at samples already streamed."""
        return self.annotations.select(self.annotations.sample < self.samples_sent)

    def _frame(self, first: int, seq: int, ts: int) -> Frame:
        block = self.recording.signal[first : first + self.frame_samples]
        raw = quantise(block, self.scale, self.offset, self.sample_format)
        return make_frame(
            self.device_id, seq, ts, self.recording.fs, raw, self.kinds, self.sample_format,
            self.scale, self.offset, self.stream_id,
        )  # fmt: skip

    async def items(self) -> AsyncIterator[Item]:
        rec = self.recording
        n = len(rec.signal)
        first, seq, _ = frame_plan(n, self.frame_samples, rec.fs, self.start_us, self.first_sequence)
        last = np.minimum(first + self.frame_samples, n)
        yield LinkEvent(
            self.source, LinkState.CONNECTED, f"{len(first)} frames{' (looped)' if self.loop else ''}"
        )
        t0 = time.monotonic()
        k = 0  # frames of all passes
        passes = itertools.count() if self.loop else range(1)
        for p in passes:
            base = p * n  # stream sample of this pass's first sample
            for a, b, s in zip(first.tolist(), last.tolist(), seq.tolist(), strict=True):
                if self._closed:
                    break
                # Frames already due go out without a trip through the event loop: each trip releases
                # the GIL in select() and may wait a switch interval (5 ms) for a busy processing
                # thread, which would cap a replay at ~200 frames/s whatever its speed.
                delay = t0 + (base + b) / (rec.fs * self.speed) - time.monotonic() if self.speed > 0 else 0.0
                if delay > 0:
                    await asyncio.sleep(delay)
                elif k % 64 == 0:
                    await asyncio.sleep(0)
                if self._closed:
                    break
                s = (s + p * len(first)) % (1 << 32)
                frame = self._frame(a, s, self.start_us + round((base + a) * (1e6 / rec.fs)))
                if self.wire:
                    data = encode(frame)
                    self.stats.bytes += len(data)
                    frame = decode(data)
                self.stats.frames += 1
                self.samples_sent = base + b
                k += 1
                yield Received(frame, self.source, time.monotonic())
            if self._closed:
                break
        self._closed = True
        yield LinkEvent(self.source, LinkState.CLOSED, f"{self.stats.frames} frames sent")
