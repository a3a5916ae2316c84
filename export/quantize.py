"""FP32 ONNX -> static INT8 in QDQ form, calibrated on real training windows.

Needs ``onnx`` (the ``train`` extra) besides ONNX Runtime. The steps follow ONNX Runtime's own
quantization tools:

1. ``quant_pre_process`` (shape inference and graph optimisation of the FP32 model);
2. calibration on real preprocessed windows (:class:`ArrayReader`), by ``minmax``, ``entropy`` or
   ``percentile`` (99.999th);
3. ``quantize_static`` in QDQ format: INT8 weights per output channel, symmetric (zero point 0);
   activations by ``target`` (:data:`TARGETS`):

   - ``"cpu"``: asymmetric UINT8, ONNX Runtime's default for its CPU kernels. A ReLU after a
     convolution then disappears into the convolution's output quantizer (zero point 0 clamps at
     zero), so the graph runs as QLinearConv/QGemm/QLinearAdd end to end. Measured on ecg-beats at
     batch 1024 on one core (``bench/beat_classifier.py``): 2.3x FP32, against 1.5x for the symmetric
     graph, whose ReLUs run in float between a dequantize and a quantize.
   - ``"tensorrt"``: symmetric INT8 (zero point 0), the only form TensorRT's explicit quantization
     accepts; ReLUs stay in the graph (TensorRT fuses them itself).
4. weights requantized to ``weight_bits`` (7 by default, :func:`reduce_weight_range`), still stored
   as INT8: ONNX Runtime's ``reduce_range`` for weights, needed on x86 CPUs without VNNI;
5. the weights of recurrent layers, which stay FP32 (ONNX Runtime has no static INT8 GRU), stored
   as FP16 (:mod:`vigil.export.compact`); the shipped artifacts (:func:`int8_artifacts`) also get
   short internal names.

:func:`choose_calibration` quantizes with each method, scores every candidate with the caller's
``score`` function (on held-out windows, not the calibration set) and keeps the best one; the
scores of all methods are returned for the model card.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .compact import compact_names, recurrent_weights_fp16

METHODS = ("minmax", "entropy", "percentile")
#: Where an INT8 artifact will run: its activation quantization follows (see the module docstring).
TARGETS = ("cpu", "tensorrt")

#: Weight bits kept in the INT8 artifacts by default (see :func:`reduce_weight_range`).
WEIGHT_BITS = 7


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
    fp32: Path,
    out: Path,
    calibration: Mapping[str, np.ndarray],
    method: str = "minmax",
    weight_bits: int = WEIGHT_BITS,
    target: str = "cpu",
) -> Path:
    """Write the QDQ INT8 model of ``fp32`` to ``out``, calibrated on ``calibration`` windows, with
    weights kept to ``weight_bits`` (2..8; see :func:`reduce_weight_range`) and activations for
    ``target`` (:data:`TARGETS`). The calibrators' progress prints on stdout are silenced."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 2 <= weight_bits <= 8:
        raise ValueError(f"weight_bits must be in 2..8, got {weight_bits}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    symmetric = target == "tensorrt"
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(pre),
                str(out),
                ArrayReader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calib,
                extra_options={
                    "ActivationSymmetric": symmetric,
                    "WeightSymmetric": True,
                    "CalibPercentile": 99.999,
                },  # fmt: skip
            )
    if weight_bits < 8:
        reduce_weight_range(out, weight_bits)
    return recurrent_weights_fp16(out)


