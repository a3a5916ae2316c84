"""export/: torch -> ONNX parity, static INT8 (QDQ), model cards and the verified runtime loader."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from vigil.export.card import ModelCard, ModelError, artifact, artifacts_of, card_path, load_card
from vigil.export.runtime import CPU, CUDA, TENSORRT, engine_cache_dir, load_model, provider_plan

torch = pytest.importorskip("torch", reason="export tests need the train extra (torch)")
pytest.importorskip("onnx", reason="export tests need the train extra (onnx)")


class TinyTCN(torch.nn.Module):
    """Two dilated causal convolutions, global average pooling, a linear head (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv1d(1, 8, 3, dilation=1, padding=2)
        self.c2 = torch.nn.Conv1d(8, 8, 3, dilation=2, padding=4)
        self.head = torch.nn.Linear(8 + 2, 3)

    def forward(self, x: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        h = torch.relu(self.c1(x)[..., :n])
        h = torch.relu(self.c2(h)[..., :n])
        return self.head(torch.cat([h.mean(-1), rr], dim=1))


def _inputs(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 64, dtype=np.float32)
    x = np.sin(2 * np.pi * rng.uniform(1, 5, (n, 1, 1)) * t).astype(np.float32)
    return {"beat": x + 0.1 * rng.standard_normal((n, 1, 64)).astype(np.float32),
            "rr": rng.uniform(0.5, 1.5, (n, 2)).astype(np.float32)}  # fmt: skip


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    from vigil.export.onnx_export import export_onnx
    from vigil.export.quantize import int8_artifacts

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("zoo")
    model = TinyTCN()
    diff = export_onnx(model, _inputs(4), d / "tiny.fp32.onnx", check_inputs=_inputs(256, 1))
    assert diff <= 1e-4
    int8s = int8_artifacts(d / "tiny.fp32.onnx", _inputs(512, 2))
    assert sorted(p.name for p in int8s.values()) == ["tiny.int8-tensorrt.onnx", "tiny.int8.onnx"]
    card = ModelCard(
        name="tiny", task="ecg-beats", version="test", classes=("N", "S", "V"),
        inputs={"beat": (-1, 1, 64), "rr": (-1, 2)},
        preprocessing={"id": "beat-window/1", "fs": 128.0},
        artifacts=artifacts_of({"fp32": d / "tiny.fp32.onnx", **int8s}),
    )  # fmt: skip
    card.save(card_path(d / "tiny"))
    return d


def test_exported_model_has_dynamic_batch_and_matches_torch(zoo: Path):
    m = load_model(zoo / "tiny", precision="fp32", providers="cpu")
    for n in (1, 7, 300):
        assert m.run(_inputs(n, 3)).shape == (n, 3)
    assert m.provider == CPU


def test_int8_is_qdq_and_close_to_fp32(zoo: Path):
    import onnx

    ops = {n.op_type for n in onnx.load(str(zoo / "tiny.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = _inputs(400, 4)
    fp = load_model(zoo / "tiny", precision="fp32").run(x)
    q = load_model(zoo / "tiny", precision="int8").run(x)
    assert np.mean(fp.argmax(1) == q.argmax(1)) > 0.95
    w = _layer_weights(zoo / "tiny.int8.onnx")
    assert [a.dtype for a in w] == [np.int8] * 3  # c1, c2, head: INT8 weights


def _layer_weights(path: Path) -> list[np.ndarray]:
    """The stored (quantized) weights of the Conv/Gemm nodes of a QDQ model, in graph order (found by
    structure: the shipped artifacts have short internal names)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    return [inits[producer[n.input[1]].input[0]] for n in g.node if n.op_type in ("Conv", "Gemm")]


def _activation_zero_points(path: Path) -> list[np.ndarray]:
    """Zero points of the activation quantizers (QuantizeLinear nodes) of a QDQ model."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return [inits[n.input[2]] for n in g.node if n.op_type == "QuantizeLinear"]


def test_cpu_int8_folds_relu_into_uint8_activations_tensorrt_int8_is_symmetric(zoo: Path):
    """The CPU artifact: UINT8 activations and no ReLU left (each is the zero of its convolution's
    output quantizer, so ONNX Runtime runs QLinearConv end to end). The TensorRT artifact: INT8
    activations with zero point 0 everywhere (explicit quantization accepts nothing else), ReLUs kept.
    Both keep FP32's answers."""
    import onnx

    cpu, trt = zoo / "tiny.int8.onnx", zoo / "tiny.int8-tensorrt.onnx"
    ops = {p: [n.op_type for n in onnx.load(str(p)).graph.node] for p in (cpu, trt)}
    assert "Relu" not in ops[cpu] and ops[trt].count("Relu") == 2
    assert all(z.dtype == np.uint8 for z in _activation_zero_points(cpu))
    zt = _activation_zero_points(trt)
    assert zt and all(z.dtype == np.int8 and not z.any() for z in zt)
    x = _inputs(400, 4)
    fp = load_model(zoo / "tiny", precision="fp32").run(x).argmax(1)
    for precision in ("int8", "int8-tensorrt"):
        q = load_model(zoo / "tiny", precision=precision, providers="cpu")
        assert q.path.name == f"tiny.{precision}.onnx"
        assert np.mean(q.run(x).argmax(1) == fp) > 0.95, precision


def test_int8_weights_are_kept_to_7_bits_with_consistent_biases(zoo: Path, tmp_path: Path):
    """7-bit weights (no vpmaddubsw saturation on CPUs without VNNI); 8 bits when asked; the INT32 bias
    is rescaled with its weight so the 7-bit model computes what the 8-bit one does."""

    from vigil.export.quantize import quantize_int8

    seven = _layer_weights(zoo / "tiny.int8.onnx")
    assert seven and max(int(np.abs(w).max()) for w in seven) == 63
    eight = quantize_int8(zoo / "tiny.fp32.onnx", tmp_path / "eight.onnx", _inputs(512, 2), weight_bits=8)
    assert max(int(np.abs(w).max()) for w in _layer_weights(eight)) == 127
    with pytest.raises(ValueError, match="weight_bits"):
        quantize_int8(zoo / "tiny.fp32.onnx", tmp_path / "x.onnx", _inputs(64, 2), weight_bits=9)
    import onnxruntime as ort

    x = _inputs(300, 5)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # float reference of QDQ math
    run7, run8 = (
        ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]).run(None, x)[0]
        for p in (zoo / "tiny.int8.onnx", eight)
    )
    assert np.abs(run7 - run8).max() < 0.05 * np.abs(run8).max()


def test_card_round_trip(zoo: Path):
    card = load_card(zoo / "tiny.int8.onnx")
    assert ModelCard.from_json(card.to_json()) == card
    assert card.fs == 128.0 and card.inputs["beat"] == (-1, 1, 64)


def _copy_zoo(zoo: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(zoo, dst)
    return dst


def test_corrupt_truncated_or_swapped_artifacts_are_refused(zoo: Path, tmp_path: Path):
    d = _copy_zoo(zoo, tmp_path / "z")
    data = (d / "tiny.int8.onnx").read_bytes()
    (d / "tiny.int8.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="does not match the card"):
        load_model(d / "tiny", precision="int8")
    (d / "tiny.fp32.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(d / "tiny", precision="fp32")
    (d / "tiny.card.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a valid model card"):
        load_model(d / "tiny")
    with pytest.raises(ModelError, match="cannot read the model card"):
        load_model(tmp_path / "nothing" / "tiny")


def test_a_card_that_disagrees_with_the_network_is_refused(zoo: Path, tmp_path: Path):
    d = _copy_zoo(zoo, tmp_path / "z")
    card = load_card(d / "tiny")
    bad = ModelCard(**{**card.__dict__, "inputs": {"beat": (-1, 1, 90), "rr": (-1, 2)}})
    bad.save(card_path(d / "tiny"))
    with pytest.raises(ModelError, match="input 'beat' has shape"):
        load_model(d / "tiny")
    bad = ModelCard(**{**card.__dict__, "classes": ("N", "V")})
    bad.save(card_path(d / "tiny"))
    with pytest.raises(ModelError, match="one score per class"):
        load_model(d / "tiny")
    card.save(card_path(d / "tiny"))
    with pytest.raises(ModelError, match="expects 128 Hz input"):
        load_model(d / "tiny", fs=360.0)
    with pytest.raises(ModelError, match="not ecg-rhythm"):
        load_model(d / "tiny", task="ecg-rhythm")
    with pytest.raises(ModelError, match="preprocessing 'beat-window/9' is not implemented"):
        ModelCard(**{**card.__dict__, "preprocessing": {"id": "beat-window/9", "fs": 128.0}})
    # garbage bytes with a matching hash: ONNX Runtime refuses them, with the file named
    (d / "tiny.int8.onnx").write_bytes(b"\x00not an onnx model")
    ModelCard(
        **{**card.__dict__, "artifacts": {**card.artifacts, "int8": artifact(d / "tiny.int8.onnx")}}
    ).save(card_path(d / "tiny"))
    with pytest.raises(ModelError, match="ONNX Runtime cannot load it"):
        load_model(d / "tiny")


def test_provider_plan_prefers_tensorrt_then_cuda_then_cpu():
    assert provider_plan([CPU]) == [CPU]
    assert provider_plan([CUDA, TENSORRT, CPU]) == [TENSORRT, CUDA, CPU]
    assert provider_plan([CUDA, CPU], "tensorrt") == [CPU]
    assert provider_plan([CUDA, TENSORRT, CPU], ["cuda"]) == [CUDA, CPU]
    with pytest.raises(ValueError, match="unknown execution provider"):
        provider_plan([CPU], "tpu")


def test_missing_gpu_providers_fall_back_to_cpu_with_a_log(zoo: Path, caplog, monkeypatch):
    import onnxruntime as ort

    real = ort.InferenceSession

    def fake_session(path, so, providers):
        name = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if name != CPU:
            raise RuntimeError(f"{name}: libcudart.so.12: cannot open shared object file")
        return real(path, so, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    with caplog.at_level(logging.WARNING, logger="vigil.export.runtime"):
        m = load_model(zoo / "tiny")
    assert m.provider == CPU
    text = caplog.text
    assert "TensorrtExecutionProvider unavailable" in text and "CUDAExecutionProvider unavailable" in text


def test_int8_on_tensorrt_takes_the_symmetric_artifact(zoo: Path, tmp_path: Path, caplog, monkeypatch):
    """precision="int8" opens int8-tensorrt.onnx on TensorRT and int8.onnx on CUDA and CPU; a card
    without a TensorRT artifact skips TensorRT for INT8, with a logged reason."""
    import shutil

    import onnxruntime as ort

    real, opened = ort.InferenceSession, []

    def fake_session(path, so, providers):
        name = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        opened.append((name, Path(path).name))
        if name != CPU:
            raise RuntimeError(f"{name}: no GPU here")
        return real(path, so, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    load_model(zoo / "tiny", precision="int8")
    assert opened == [
        (TENSORRT, "tiny.int8-tensorrt.onnx"),
        (CUDA, "tiny.int8.onnx"),
        (CPU, "tiny.int8.onnx"),
    ]
    opened.clear()
    load_model(zoo / "tiny", precision="fp32")
    assert [f for _, f in opened] == ["tiny.fp32.onnx"] * 3
    for f in zoo.glob("tiny.*"):
        shutil.copy(f, tmp_path / f.name)
    card = load_card(tmp_path / "tiny")
    arts = {k: v for k, v in card.artifacts.items() if k != "int8-tensorrt"}
    ModelCard(**{**card.__dict__, "artifacts": arts}).save(card_path(tmp_path / "tiny"))
    opened.clear()
    with caplog.at_level(logging.WARNING, logger="vigil.export.runtime"):
        assert load_model(tmp_path / "tiny", precision="int8").provider == CPU
    assert [p for p, _ in opened] == [CUDA, CPU]
    assert "no 'int8-tensorrt' artifact for TensorrtExecutionProvider" in caplog.text


def test_engine_cache_is_keyed_by_model_tensorrt_and_gpu(tmp_path: Path):
    a = engine_cache_dir(tmp_path, "a" * 64)
    b = engine_cache_dir(tmp_path, "b" * 64)
    assert a != b and a.parent == tmp_path and a.name.startswith("a" * 16 + "-trt")


def test_tensorrt_engine_runs_where_tensorrt_imports(zoo: Path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (Jetson / NVIDIA GPU machines)")
    import onnxruntime as ort

    if TENSORRT not in ort.get_available_providers():
        pytest.skip("tensorrt imports but ONNX Runtime has no TensorRT execution provider")
    m = load_model(zoo / "tiny", precision="int8", providers="tensorrt", engine_cache=zoo / "engines")
    assert m.provider == TENSORRT
    ref = load_model(zoo / "tiny", precision="int8", providers="cpu").run(_inputs(64, 5))
    assert np.mean(m.run(_inputs(64, 5)).argmax(1) == ref.argmax(1)) > 0.95


@pytest.mark.parametrize("name", ["ecg-beats", "ecg-rhythm", "eeg-seizure", "emg-gesture"])
def test_shipped_int8_artifacts_are_quantized_for_their_runtime(name: str):
    """Every network in the zoo ships ``int8`` with UINT8 activations (ONNX Runtime on CPUs) and
    ``int8-tensorrt`` with symmetric INT8 activations (zero point 0: TensorRT explicit quantization),
    both with 7-bit weights (no saturation in x86 u8s8 kernels without VNNI)."""
    import onnx
    from onnx import numpy_helper

    from vigil.edge.networks import zoo_dir

    card = load_card(zoo_dir() / name)
    for key, act_dtype in (("int8", np.uint8), ("int8-tensorrt", np.int8)):
        path = zoo_dir() / card.artifacts[key].file
        zps = _activation_zero_points(path)
        assert zps and all(z.dtype == act_dtype for z in zps), key
        if act_dtype is np.int8:
            assert not any(z.any() for z in zps)
        g = onnx.load(str(path)).graph
        weights = [numpy_helper.to_array(i) for i in g.initializer if i.data_type == onnx.TensorProto.INT8]
        weights = [w for w in weights if w.ndim >= 2]  # weight tensors (zero points are scalars or 1-D)
        assert weights and max(int(np.abs(w.astype(int)).max()) for w in weights) <= 63, key
