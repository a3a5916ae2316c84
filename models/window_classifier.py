"""The steps the two window classifiers (``eeg-seizure``, ``emg-gesture``) share.

Both cut a recording into fixed windows, score every window with a small network, validate it out of
fold, choose the INT8 calibration on held-out windows, and save one checkpoint that ``vigil export``
turns into ONNX artifacts and a card. What differs between them (data, windows, metrics) stays in
their own modules; what is the same is here:

* scoring: :func:`softmax`, :func:`torch_probs`, :func:`onnx_probs`;
* INT8: :func:`pick` / :func:`calibration_set` (real windows for calibration and parity checks),
  :func:`quantized_variants` (one INT8 model per calibration method), :func:`calibration_choice`;
* the checkpoint: :func:`save_checkpoint`, :func:`load_checkpoint`;
* the card: :func:`rnd`, :func:`ci`, :func:`size_kb`, :func:`with_latency`, :func:`int8_report_lines`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vigil.export.card import ModelCard, card_path
from vigil.export.latency import measure_latency
from vigil.models.metrics import bootstrap_ci

Inputs = dict[str, np.ndarray]

#: Out-of-fold macro-F1 differences below this count as ties between calibration methods.
CALIBRATION_TIE = 0.001


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[windows, classes]`` logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def onnx_probs(path: Path, inputs: Inputs, batch: int = 1024) -> np.ndarray:
    """Class probabilities of an ONNX file on ``inputs`` (ONNX Runtime, CPU, one thread)."""
    from vigil.export.runtime import cpu_session

    sess = cpu_session(path)
    n = len(next(iter(inputs.values())))
    out = [sess.run(None, {k: v[i : i + batch] for k, v in inputs.items()})[0] for i in range(0, n, batch)]
    return softmax(np.concatenate(out)) if out else np.zeros((0, 0))


def torch_probs(model: Any, inputs: Inputs) -> np.ndarray:
    """Class probabilities of a torch network on ``inputs`` (eval mode, batched)."""
    from vigil.models.training import predict

    return softmax(predict(model, inputs))


def pick(inputs: Inputs, n: int, rng: np.random.Generator) -> Inputs:
    """``n`` windows drawn without replacement (all when fewer)."""
    total = len(next(iter(inputs.values())))
    idx = np.sort(rng.choice(total, size=min(n, total), replace=False))
    return {k: np.ascontiguousarray(v[idx]) for k, v in inputs.items()}


def calibration_set(inputs: Inputs, n: int, rng: np.random.Generator) -> Inputs:
    """:func:`pick` cut to a whole number of the calibration reader's 64-window batches: ONNX Runtime's
    entropy and percentile calibrators fail on a short last batch (they stack every batch's tensors)."""
    total = len(next(iter(inputs.values())))
    m = min(n, total)
    return pick(inputs, m - m % 64 if m >= 64 else m, rng)


def quantized_variants(
    model: Any, calib: Inputs, check: Inputs, folder: Path, methods: tuple[str, ...]
) -> dict[str, Path]:
    """Export ``model`` to ``folder/fp32.onnx`` (parity-checked on ``check``) and quantize it with
    each calibration method: ``{"fp32": path, method: path, ...}``."""
    from vigil.export.onnx_export import export_onnx
    from vigil.export.quantize import quantize_int8

    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "fp32.onnx"
    export_onnx(model, {k: v[:4] for k, v in check.items()}, fp32, check_inputs=check)
    out = {"fp32": fp32}
    for m in methods:
        out[m] = quantize_int8(fp32, folder / f"{m}.onnx", calib, m)
    return out


def calibration_choice(by_precision: dict[str, Any], methods: tuple[str, ...], floor: Any) -> dict[str, Any]:
    """The INT8 calibration to ship, chosen on held-out (out-of-fold) windows: the best macro-F1;
    methods within :data:`CALIBRATION_TIE` of it tie, and the tie goes to the one whose worst class
    loses the least sensitivity against FP32 (what the INT8 floor guards)."""
    scores = {m: by_precision[m]["macro_f1"] for m in methods}
    worst = {
        m: max(floor(by_precision["fp32"], by_precision[m])["sensitivity_drop_points"].values())
        for m in methods
    }
    best = max(scores.values())
    tied = [m for m in methods if scores[m] >= best - CALIBRATION_TIE]
    return {
        "scores_macro_f1_out_of_fold": scores,
        "worst_class_sensitivity_drop_points_out_of_fold": {m: rnd(v, 3) for m, v in worst.items()},
        "rule": f"best out-of-fold macro-F1; within {CALIBRATION_TIE} a tie, broken by the smallest "
        "worst-class sensitivity drop against FP32",
        "chosen": min(tied, key=lambda m: worst[m]),
    }


def save_checkpoint(
    path: Path, model: Any, config: dict[str, Any], validation: dict[str, Any], training: dict[str, Any]
) -> None:
    """The trained network with what ``vigil export`` needs to rebuild it and to write its card."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"state_dict": model.state_dict(), "config": config, "validation": validation, "training": training},
        path,
    )


def load_checkpoint(path: Path, build: Callable[[dict[str, Any]], Any]) -> tuple[Any, dict[str, Any]]:
    """The network saved by :func:`save_checkpoint` (rebuilt by ``build(config)``, eval mode) and the
    checkpoint; a clear error when nothing was trained."""
    import torch

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no trained weights; run vigil train first")
    saved = torch.load(path, weights_only=True)
    model = build(saved["config"])
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved


def size_kb(path: Path) -> float:
    return round(Path(path).stat().st_size / 1024, 1)


def rnd(v: float, nd: int = 4) -> float | None:
    """A JSON-friendly rounded float (None for NaN)."""
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def ci(groups: np.ndarray, stat: Any, n_boot: int = 1000, seed: int = 0) -> list[float | None]:
    """A 95 % bootstrap interval of ``stat`` over ``groups`` (:func:`~vigil.models.metrics.bootstrap_ci`)."""
    lo, hi = bootstrap_ci(groups, stat, n_boot=n_boot, seed=seed)
    return [rnd(lo), rnd(hi)]


def with_latency(card: ModelCard, metrics: dict[str, Any], stem: Path, check: Inputs) -> ModelCard:
    """``card`` with its final metrics and the one-window latency of its artifacts, saved beside them."""
    one = {k: v[:1] for k, v in check.items()}
    card = ModelCard(**{**card.__dict__, "metrics": metrics, "latency": measure_latency(stem, one)})
    card.save(card_path(stem))
    return card


def fmt_ci(v: list[float | None]) -> str:
    return "[" + ", ".join("-" if x is None else f"{x:.3f}" for x in v) + "]"


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def int8_report_lines(card: ModelCard) -> list[str]:
    """The INT8-against-FP32, size, latency and training-time lines of ``vigil train``'s report."""
    m = card.metrics
    fl, cal, size = m["int8_vs_fp32_validation"], m["calibration"], m["size"]
    return [
        f"  INT8 vs FP32: macro-F1 drop {fl['macro_f1_drop_points']} pt, sensitivity drops "
        f"{fl['sensitivity_drop_points']} pt, floor {'met' if fl['floor_met'] else 'MISSED'};"
        f" calibration {cal['chosen']} {cal['scores_macro_f1_out_of_fold']}",
        f"  size: {size['parameters']} parameters, FP32 {size['fp32_kb']} KB, INT8 {size['int8_kb']} KB;"
        f" latency {card.latency.get('fp32')} / {card.latency.get('int8')} (fp32 / int8, one core)",
        f"  training: {card.data['training']['seconds']} s",
    ]
