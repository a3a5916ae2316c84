"""Beat classes of an ECG lead: the streaming QRS detector, ``beat-window/1`` and the shipped
``ecg-beats`` network (INT8 by default) on ONNX Runtime. No torch.

:class:`BeatClassifier` holds a verified model (:func:`vigil.export.runtime.load_model`) and the
preprocessing parameters its card names; :meth:`BeatClassifier.stream` gives a per-lead
:class:`BeatStream` that takes raw chunks at the device's rate and returns the beats whose class is
known (one beat after they occur: the class needs the next beat's RR interval), their scores pooled
with the lead's recent look-alike beats when the card names ``morphology-pooling/1``
(:mod:`vigil.kernels.beat_pooling`). Windows that cannot be classified (NaN, flat line, stream
edges) come back with class -1 and are counted by reason.

``vigil classify-beats RECORD`` (:func:`classify_record`) prints ``sample_index class`` per
classified beat of a WFDB record, and a summary line on stderr.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.export.card import ModelError
from vigil.export.runtime import LoadedModel, load_model
from vigil.kernels.beat_features import BeatBatch, BeatWindowParams, BeatWindows
from vigil.kernels.beat_pooling import MorphologyPooling
from vigil.kernels.qrs import QRSDetector

from .networks import pooling_of, zoo_dir

NETWORK = "ecg-beats"


def default_model() -> Path:
    """The shipped model's stem in ``models/zoo``."""
    return zoo_dir() / NETWORK


@dataclass
class Classified:
    """Beats of one call: sample indices (device rate) and class indices (-1: not classified)."""

    sample: np.ndarray
    cls: np.ndarray


class BeatClassifier:
    """A loaded ``ecg-beats`` model and the preprocessing its card prescribes."""

    def __init__(self, model: str | Path | None = None, precision: str = "int8", providers: str = "auto",
                 threads: int = 1) -> None:  # fmt: skip
        self.model: LoadedModel = load_model(
            Path(model) if model else default_model(), precision, providers, threads, task=NETWORK
        )
        try:
            self.params = BeatWindowParams.from_card(self.model.card.preprocessing)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{self.model.card.name}: preprocessing not supported: {exc}") from None
        self.classes = self.model.card.classes
        self.pooling = pooling_of(self.model.card)

    def classify(self, batch: BeatBatch, pooling: MorphologyPooling | None = None) -> np.ndarray:
        """Class index per beat of ``batch`` (-1 for the invalid ones); one inference call. ``pooling``:
        the lead's state (:meth:`new_pooling`) when the card names post-processing."""
        out = np.full(len(batch), -1, dtype=np.int64)
        if batch.valid.any():
            scores = self.model.run({"beat": batch.beat[batch.valid], "rr": batch.rr[batch.valid]})
            if pooling is not None:
                scores = pooling.process(batch.beat[batch.valid, 0], scores)
            out[batch.valid] = scores.argmax(1)
        return out

    def new_pooling(self) -> MorphologyPooling | None:
        """A lead's fresh post-processing state (None when the card names none)."""
        return MorphologyPooling(self.pooling) if self.pooling else None

    def stream(self, fs: float) -> BeatStream:
        return BeatStream(self, fs)


class BeatStream:
    """One lead: detector -> beat windows -> network, fed chunk by chunk."""

    def __init__(self, clf: BeatClassifier, fs: float) -> None:
        self.clf = clf
        self.detector = QRSDetector(fs)
        self.windows = BeatWindows(fs, clf.params)
        self.pooling = clf.new_pooling()

    @property
    def invalid(self) -> dict[str, int]:
        """Beats not classified so far, by reason."""
        return dict(self.windows.invalid)

    def process(self, chunk: np.ndarray) -> Classified:
        b = self.windows.process(chunk, self.detector.process(chunk))
        return Classified(b.sample, self.clf.classify(b, self.pooling))

    def finish(self) -> Classified:
        b = self.windows.process(np.zeros(0), self.detector.finish())
        b = BeatBatch.concat([b, self.windows.finish()], self.clf.params)
        return Classified(b.sample, self.clf.classify(b, self.pooling))


def classify_signal(
    x: np.ndarray, fs: float, clf: BeatClassifier, chunk_s: float = 1.0
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Every detected beat of lead ``x`` (sample index, class index or -1) and the invalid counts,
    streamed in ``chunk_s`` chunks as the monitor would."""
    s = clf.stream(fs)
    n = max(1, int(round(chunk_s * fs)))
    parts = [s.process(x[i : i + n]) for i in range(0, len(x), n)] + [s.finish()]
    sample = np.concatenate([p.sample for p in parts])
    cls = np.concatenate([p.cls for p in parts])
    return sample, cls, s.invalid


def classify_record(
    record: str | Path, channel: int = 0, model: str | Path | None = None, precision: str = "int8"
) -> int:
    """``vigil classify-beats``: print ``sample_index class`` per classified beat; exit code."""
    from vigil.firmware_bridge.replay import read_wfdb

    try:
        rec = read_wfdb(record, channels=[channel], annotator=None)
        clf = BeatClassifier(model, precision)
    except (FileNotFoundError, ValueError) as exc:  # ModelError is a ValueError
        print(f"vigil classify-beats: {exc}", file=sys.stderr)
        return 2
    sample, cls, invalid = classify_signal(rec.signal[:, 0], rec.fs, clf)
    names = clf.classes
    lines = [f"{s} {names[c]}" for s, c in zip(sample.tolist(), cls.tolist(), strict=True) if c >= 0]
    sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))
    skipped = ", ".join(f"{k} {v}" for k, v in invalid.items() if v) or "none"
    print(
        f"{rec.name}: {len(sample)} beats detected, {len(lines)} classified ({clf.model.card.name} "
        f"{precision}); not classified: {skipped}",
        file=sys.stderr,
    )
    return 0
