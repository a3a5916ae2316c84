"""Recordings as streams: read a WFDB record and cut it into chunks as a device would send them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Recording:
    """A multichannel recording in physical units: ``signal`` is [samples, channels]."""

    name: str
    fs: float
    signal: np.ndarray
    channel_names: tuple[str, ...]
    units: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return len(self.signal) / self.fs


def read_wfdb(path: str | Path, channels: list[int] | None = None) -> Recording:
    """Read WFDB record ``path`` (without extension, e.g. ``data/mitdb/100``).

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
    return Recording(
        name=path.name,
        fs=float(rec.fs),
        signal=np.ascontiguousarray(rec.p_signal, dtype=np.float64),
        channel_names=tuple(rec.sig_name),
        units=tuple(rec.units),
    )


def read_annotations(path: str | Path, extension: str = "atr") -> tuple[np.ndarray, list[str]]:
    """Sample indices and symbols of a WFDB annotation file."""
    import wfdb

    ann = wfdb.rdann(str(Path(path).with_suffix("")), extension)
    return np.asarray(ann.sample, dtype=np.int64), list(ann.symbol)


def chunks(signal: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of ``size`` samples (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(signal), size):
        yield signal[start : start + size]
