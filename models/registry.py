"""The networks Vigil trains, by name: ``vigil train NAME`` and ``vigil export NAME`` look here.

Each entry is a module of ``vigil.models`` that defines

* ``train(opts: TrainOptions) -> ModelCard``: evaluate by the data set's held-apart validation
  (leave-records-out, record-disjoint, segment-disjoint or subject-disjoint), train the final
  network, save its weights as ``<zoo>/<name>.pt`` and export it (as ``export`` does);
* ``export(opts: TrainOptions) -> ModelCard``: from ``<zoo>/<name>.pt``, write
  ``<zoo>/<name>.fp32.onnx``, ``<zoo>/<name>.int8.onnx`` (static QDQ, calibration chosen by measured
  accuracy) and ``<zoo>/<name>.card.json``.

Importing this module needs no torch; the entries do.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ZOO = Path(__file__).resolve().parent / "zoo"
REPO = Path(__file__).resolve().parent.parent

#: name -> module (under vigil.models) and a one-line description.
NETWORKS: dict[str, tuple[str, str]] = {
    "ecg-beats": (
        "beats",
        "TCN: AAMI beat classes N/S/V/F/Q from a beat window and RR context (MIT-BIH DS1)",
    ),
    "ecg-rhythm": ("rhythm", "CRNN: Normal / AF / Other / Noisy from a single-lead strip (CinC 2017)"),
    "eeg-seizure": ("seizure", "CRNN: seizure vs non-seizure EEG segments (Bonn)"),
    "emg-gesture": ("gesture", "network: hand gestures from 8-channel surface EMG (UCI MYO)"),
}


@dataclass(frozen=True)
class TrainOptions:
    """What ``vigil train`` / ``vigil export`` pass to a network's module."""

    data: Path  # root holding mitdb/, cinc2017_af/, bonn_eeg/, emg_gestures_uci/
    zoo: Path = ZOO
    seed: int = 0
    epochs: int | None = None  # None: the network's default
    quick: bool = False  # a small, fast run (fewer epochs and folds) for smoke tests
    progress: bool = True
    workers: int = 1  # networks trained side by side, one core each (where a network's training allows)


def default_data_root() -> Path:
    """``$VIGIL_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("VIGIL_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def network(name: str) -> ModuleType:
    """The module of network ``name``; ``ValueError`` for an unknown name, ``ImportError`` (with the
    fix) when the train extra is missing."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; one of: {', '.join(NETWORKS)}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError("training and export need the train extra: pip install -e '.[train]'") from None
    return importlib.import_module(f"vigil.models.{NETWORKS[name][0]}")
