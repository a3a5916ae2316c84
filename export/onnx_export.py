"""torch -> ONNX: export with a dynamic batch axis, check, infer shapes, prove parity with torch.

Needs the ``train`` extra (torch, onnx); the monitor never imports this module.

:func:`export_onnx` traces ``module`` in eval mode on example inputs (opset :data:`OPSET`, batch axis
0 dynamic on every input and output), runs the ONNX checker and shape inference, and saves the
model with its inferred shapes. :func:`parity` runs the saved file in ONNX Runtime (CPU) and torch on
the same real inputs and returns the largest absolute difference of the outputs; the export fails
if it exceeds ``atol`` (default 1e-4).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17


def export_onnx(
    module: Any,
    example: Mapping[str, np.ndarray],
    path: Path,
    output_name: str = "scores",
    check_inputs: Mapping[str, np.ndarray] | None = None,
    atol: float = 1e-4,
) -> float:
    """Export ``module`` (called as ``module(*inputs in example's order)``) to ``path``.

    Returns the torch/ONNX Runtime max abs difference on ``check_inputs`` (default ``example``);
    raises ``ValueError`` when it is above ``atol``.
    """
    import onnx
    import torch

    module = module.eval()
    names = list(example)
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n], dtype=np.float32)) for n in names)
    axes = {n: {0: "batch"} for n in [*names, output_name]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=names,
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.save(model, str(path))
    diff = parity(module, path, check_inputs or example)
    if not diff <= atol:
        raise ValueError(f"{path}: ONNX Runtime differs from torch by {diff:.3g} > {atol:g}")
    return diff


def parity(module: Any, path: Path, inputs: Mapping[str, np.ndarray]) -> float:
    """Max abs difference between torch and ONNX Runtime (CPU) outputs on ``inputs``."""
    import onnxruntime as ort
    import torch

    feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feed)[0]
    with torch.no_grad():
        want = module.eval()(*(torch.from_numpy(feed[k]) for k in feed)).numpy()
    return float(np.max(np.abs(got - want))) if got.size else 0.0
