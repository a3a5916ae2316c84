"""FP32 ONNX -> static INT8 in QDQ form, calibrated on real training windows.

Needs ``onnx`` (the ``train`` extra) besides ONNX Runtime. The steps follow ONNX Runtime's own
quantization tools:

1. ``quant_pre_process`` (shape inference and graph optimisation of the FP32 model);
2. calibration on real preprocessed windows (:class:`ArrayReader`), by ``minmax``, ``entropy`` or
   ``percentile`` (99.999th);
3. ``quantize_static`` in QDQ format: INT8 weights per output channel, INT8 activations, both
   symmetric (zero point 0), which is what TensorRT's explicit quantization takes as is.

:func:`choose_calibration` quantizes with each method, scores every candidate with the caller's
``score`` function (on held-out windows, not the calibration set) and keeps the best one; the
scores of all methods are returned for the model card.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

METHODS = ("minmax", "entropy", "percentile")


class ArrayReader:
    """ONNX Runtime ``CalibrationDataReader`` over arrays: ``batch`` windows per call. Every batch is
    full (the remainder of ``n % batch`` windows is left out when ``n >= batch``): ONNX Runtime's
    entropy and percentile calibrators fail on a short last batch."""

    def __init__(self, inputs: Mapping[str, np.ndarray], batch: int = 64) -> None:
        self.inputs = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        n = {len(v) for v in self.inputs.values()}
        if len(n) != 1:
            raise ValueError("calibration inputs must have the same number of windows")
        n_all = n.pop()
        self.batch = min(int(batch), n_all) if n_all else int(batch)
        self.n, self.i = n_all - n_all % self.batch if n_all else 0, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.n:
            return None
        s = slice(self.i, self.i + self.batch)
        self.i += self.batch
        return {k: v[s] for k, v in self.inputs.items()}

    def rewind(self) -> None:
        self.i = 0


def quantize_int8(
    fp32: Path, out: Path, calibration: Mapping[str, np.ndarray], method: str = "minmax"
) -> Path:
    """Write the QDQ INT8 model of ``fp32`` to ``out``, calibrated on ``calibration`` windows."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            ArrayReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibPercentile": 99.999},
        )
    return out


def choose_calibration(
    fp32: Path,
    out: Path,
    calibration: Mapping[str, np.ndarray],
    score: Callable[[Path], float],
    methods: Sequence[str] = METHODS,
) -> tuple[str, dict[str, float]]:
    """Quantize with each of ``methods``, keep the one ``score`` (higher is better) likes most at
    ``out``; return its name and every method's score."""
    scores: dict[str, float] = {}
    best: tuple[float, str] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            cand = Path(tmp) / f"{m}.onnx"
            quantize_int8(fp32, cand, calibration, m)
            scores[m] = float(score(cand))
            if best is None or scores[m] > best[0]:
                best = (scores[m], m)
                shutil.copyfile(cand, out)
    assert best is not None
    return best[1], scores
