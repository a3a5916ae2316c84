"""export/compact: short names change no output bit; FP16 recurrent weights change the shipped rhythm
network's outputs by little on real CinC strips and no label, and halve the GRU's bytes; the shipped
INT8 artifacts of the recurrent networks hold them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vigil.edge.rhythm_classes import DEFAULT_MODEL
from vigil.export.card import load_card
from vigil.firmware_bridge.replay import read_wfdb
from vigil.kernels.rhythm_strip import StripParams, strip_windows

pytest.importorskip("onnx", reason="compaction needs the train extra (onnx)")

from vigil.export.compact import (  # noqa: E402
    compact_names,
    max_abs_difference,
    recurrent_weights_fp16,
    recurrent_weights_int8,
)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "cinc2017"


@pytest.fixture(scope="module")
def windows() -> dict[str, np.ndarray]:
    """Every sliding window of the vendored CinC 2017 strips (real ECG)."""
    params = StripParams.from_card(load_card(DEFAULT_MODEL).preprocessing)
    parts = []
    for hea in sorted(DATA.glob("*.hea")):
        rec = read_wfdb(hea.with_suffix(""), channels=[0], annotator=None)
        parts.append(strip_windows(rec.signal[:, 0], rec.fs, params).inputs())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _copy(name: str, tmp_path: Path) -> tuple[Path, Path]:
    src = DEFAULT_MODEL.parent / name
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return src, dst


def _recurrent_dtypes(path: Path) -> set[int]:
    import onnx

    g = onnx.load(str(path)).graph
    inits = {t.name: t.data_type for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    out = set()
    for node in g.node:
        if node.op_type == "GRU":
            for name in node.input[1:3]:
                src = producer[name].input[0] if name in producer else name
                out.add(inits[src])
    return out


def test_short_names_change_no_output_bit(windows, tmp_path: Path):
    src, dst = _copy("ecg-rhythm.fp32.onnx", tmp_path)
    compact_names(dst)
    assert max_abs_difference(src, dst, windows) == 0.0
    assert dst.stat().st_size <= src.stat().st_size


def test_fp16_recurrent_weights_keep_the_outputs_and_shrink_the_model(windows, tmp_path: Path):
    """On the shipped FP32 rhythm network (no INT8 rounding to hide behind): logits within 1e-2 on every
    window of the vendored strips, no label changed, the GRU's bytes halved."""
    from onnx import TensorProto

    src, dst = _copy("ecg-rhythm.fp32.onnx", tmp_path)
    recurrent_weights_fp16(dst)
    assert _recurrent_dtypes(src) == {TensorProto.FLOAT} and _recurrent_dtypes(dst) == {TensorProto.FLOAT16}
    assert len(windows["ecg"]) >= 60
    assert max_abs_difference(src, dst, windows) <= 1e-2  # logits of order 1-10
    import onnxruntime as ort

    labels = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, windows)[0].argmax(1)
              for p in (src, dst)]  # fmt: skip
    assert np.array_equal(*labels)
    grus = 2 * 3 * 24 * (48 + 24) * 4  # FP32 bytes of W and R of the bidirectional GRU
    assert dst.stat().st_size <= src.stat().st_size - 0.45 * grus


def test_int8_recurrent_weights_keep_the_labels_at_a_quarter_of_the_bytes(windows, tmp_path: Path):
    """The same check with INT8 GRU weights (one scale per gate row): logits within 0.1 (measured: 0.033),
    no label changed, three quarters of the GRU's FP32 bytes gone."""
    import onnxruntime as ort
    from onnx import TensorProto

    src, dst = _copy("ecg-rhythm.fp32.onnx", tmp_path)
    recurrent_weights_int8(dst)
    assert _recurrent_dtypes(dst) == {TensorProto.INT8}
    assert 0.0 < max_abs_difference(src, dst, windows) <= 0.1
    labels = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, windows)[0].argmax(1)
              for p in (src, dst)]  # fmt: skip
    assert np.array_equal(*labels)
    grus = 2 * 3 * 24 * (48 + 24) * 4
    assert dst.stat().st_size <= src.stat().st_size - 0.7 * grus


@pytest.mark.parametrize("name", ["ecg-rhythm", "eeg-seizure"])
def test_shipped_int8_artifacts_hold_fp16_recurrent_weights(name: str):
    from onnx import TensorProto

    zoo = DEFAULT_MODEL.parent
    card = load_card(zoo / name)
    for precision in ("int8", "int8-tensorrt"):
        assert _recurrent_dtypes(zoo / card.artifacts[precision].file) == {TensorProto.FLOAT16}


def test_a_model_without_recurrent_layers_is_left_as_it_is(tmp_path: Path):
    src, dst = _copy("ecg-beats.int8.onnx", tmp_path)
    recurrent_weights_fp16(dst)
    assert dst.read_bytes() == src.read_bytes()