def reduce_weight_range(path: Path, bits: int = WEIGHT_BITS) -> Path:
    """Requantize the QDQ model's INT8 weights to ``bits`` (symmetric, per output channel, still
    stored as INT8), rescaling each layer's INT32 bias to match, in place.

    Why: ONNX Runtime's x86 integer kernels on CPUs without VNNI (AVX2, AVX-512F) multiply u8
    activations by s8 weights with ``vpmaddubsw``, which adds pairs of products in int16 and
    saturates once ``2 * 255 * |w|`` passes 32767; with 8-bit weights that flips whole classes
    (measured on an AVX2 EPYC: 95 % FP32/INT8 agreement for the gesture network against 99.5 % for
    the same QDQ model evaluated without integer kernels; 431 of 2948 beat labels of MIT-BIH 208
    flipped by ecg-beats, 10 with 7-bit weights). 7-bit weights cannot saturate
    (``2 * 255 * 63 < 32767``); this is ONNX Runtime's ``reduce_range`` for weights, applied after
    calibration so that biases stay consistent with their weights.
    """
    import onnx
    from onnx import numpy_helper

    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    qmax = 2 ** (bits - 1) - 1

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float64)

    def put(name: str, a: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(a, name))

    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        wdq = producer.get(node.input[1])
        if wdq is None or wdq.op_type != "DequantizeLinear" or wdq.input[0] not in inits:
            continue
        wq, ws = get(wdq.input[0]), get(wdq.input[1])
        per_channel = ws.ndim == 1 and ws.size > 1
        shape = (-1,) + (1,) * (wq.ndim - 1) if per_channel else ()
        w = wq * ws.reshape(shape)
        amax = np.abs(w).reshape(w.shape[0], -1).max(axis=1) if per_channel else np.abs(w).max()
        ws2 = np.where(amax > 0, amax / qmax, ws)
        put(wdq.input[0], np.clip(np.round(w / ws2.reshape(shape)), -qmax, qmax).astype(np.int8))
        put(wdq.input[1], ws2.astype(np.float32).reshape(ws.shape))
        bdq = producer.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bdq is not None and bdq.op_type == "DequantizeLinear" and bdq.input[0] in inits:
            bq, bs = get(bdq.input[0]), get(bdq.input[1])
            bs2 = bs * (ws2 / ws).reshape(bs.shape)
            put(bdq.input[1], bs2.astype(np.float32))
            put(bdq.input[0], np.round(bq * bs / bs2).astype(np.int32))
    onnx.save(model, str(path))
    return Path(path)


def choose_calibration(
    fp32: Path,
    out: Path,
    calibration: Mapping[str, np.ndarray],
    score: Callable[[Path], float],
    methods: Sequence[str] = METHODS,
    weight_bits: int = WEIGHT_BITS,
    target: str = "cpu",
) -> tuple[str, dict[str, float]]:
    """Quantize (for ``target``) with each of ``methods``, keep the one ``score`` (higher is better)
    likes most at ``out``; return its name and every method's score."""
    scores: dict[str, float] = {}
    best: tuple[float, str] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            cand = Path(tmp) / f"{m}.onnx"
            quantize_int8(fp32, cand, calibration, m, weight_bits, target)
            scores[m] = float(score(cand))
            if best is None or scores[m] > best[0]:
                best = (scores[m], m)
                shutil.copyfile(cand, out)
    assert best is not None
    return best[1], scores


#: The INT8 artifacts a model ships, by card key, and the target each is quantized for.
INT8_ARTIFACTS = {"int8": "cpu", "int8-tensorrt": "tensorrt"}
#: What the model cards say of them.
INT8_NOTE = (
    "weights per output channel, symmetric, 7-bit range stored as INT8 (ONNX Runtime's x86 kernels without "
    "VNNI saturate with 8-bit weights); activations asymmetric UINT8 in 'int8' (ONNX Runtime on CPUs: ReLUs "
    "fold into the integer convolutions) and symmetric INT8 in 'int8-tensorrt' (TensorRT explicit "
    "quantization), same calibration"
)


def int8_artifacts(
    fp32: Path,
    calibration: Mapping[str, np.ndarray],
    method: str = "minmax",
    weight_bits: int = WEIGHT_BITS,
) -> dict[str, Path]:
    """Quantize ``<stem>.fp32.onnx`` once per target of :data:`INT8_ARTIFACTS`, with the same
    calibration windows and method, beside it as ``<stem>.<key>.onnx`` with short internal names;
    ``{card key: path}``."""
    stem = Path(fp32).name.split(".")[0]
    return {
        key: compact_names(
            quantize_int8(
                fp32, Path(fp32).with_name(f"{stem}.{key}.onnx"), calibration, method, weight_bits, target
            )
        )  # fmt: skip
        for key, target in INT8_ARTIFACTS.items()
    }
