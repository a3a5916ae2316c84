"""Smaller ONNX artifacts: short internal names, and recurrent weights stored in FP16 (or INT8).

Both run in place on a saved model and keep its graph inputs and outputs.

* :func:`compact_names` renames the graph's internal tensors and nodes to short ids. The exporters'
  hierarchical names ("/blocks/blocks.0/c1/Conv_output_0", and the quantizer's suffixes on them)
  took more bytes than the INT8 weights themselves. Outputs are unchanged, bit for bit.
* :func:`recurrent_weights_fp16` stores the weight matrices of GRU/LSTM/RNN nodes as FP16
  initializers, each followed by a ``Cast`` to FP32 that ONNX Runtime folds when the session is
  created. ONNX Runtime has no static INT8 recurrent layer, so in an INT8 artifact these weights are
  the only FP32 tensors and the larger part of its size; FP16 halves them at a relative rounding
  error of at most 2**-11 per weight (:func:`max_abs_difference` measures what that does to the
  outputs on real inputs). :func:`recurrent_weights_int8` halves them again (one scale per gate row),
  for networks that must fit a size budget with room to spare (``bench/recurrent_weights.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

RECURRENT = ("GRU", "LSTM", "RNN")


def compact_names(path: Path) -> Path:
    """Rename the ONNX graph's internal tensors and nodes to short ids, in place (graph inputs and
    outputs keep their names); drops doc strings and intermediate shape annotations."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    keep = {v.name for v in (*g.input, *g.output)}
    names: dict[str, str] = {}

    def short(n: str) -> str:
        if not n or n in keep:
            return n
        return names.setdefault(n, f"t{len(names)}")

    for t in g.initializer:
        t.name = short(t.name)
    for i, node in enumerate(g.node):
        node.name = f"n{i}"
        node.doc_string = ""
        for j, n in enumerate(node.input):
            node.input[j] = short(n)
        for j, n in enumerate(node.output):
            node.output[j] = short(n)
    del g.value_info[:]
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return Path(path)


def recurrent_weights_fp16(path: Path) -> Path:
    """Store the ``W`` and ``R`` weights of every recurrent node as FP16 + ``Cast``, in place; a model
    without recurrent nodes is left as it is."""
    from onnx import TensorProto, helper, numpy_helper

    def fp16(name: str, w: np.ndarray):
        half = numpy_helper.from_array(w.astype(np.float16), f"{name}_fp16")
        return [half], helper.make_node("Cast", [half.name], [name], to=TensorProto.FLOAT)

    return _store_recurrent_weights(path, fp16)


def recurrent_weights_int8(path: Path) -> Path:
    """Store the ``W`` and ``R`` weights of every recurrent node as INT8 + ``DequantizeLinear``, in
    place: symmetric, one scale per gate row (``axis=1`` of ``[directions, gates x hidden, inputs]``,
    shared by the directions), ``|w| / 127`` at the row's largest weight. A quarter of the FP32 bytes,
    half of FP16's; the GRU still computes in FP32 (weights dequantized once, when ONNX Runtime folds
    the constants at session start). Not used by the shipped artifacts: TensorRT's explicit
    quantization does not take a dequantized recurrent weight, and FP16 is exact enough to leave the
    INT8 floors to the quantized layers."""
    from onnx import helper, numpy_helper

    def int8(name: str, w: np.ndarray):
        scale = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != 1)) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        shape = (1, -1) + (1,) * (w.ndim - 2)
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        tensors = [numpy_helper.from_array(q, f"{name}_q"), numpy_helper.from_array(scale, f"{name}_s"),
                   numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{name}_z")]  # fmt: skip
        return tensors, helper.make_node("DequantizeLinear", [t.name for t in tensors], [name], axis=1)

    return _store_recurrent_weights(path, int8)


def _store_recurrent_weights(path: Path, store) -> Path:
    """Replace each FP32 ``W``/``R`` initializer of the recurrent nodes by ``store(name, array)``'s
    initializers and the node that turns them back into the FP32 tensor ``name``, in place."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    weights = {n for node in g.node if node.op_type in RECURRENT for n in node.input[1:3]}
    nodes = []
    for t in list(g.initializer):
        if t.name not in weights or t.data_type != TensorProto.FLOAT:
            continue
        tensors, node = store(t.name, numpy_helper.to_array(t).astype(np.float32))
        g.initializer.remove(t)
        g.initializer.extend(tensors)
        nodes.append(node)
    if not nodes:
        return Path(path)
    for node in reversed(nodes):
        g.node.insert(0, node)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return Path(path)


def max_abs_difference(a: Path, b: Path, inputs: Mapping[str, np.ndarray]) -> float:
    """Largest absolute difference between the first outputs of models ``a`` and ``b`` on ``inputs``
    (ONNX Runtime, CPU)."""
    from .runtime import cpu_session

    outs = [cpu_session(p).run(None, dict(inputs))[0] for p in (a, b)]
    return float(np.max(np.abs(outs[0] - outs[1]))) if outs[0].size else 0.0
