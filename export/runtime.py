"""Load a shipped network and run it: ONNX Runtime on the best execution provider there is.

:func:`load_model` reads the model card (:mod:`vigil.export.card`), verifies the artifact's SHA-256,
opens an ONNX Runtime session and checks the session against the card (input names and shapes,
one output per class), so a corrupt, truncated or mismatched model is refused with a
:class:`~vigil.export.card.ModelError` before it ever sees a signal.

**Execution providers**, in order of preference: TensorRT, CUDA, CPU. ``providers="auto"`` tries each
available one in that order and falls back, logging why, when a session cannot be created with it
(a missing CUDA library, an unsupported GPU). TensorRT engines are cached on disk under
``engine_cache`` in a folder named by (model SHA-256, TensorRT version, GPU), so an engine is built
once per device and never reused on another. ``threads`` bounds ONNX Runtime's intra-op threads
(default 1: the monitor owns its cores).

**Which artifact.** ``precision="int8"`` runs the card's ``int8`` artifact (UINT8 activations, what
ONNX Runtime's CPU kernels run fastest) on CUDA and CPU, and its ``int8-tensorrt`` artifact
(symmetric INT8, explicit quantization) on TensorRT; a card without the latter skips TensorRT for
INT8, with a logged reason. ``precision="fp32"`` runs FP32 on CPU and CUDA, FP16 on TensorRT.
``precision="int8-tensorrt"`` runs the TensorRT artifact anywhere (on a CPU: to check it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .card import ModelCard, ModelError, load_card, verified_artifact

log = logging.getLogger(__name__)

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDER_ORDER = (TENSORRT, CUDA, CPU)
_SHORT = {"tensorrt": TENSORRT, "cuda": CUDA, "cpu": CPU}


def cpu_session(path: Path, threads: int = 1) -> Any:
    """A plain ONNX Runtime CPU session (``threads`` intra-op threads, one inter-op, warnings off) for
    offline scoring of an artifact file: validation, export checks. The monitor loads through
    :func:`load_model`, which also verifies the artifact against its card."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def provider_plan(available: Sequence[str], prefer: str | Sequence[str] = "auto") -> list[str]:
    """Providers to try, best first: ``"auto"`` = TensorRT, CUDA, CPU among ``available``; or the
    named ones (``"cpu"``, ``"cuda"``, ``"tensorrt"`` or full provider names), CPU always last."""
    if prefer == "auto":
        wanted = list(PROVIDER_ORDER)
    else:
        names = [prefer] if isinstance(prefer, str) else list(prefer)
        wanted = [_SHORT.get(n.lower(), n) for n in names]
        unknown = [n for n in wanted if n not in PROVIDER_ORDER]
        if unknown:
            raise ValueError(f"unknown execution provider(s) {unknown}; use cpu, cuda, tensorrt or auto")
    plan = [p for p in wanted if p in available and p != CPU]
    return [*plan, CPU]


def gpu_name() -> str:
    """The first GPU's name as the CUDA driver reports it ("" when none can be asked)."""
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    except (OSError, IndexError, ValueError):
        return ""


def engine_cache_dir(root: Path, model_sha256: str) -> Path:
    """``root/<model sha[:16]>-trt<version>-<gpu>``: an engine is valid only for that triple."""
    try:
        import tensorrt  # noqa: F401 - only its version is read

        version = tensorrt.__version__
    except ImportError:
        version = "ort"
    gpu = "".join(c if c.isalnum() else "-" for c in gpu_name()) or "gpu"
    return Path(root) / f"{model_sha256[:16]}-trt{version}-{gpu}"


def artifact_key(precision: str, provider: str) -> str:
    """The card artifact that ``precision`` runs on ``provider`` (see the module docstring)."""
    return "int8-tensorrt" if precision == "int8" and provider == TENSORRT else precision


