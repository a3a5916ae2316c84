"""``vigil replay RECORD``: one ECG recording through the ECG kernels, reported as it goes.

The signal path of the monitor on one WFDB record, without the monitor around it: the QRS
detector, the rhythm tracker (heart rate, HRV, AF irregularity, pauses, asystole) and the
signal-quality monitor, fed in 100 ms chunks as a wearable would send them, paced at ``speed`` x
real time. Every ``report_s`` of signal it prints one line; at the end it scores the beats against
the record's reference annotations (when it has them), EC57 style.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np

from vigil.firmware_bridge.replay import chunks, read_annotations, read_wfdb
from vigil.kernels.beat_match import BEAT_SYMBOLS, match_beats, vf_intervals
from vigil.kernels.qrs import QRSDetector
from vigil.kernels.quality import QualityFlag, SignalQuality
from vigil.kernels.rhythm import RhythmTracker

_DATA = Path(__file__).resolve().parent.parent / "data" / "mitdb"
#: The bundled records: MIT-BIH 100 (normal sinus rhythm) and 208 (frequent PVCs, couplets, fusion).
DEFAULT_RECORDS = (_DATA / "100", _DATA / "208")


def _flags_text(flags: int) -> str:
    return "ok" if flags == 0 else "|".join(f.name for f in QualityFlag if f and flags & f)


def replay_records(
    records: list[str | Path] | None = None,
    speed: float = 20.0,
    seconds: float | None = 120.0,
    out: TextIO = sys.stdout,
) -> int:
    """Stream each record (default: the bundled ones) for ``seconds`` (None: whole record)."""
    if speed < 0 or not math.isfinite(speed):
        raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed!r}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    for i, record in enumerate(records or DEFAULT_RECORDS):
        if i:
            out.write("\n")
        stream_record(Path(record), speed, seconds, out=out)
    return 0


def stream_record(
    path: Path,
    speed: float,
    seconds: float | None,
    chunk_s: float = 0.1,
    report_s: float = 5.0,
    out: TextIO = sys.stdout,
) -> None:
    """Stream lead 0 of one WFDB record through detector, rhythm and quality; print as it goes."""
    rec = read_wfdb(path, channels=[0])
    fs = rec.fs
    signal = rec.signal if seconds is None else rec.signal[: int(seconds * fs)]
    detector = QRSDetector(fs)
    rhythm = RhythmTracker(fs, window_beats=60)
    quality = SignalQuality(fs, 1)
    out.write(
        f"vigil replay: {rec.name} lead {rec.channel_names[0]} at {fs:g} Hz, "
        f"{len(signal) / fs:.0f} s at {'max' if speed == 0 else f'{speed:g}x'} speed\n"
        f"{'time':>7}  {'beats':>5}  {'HR':>5}  {'SDNN':>6}  {'RMSSD':>6}  {'COSEn':>6}  "
        f"{'quality':>7}  events\n"
    )
    beats_all: list[np.ndarray] = []
    pauses: list[tuple[int, int]] = []
    q_score, q_flags = math.nan, 0
    n_seen, next_report, n_report_beats = 0, report_s * fs, 0
    events: list[str] = []
    t0 = time.monotonic()
    step = max(1, int(round(chunk_s * fs)))
    for block in chunks(signal, step):
        beats = detector.process(block)
        n_seen += len(block)
        beats_all.append(beats)
        n_report_beats += len(beats)
        summary = rhythm.update(beats, n_seen)
        for a, b in summary.pauses:
            pauses.append((a, b))
            events.append(f"pause {(b - a) / fs:.1f}s")
        if summary.asystole and "asystole" not in events:
            events.append("asystole")
        windows = quality.process(block)
        if len(windows):
            q_score, q_flags = float(windows.score[-1, 0]), int(windows.flags[-1, 0])
        if n_seen >= next_report:
            w = summary.window
            if summary.af_suspected:
                events.append("irregular RR")
            out.write(
                f"{n_seen / fs:6.0f}s  {n_report_beats:5d}  {w.hr_bpm:5.0f}  {w.sdnn_ms:6.0f}  "
                f"{w.rmssd_ms:6.0f}  {w.cosen:6.2f}  {q_score:4.2f} {_flags_text(q_flags):<3}  "
                f"{', '.join(events)}\n"
            )
            out.flush()
            next_report += report_s * fs
            n_report_beats, events = 0, []
        if speed > 0:
            lag = n_seen / fs / speed - (time.monotonic() - t0)
            if lag > 0:
                time.sleep(lag)
    beats_all.append(detector.finish())
    beats = np.concatenate(beats_all)
    out.write(
        f"\n{len(beats)} beats in {len(signal) / fs:.0f} s; {len(pauses)} pauses; "
        f"{detector.n_bad} bad samples held\n"
    )
    _score_against_reference(path, beats, fs, len(signal), out)


def _score_against_reference(path: Path, beats: np.ndarray, fs: float, n: int, out: TextIO) -> None:
    if not path.with_suffix(".atr").exists():
        return
    samples, symbols = read_annotations(path)
    ref = np.array([s for s, y in zip(samples, symbols, strict=True) if y in BEAT_SYMBOLS and s < n])
    m = match_beats(ref, beats, fs, start_s=0.0, exclude=vf_intervals(samples, symbols))
    out.write(
        f"against the reference annotations: sensitivity {100 * m.se:.2f} %, "
        f"positive predictivity {100 * m.ppv:.2f} % (TP {m.tp}, FN {m.fn}, FP {m.fp})\n"
    )
