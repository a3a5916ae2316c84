"""Smaller ONNX artifacts: short internal names, and recurrent weights stored in FP16.

Both run in place on a saved model and keep its graph inputs and outputs.

* :func:`compact_names` renames the graph's internal tensors and nodes to short ids. The exporters'
  hierarchical names ("/blocks/blocks.0/c1/Conv_output_0", and the quantizer's suffixes on them)
  took more bytes than the INT8 weights themselves. Outputs are unchanged, bit for bit.
* :func:`recurrent_weights_fp16` stores the weight matrices of GRU/LSTM/RNN nodes as FP16
  initializers, each followed by a ``Cast`` to FP32 that ONNX Runtime folds when the session is
  created. ONNX Runtime has no static INT8 recurrent layer, so in an INT8 artifact these weights are
  the only FP32 tensors and the larger part of its size; FP16 halves them at a relative rounding
  error of at most 2**-11 per weight (:func:`max_abs_difference` measures what that does to the
  outputs on real inputs).
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
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    weights = {n for node in g.node if node.op_type in RECURRENT for n in node.input[1:3]}
    casts = []
    for t in list(g.initializer):
        if t.name not in weights or t.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), f"{t.name}_fp16")
        g.initializer.remove(t)
        g.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [t.name], to=TensorProto.FLOAT))
    if not casts:
        return Path(path)
    for c in reversed(casts):
        g.node.insert(0, c)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return Path(path)


def max_abs_difference(a: Path, b: Path, inputs: Mapping[str, np.ndarray]) -> float:
    """Largest absolute difference between the first outputs of models ``a`` and ``b`` on ``inputs``
    (ONNX Runtime, CPU)."""
    from .runtime import cpu_session

    outs = [cpu_session(p).run(None, dict(inputs))[0] for p in (a, b)]
    return float(np.max(np.abs(outs[0] - outs[1]))) if outs[0].size else 0.0