def _provider_options(provider: str, card: ModelCard, key: str, cache: Path | None) -> dict[str, Any]:
    if provider != TENSORRT:
        return {}
    opts: dict[str, Any] = {"trt_fp16_enable": key == "fp32"}
    if key.startswith("int8"):
        opts["trt_int8_enable"] = True  # explicit quantization: scales come from the QDQ nodes
    if cache is not None:
        d = engine_cache_dir(cache, card.artifacts[key].sha256)
        d.mkdir(parents=True, exist_ok=True)
        opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(d), trt_timing_cache_enable=True)
    return opts


@dataclass
class LoadedModel:
    """A verified network with its card and its ONNX Runtime session."""

    card: ModelCard
    path: Path
    precision: str
    session: Any
    provider: str

    @property
    def input_names(self) -> list[str]:
        return list(self.card.inputs)

    def run(self, inputs: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        """The network's output (``[batch, classes]``) for a batch of preprocessed inputs (float32)."""
        if isinstance(inputs, np.ndarray):
            if len(self.card.inputs) != 1:
                raise ValueError(f"{self.card.name} takes inputs {self.input_names}; pass a mapping")
            inputs = {self.input_names[0]: inputs}
        feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        return self.session.run(None, feed)[0]


def _check_session(session: Any, card: ModelCard, path: Path) -> None:
    got = {i.name: i.shape for i in session.get_inputs()}
    if set(got) != set(card.inputs):
        raise ModelError(f"{path}: inputs {sorted(got)} but the card says {sorted(card.inputs)}")
    for name, dims in card.inputs.items():
        shape = got[name]
        if len(shape) != len(dims) or any(
            isinstance(a, int) and a != b for a, b in zip(shape[1:], dims[1:], strict=True)
        ):
            raise ModelError(f"{path}: input {name!r} has shape {shape}, the card says {list(dims)}")
    out = session.get_outputs()[0].shape
    if not out or (isinstance(out[-1], int) and out[-1] != len(card.classes)):
        raise ModelError(f"{path}: output shape {out} does not give one score per class {list(card.classes)}")


def load_model(
    model: str | Path,
    precision: str = "int8",
    providers: str | Sequence[str] = "auto",
    threads: int = 1,
    fs: float | None = None,
    task: str | None = None,
    engine_cache: Path | None = None,
) -> LoadedModel:
    """Load and verify ``model`` (a card, an artifact, or their common stem); see the module docstring.

    ``fs`` / ``task``: what the caller will feed; a card that disagrees is refused.
    """
    import onnxruntime as ort

    card = load_card(Path(model))
    folder = Path(model).parent if not Path(model).is_dir() else Path(model)
    if task is not None and card.task != task:
        raise ModelError(f"{card.name}: a {card.task} model, not {task}")
    if fs is not None and abs(card.fs - fs) > 1e-6 * card.fs:
        raise ModelError(f"{card.name}: expects {card.fs:g} Hz input (its card), not {fs:g} Hz")
    if precision not in card.artifacts:
        verified_artifact(card, folder, precision)  # raises: the card has no such artifact
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    last_error: Exception | None = None
    for provider in provider_plan(ort.get_available_providers(), providers):
        key = artifact_key(precision, provider)
        if key not in card.artifacts:
            log.warning("%s: no %r artifact for %s; falling back", card.name, key, provider)
            continue
        path = verified_artifact(card, folder, key)
        opts = _provider_options(provider, card, key, engine_cache)
        try:
            session = ort.InferenceSession(
                str(path), so, providers=[(provider, opts)] if opts else [provider]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... for bad files and missing libs
            last_error = exc
            if provider == CPU:
                break
            log.warning(
                "%s: %s unavailable (%s); falling back", card.name, provider, str(exc).splitlines()[0]
            )
            continue
        used = session.get_providers()[0]
        if used != provider:
            log.warning("%s: asked for %s, ONNX Runtime gave %s", card.name, provider, used)
        _check_session(session, card, path)
        log.info("%s (%s) on %s", card.name, precision, used)
        return LoadedModel(card, path, precision, session, used)
    raise ModelError(f"{path}: ONNX Runtime cannot load it: {str(last_error).splitlines()[0]}")
