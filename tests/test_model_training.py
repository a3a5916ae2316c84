"""models/metrics.py (numpy) and models/training.py (torch): metrics, augmentation, the loop."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.models.metrics import bootstrap_ci, class_stats, confusion, f1_scores, macro_f1


def test_class_stats_by_hand():
    ref = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    s = {c.label: c for c in class_stats(ref, pred, ["N", "S", "V"])}
    assert (s["N"].tp, s["N"].fn, s["N"].fp) == (2, 1, 1)
    assert s["S"].se == 0.5 and s["S"].ppv == 0.5
    assert s["V"].se == 0.75 and s["V"].ppv == 0.75
    assert confusion(ref, pred, 3).sum() == 9
    np.testing.assert_allclose(f1_scores(ref, pred, 3), [2 / 3, 0.5, 0.75])
    assert macro_f1(ref, pred, 3, classes=[0, 2]) == pytest.approx((2 / 3 + 0.75) / 2)
    absent = class_stats(np.array([0, 0]), np.array([0, 0]), ["N", "V"])[1]
    assert np.isnan(absent.se) and np.isnan(absent.ppv)


def test_bootstrap_ci_resamples_groups():
    groups = np.repeat(np.arange(10), 50)
    values = np.repeat(np.linspace(0, 1, 10), 50)
    lo, hi = bootstrap_ci(groups, lambda i: float(values[i].mean()), n_boot=300)
    assert lo < 0.5 < hi and hi - lo > 0.2  # ten groups, not 500 items: a wide interval
    same = np.repeat(0.7, 500)
    assert bootstrap_ci(groups, lambda i: float(same[i].mean()), n_boot=50) == pytest.approx((0.7, 0.7))


def test_augment_and_fit():
    torch = pytest.importorskip("torch", reason="needs the train extra")
    from vigil.models.training import augment, class_weights, count_parameters, fit, predict, seed_everything

    rng = seed_everything(3)
    t = np.linspace(0, 1, 64, dtype=np.float32)
    y = rng.integers(0, 2, 600)
    x = np.sin(2 * np.pi * np.where(y, 6.0, 2.0)[:, None] * t)[:, None, :].astype(np.float32)
    a1 = augment(x[:8], np.random.default_rng(1))
    a2 = augment(x[:8], np.random.default_rng(1))
    assert a1.shape == x[:8].shape and a1.dtype == np.float32
    np.testing.assert_array_equal(a1, a2)
    assert not np.allclose(a1, x[:8])
    w = class_weights(np.array([0] * 90 + [1] * 10), 3)
    assert w[1] > w[0] and w[2] == 0

    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 9, padding=4), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 64, 2))  # fmt: skip
    assert count_parameters(model) == 4 * 9 + 4 + 4 * 64 * 2 + 2
    val = ({"x": x[500:]}, lambda s: float(np.mean(s.argmax(1) == y[500:])))
    res = fit(model, {"x": x[:500]}, y[:500], epochs=6, rng=rng, batch=64, augment_keys=("x",), val=val,
              progress=False)  # fmt: skip
    assert res.best_epoch >= 0 and max(res.val_score) > 0.9
    assert np.mean(predict(model, {"x": x[500:]}).argmax(1) == y[500:]) == max(res.val_score)


def test_int8_weight_fine_tuning_leaves_weights_the_int8_artifact_holds_exactly(tmp_path):
    """weights_on_int8_grid: layers compute with 7-bit per-channel weights inside (gradients still flow
    to the float weights), and leave them on that grid, so the INT8 export loses nothing on weights:
    the dequantized ONNX weights equal the torch ones."""
    torch = pytest.importorskip("torch", reason="needs the train extra")
    pytest.importorskip("onnx", reason="needs the train extra")
    import onnx
    from onnx import numpy_helper

    from vigil.export.onnx_export import export_onnx
    from vigil.export.quantize import quantize_int8
    from vigil.models.training import fake_quantize_weights, weights_on_int8_grid

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 5), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 60, 3))  # fmt: skip
    x = torch.randn(16, 1, 64)
    with weights_on_int8_grid(model, 7):
        w = model[0].weight
        np.testing.assert_array_equal(w.detach().numpy(), fake_quantize_weights(w, 7).detach().numpy())
        model(x).sum().backward()
        assert model[0].parametrizations.weight.original.grad is not None
    for layer in (model[0], model[3]):
        w = layer.weight.detach().numpy()
        s = np.abs(w).reshape(len(w), -1).max(axis=1) / 63
        codes = w / s.reshape((-1,) + (1,) * (w.ndim - 1))
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
    feed = {"x": np.random.default_rng(1).standard_normal((256, 1, 64)).astype(np.float32)}
    export_onnx(model.eval(), {"x": feed["x"][:4]}, tmp_path / "m.fp32.onnx")
    q = quantize_int8(tmp_path / "m.fp32.onnx", tmp_path / "m.int8.onnx", feed)
    g = onnx.load(str(q)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    deq = {n.input[0]: n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    checked = 0
    for name, torch_w in (("0.weight", model[0].weight), ("3.weight", model[3].weight)):
        node = deq[f"{name}_quantized"]
        scale = inits[node.input[1]].reshape((-1,) + (1,) * (torch_w.dim() - 1))
        np.testing.assert_allclose(
            inits[node.input[0]] * scale, torch_w.detach().numpy(), rtol=1e-5, atol=1e-7
        )
        checked += 1
    assert checked == 2
