"""``vigil classify-rhythm RECORD...``: the rhythm of single-lead ECG strips, one line per record.

Each WFDB record (its first signal) goes through the "rhythm-strip/1" preprocessing
(:mod:`vigil.kernels.rhythm_strip`, at whatever rate the record has) and the shipped ``ecg-rhythm``
network (INT8 by default, ONNX Runtime; no torch). The strip's label is the arg-max of the softmax
of the mean logits over its classified windows, printed as ``record label`` with the CinC 2017 labels:
``N`` normal, ``A`` atrial fibrillation, ``O`` other rhythm, ``~`` noisy. Windows with NaN or absurd
samples are not classified; a strip with no classifiable window is reported as ``~`` (a note on
stderr says how many windows were skipped). A record that cannot be read is reported on stderr and
the others are still classified (exit status 1).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from vigil.export.runtime import LoadedModel, load_model
from vigil.firmware_bridge.replay import read_wfdb
from vigil.kernels.rhythm_strip import StripParams, record_probabilities, strip_windows

#: The shipped model (card + artifacts) in the source tree's zoo.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "zoo" / "ecg-rhythm"
NOISY = "~"


@dataclass(frozen=True)
class RhythmCall:
    """The network's verdict on one strip."""

    label: str
    probabilities: np.ndarray  # per class (card order); NaN when no window was classified
    n_windows: int
    n_skipped: int


def load_rhythm_model(
    model: str | Path | None = None, precision: str = "int8", providers: str = "auto"
) -> LoadedModel:
    """The ``ecg-rhythm`` network (default: the shipped one), verified against its card."""
    return load_model(model or DEFAULT_MODEL, precision=precision, providers=providers, task="ecg-rhythm")


def classify_strip(model: LoadedModel, x: np.ndarray, fs: float) -> RhythmCall:
    """Label of a single-lead strip ``x`` sampled at ``fs`` Hz."""
    params = StripParams.from_card(model.card.preprocessing)
    win = strip_windows(x, fs, params)
    if len(win.ecg) == 0:
        nan = np.full(len(model.card.classes), np.nan)
        return RhythmCall(NOISY, nan, win.n_windows, win.n_skipped)
    p = record_probabilities(model.run(win.inputs()))
    return RhythmCall(model.card.classes[int(np.argmax(p))], p, win.n_windows, win.n_skipped)


def classify_records(
    records: list[str],
    model: str | Path | None = None,
    precision: str = "int8",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print ``record label`` for each WFDB record; 0 when all were classified, 1 otherwise."""
    out, err = out or sys.stdout, err or sys.stderr
    m = load_rhythm_model(model, precision)
    status = 0
    for path in records:
        try:
            rec = read_wfdb(path, channels=[0], annotator=None)
        except (FileNotFoundError, ValueError, OSError) as exc:
            print(f"vigil classify-rhythm: {path}: {exc}", file=err)
            status = 1
            continue
        call = classify_strip(m, rec.signal[:, 0], rec.fs)
        if call.n_skipped:
            print(f"vigil classify-rhythm: {rec.name}: {call.n_skipped} of {call.n_windows} windows not "
                  "classified (NaN or absurd samples)", file=err)  # fmt: skip
        print(f"{rec.name} {call.label}", file=out, flush=True)
    return status
