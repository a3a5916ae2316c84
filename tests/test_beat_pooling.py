"""morphology-pooling/1 (kernels/beat_pooling.py): the streaming form equals the definition on a real
record's beats and network scores, whatever the batching; the edge cases the definition implies; the
card's post-processing is validated and used by the run-time path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vigil.edge.beat_classes import BeatClassifier, default_model
from vigil.export.card import ModelError, load_card
from vigil.export.runtime import cpu_session
from vigil.kernels.beat_features import BeatWindowParams
from vigil.kernels.beat_pooling import (
    MorphologyPooling,
    PoolingParams,
    morphology_vectors,
    pool_reference,
    target_margin,
)
from vigil.models.beats import load_record


@pytest.fixture(scope="module")
def beats_208(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Record 208's classifiable beat windows (the beat channel) and the shipped FP32 network's logits."""
    card = load_card(default_model())
    rb = load_record(data_dir / "mitdb" / "208", params=BeatWindowParams.from_card(card.preprocessing))
    x = rb.inputs(rb.valid)
    scores = cpu_session(default_model().parent / card.artifacts["fp32"].file).run(None, x)[0]
    return x["beat"][:, 0], scores


@pytest.mark.parametrize("history", [1024, 50])
def test_streaming_equals_the_definition_on_a_real_record(beats_208, history: int):
    windows, scores = beats_208
    p = PoolingParams(history=history)
    ref = pool_reference(windows, scores, p)
    pool, out, a = MorphologyPooling(p), [], 0
    rng = np.random.default_rng(0)
    while a < len(scores):  # uneven batches, as the monitor's ticks give them
        b = a + int(rng.integers(1, 40))
        out.append(pool.process(windows[a:b], scores[a:b]))
        a = b
    np.testing.assert_allclose(np.concatenate(out), ref, rtol=0, atol=1e-4)
    # one call over the whole record goes through the block path
    np.testing.assert_allclose(MorphologyPooling(p).process(windows, scores), ref, rtol=0, atol=1e-4)
    # only the V column moves, and it does move on a record with 992 V beats
    np.testing.assert_array_equal(np.delete(ref, p.target, 1), np.delete(scores, p.target, 1))
    assert np.mean(np.abs(ref[:, p.target] - scores[:, p.target] - p.bias) > 0.1) > 0.2


def test_margin_is_the_log_odds_of_the_target():
    s = np.array([[1.0, 0.0, 2.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0]])
    d = target_margin(s, 2)
    p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    np.testing.assert_allclose(d, np.log(p[:, 2] / (1 - p[:, 2])))
    np.testing.assert_allclose(target_margin(s + 7.0, 2), d)


def test_no_look_alikes_means_only_the_bias(beats_208):
    windows, scores = beats_208
    p = PoolingParams(bias=0.5)
    out = MorphologyPooling(p).process(windows[:1], scores[:1])  # the first beat has no history
    assert out[0, p.target] == pytest.approx(scores[0, p.target] + 0.5, abs=1e-5)
    flat = np.zeros((3, windows.shape[1]))  # a flat window correlates with nothing
    assert not morphology_vectors(flat, p).any()
    out = MorphologyPooling(p).process(np.vstack([windows[:5], flat]), np.vstack([scores[:5], scores[:3]]))
    np.testing.assert_allclose(out[5:, p.target], scores[:3, p.target] + 0.5, atol=1e-5)


def test_zero_weight_and_bias_is_the_identity(beats_208):
    windows, scores = beats_208
    out = MorphologyPooling(PoolingParams(weight=0.0, bias=0.0)).process(windows[:300], scores[:300])
    np.testing.assert_allclose(out, scores[:300], atol=1e-5)


def test_identical_beats_pool_towards_their_mean():
    t = np.linspace(0, 1, 96)
    w = np.tile(np.exp(-(((t - 0.42) / 0.03) ** 2)), (4, 1))
    s = np.zeros((4, 5))
    s[:, 2] = [2.0, 2.0, 2.0, -2.0]  # three confident V, then a look-alike the network called N
    p = PoolingParams(weight=1.0, bias=0.0, prior=1.0)
    out = pool_reference(w, s, p)
    d = target_margin(s, 2)
    # the fourth beat's three look-alikes weigh 1 each: it moves 3/4 of the way to their margin
    assert target_margin(out, 2)[3] == pytest.approx(d[3] + 0.75 * (d[0] - d[3]))


def test_parameters_are_checked_and_round_trip_through_the_card():
    p = PoolingParams(tau=0.05, bias=0.25)
    assert PoolingParams.from_card(p.card()) == p
    with pytest.raises(ValueError, match="morphology-pooling/1"):
        PoolingParams.from_card({**p.card(), "id": "morphology-pooling/9"})
    for bad in ({"tau": 0.0}, {"weight": 1.5}, {"start": 50, "stop": 40}, {"history": 0}, {"floor": 2.0}):
        with pytest.raises(ValueError):
            replace(p, **bad)
    with pytest.raises(ValueError, match="windows"):
        MorphologyPooling(p).process(np.zeros((2, 96)), np.zeros((3, 5)))


def test_the_shipped_card_names_pooling_and_an_unknown_step_is_refused(tmp_path: Path):
    card = load_card(default_model())
    assert PoolingParams.from_card(card.postprocessing) == BeatClassifier().pooling
    with pytest.raises(ModelError, match="postprocessing"):
        type(card)(**{**card.__dict__, "postprocessing": {"id": "majority-vote/1"}})
