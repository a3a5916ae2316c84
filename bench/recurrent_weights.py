#!/usr/bin/env python
"""What storing ``ecg-rhythm``'s GRU weights as INT8 instead of FP16 costs and saves: the shipped INT8
CPU artifact with its FP16 recurrent weights (:func:`vigil.export.compact.recurrent_weights_fp16`)
against the same artifact with INT8 ones (:func:`~vigil.export.compact.recurrent_weights_int8`),
both compared with the shipped FP32 network on every sliding window of the CinC 2017 records: size,
window and record label agreement with FP32, the mean absolute difference of the record
probabilities, and the records whose INT8 label the change moves.

The shipped network was trained on these records, so this measures fidelity to FP32, not accuracy.
It sizes the room that a two-network ensemble would need under the 100 KB INT8 floor.

    .venv/bin/python bench/recurrent_weights.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_data import data_root

from vigil.export.compact import RECURRENT, recurrent_weights_int8
from vigil.models import rhythm
from vigil.models.registry import ZOO


def fp16_to_fp32(src: Path, dst: Path) -> Path:
    """``src`` with its FP16 + Cast recurrent weights turned back into FP32 initializers."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    weights = {n for node in g.node if node.op_type in RECURRENT for n in node.input[1:3]}
    inits = {t.name: t for t in g.initializer}
    for node in [n for n in g.node if n.op_type == "Cast" and n.output[0] in weights]:
        half = inits[node.input[0]]
        assert half.data_type == TensorProto.FLOAT16
        g.initializer.remove(half)
        g.initializer.append(
            numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float32), node.output[0])
        )
        g.node.remove(node)
    onnx.save(m, str(dst))
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--zoo", type=Path, default=ZOO, help="folder holding the shipped ecg-rhythm artifacts")
    p.add_argument("--data", help="root holding cinc2017_af/ ($VIGIL_DATA or ../shared/data)")
    a = p.parse_args(argv)
    records = rhythm.load_records(data_root(a.data) / rhythm.DATASET, rhythm.Config().strip)
    x, owner, _ = rhythm.sliding(records)
    fp32 = a.zoo / f"{rhythm.NAME}.fp32.onnx"
    shipped = a.zoo / f"{rhythm.NAME}.int8.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        gru8 = recurrent_weights_int8(fp16_to_fp32(shipped, Path(tmp) / "gru8.onnx"))
        models = {"FP32": fp32, "INT8, FP16 GRU (shipped)": shipped, "INT8, INT8 GRU": gru8}
        scores = {k: rhythm.onnx_scores(v, x) for k, v in models.items()}
        sizes = {k: v.stat().st_size / 1024 for k, v in models.items()}
    probs = {k: rhythm.per_record(v, owner, len(records)) for k, v in scores.items()}
    print(f"ecg-rhythm, {len(records)} CinC records, {len(owner)} windows; agreement with FP32")
    for k in models:
        window = np.mean(scores[k].argmax(1) == scores["FP32"].argmax(1))
        record = np.mean(probs[k].argmax(1) == probs["FP32"].argmax(1))
        dp = np.abs(probs[k] - probs["FP32"]).mean()
        print(f"{k:>26}: {sizes[k]:6.1f} KB  windows {window:.4f}  records {record:.4f}  mean |dp| {dp:.5f}")
    moved = np.sum(probs["INT8, INT8 GRU"].argmax(1) != probs["INT8, FP16 GRU (shipped)"].argmax(1))
    print(f"records whose INT8 label the INT8 GRU weights change: {moved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
