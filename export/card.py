"""Model cards: what a shipped network expects and what it was measured to do.

A card is a JSON file beside its artifacts (``<name>.card.json`` next to ``<name>.fp32.onnx`` and
``<name>.int8.onnx``). The runtime reads it before it trusts an artifact: the artifact's SHA-256
must match (a truncated or swapped file is refused), the network's input must have the shape the
card states, and the card's preprocessing must be one this build of Vigil implements
(:data:`PREPROCESSING`), at the sample rate the caller feeds. Training writes the card; nothing in
this module imports torch.

Fields (all required unless marked optional):

* ``name``, ``task`` (``ecg-beats``, ``ecg-rhythm``, ``eeg-seizure``, ``emg-gesture``), ``version``;
* ``classes``: output class labels in output order;
* ``inputs``: ``{name: [dims...]}``, ``-1`` for the batch axis;
* ``preprocessing``: ``{"id": ..., "fs": Hz, ...}``; ``id`` names the numpy preprocessing that turns a
  signal into the network's input (see :data:`PREPROCESSING`); other keys are its parameters;
* ``postprocessing`` (optional): ``{"id": ..., ...}``; ``id`` names a numpy step applied to the
  network's scores before the class is read (:data:`POSTPROCESSING`), other keys its parameters;
* ``artifacts``: ``{"fp32": {"file", "sha256", "bytes"}, "int8": {...}, "int8-tensorrt": {...}}``
  (file names relative to the card; ``int8`` is quantized for ONNX Runtime on CPUs,
  ``int8-tensorrt`` for TensorRT's explicit quantization: :mod:`vigil.export.quantize`);
* ``data``, ``metrics``, ``latency``, ``intended_use``, ``failure_modes``: free-form JSON for people
  (optional for loading).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CARD_SUFFIX = ".card.json"
TASKS = ("ecg-beats", "ecg-rhythm", "eeg-seizure", "emg-gesture")
#: Preprocessing ids this build implements (the runtime refuses a card naming any other).
PREPROCESSING = ("beat-window/1", "rhythm-strip/1", "eeg-segment/1", "emg-window/1")
#: Post-processing ids this build implements (optional in a card; refused when unknown).
POSTPROCESSING = ("morphology-pooling/1",)
#: The artifacts a trained network ships: FP32, INT8 for ONNX Runtime on CPUs, INT8 for TensorRT.
PRECISIONS = ("fp32", "int8", "int8-tensorrt")


class ModelError(ValueError):
    """A model artifact or card that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class Artifact:
    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelCard:
    name: str
    task: str
    version: str
    classes: tuple[str, ...]
    inputs: dict[str, tuple[int, ...]]
    preprocessing: dict[str, Any]
    artifacts: dict[str, Artifact]
    postprocessing: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    intended_use: str = ""
    failure_modes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"card {self.name!r}: unknown task {self.task!r} (known: {', '.join(TASKS)})")
        if not self.classes:
            raise ModelError(f"card {self.name!r}: no classes")
        pid = self.preprocessing.get("id")
        if pid not in PREPROCESSING:
            raise ModelError(
                f"card {self.name!r}: preprocessing {pid!r} is not implemented by this Vigil "
                f"(known: {', '.join(PREPROCESSING)})"
            )
        post = self.postprocessing.get("id") if self.postprocessing else None
        if self.postprocessing and post not in POSTPROCESSING:
            raise ModelError(
                f"card {self.name!r}: postprocessing {post!r} is not implemented by this Vigil "
                f"(known: {', '.join(POSTPROCESSING)})"
            )
        fs = self.preprocessing.get("fs")
        if not isinstance(fs, int | float) or not fs > 0:
            raise ModelError(f"card {self.name!r}: preprocessing.fs must be a positive number, got {fs!r}")

    @property
    def fs(self) -> float:
        return float(self.preprocessing["fs"])

    def to_json(self) -> str:
        d = asdict(self)
        d["classes"], d["failure_modes"] = list(self.classes), list(self.failure_modes)
        d["inputs"] = {k: list(v) for k, v in self.inputs.items()}
        return json.dumps(d, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "card") -> ModelCard:
        try:
            d = json.loads(text)
            d["classes"] = tuple(d["classes"])
            d["failure_modes"] = tuple(d.get("failure_modes", ()))
            d["inputs"] = {k: tuple(int(x) for x in v) for k, v in d["inputs"].items()}
            d["artifacts"] = {k: Artifact(**v) for k, v in d["artifacts"].items()}
            return cls(**d)
        except ModelError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{origin}: not a valid model card: {type(exc).__name__}: {exc}") from None

    def save(self, path: Path) -> Path:
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact(path: Path) -> Artifact:
    """The card entry of one artifact file (name relative to its folder)."""
    return Artifact(path.name, sha256_of(path), path.stat().st_size)


def artifacts_of(paths: dict[str, Path]) -> dict[str, Artifact]:
    """The card's ``artifacts`` section for ``{precision: file}``."""
    return {k: artifact(p) for k, p in paths.items()}


def card_path(model: Path) -> Path:
    """``zoo/beats.card.json`` for ``zoo/beats``, ``zoo/beats.int8.onnx`` or the card itself."""
    model = Path(model)
    if model.name.endswith(CARD_SUFFIX):
        return model
    stem = model.name.split(".")[0]
    return model.with_name(stem + CARD_SUFFIX)


def load_card(model: Path) -> ModelCard:
    """Read the card of ``model`` (see :func:`card_path`); :class:`ModelError` when missing or bad."""
    path = card_path(model)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model card: {exc.strerror or exc}") from None
    return ModelCard.from_json(text, origin=str(path))


def verified_artifact(card: ModelCard, folder: Path, precision: str) -> Path:
    """The path of the card's ``precision`` artifact after checking it exists and its SHA-256."""
    art = card.artifacts.get(precision)
    if art is None:
        raise ModelError(
            f"card {card.name!r} has no {precision!r} artifact (has: {', '.join(card.artifacts)})"
        )
    path = folder / art.file
    if not path.is_file():
        raise ModelError(f"{path}: missing (named by card {card.name!r})")
    digest = sha256_of(path)
    if digest != art.sha256:
        raise ModelError(
            f"{path}: SHA-256 {digest[:12]}... does not match the card's {art.sha256[:12]}... "
            "(corrupt, truncated or replaced file)"
        )
    return path
