"""What every Vigil network's training shares: seeding, biosignal augmentation, class balancing,
one training loop with a progress bar, batched prediction. Needs the ``train`` extra (torch).

Inputs are dicts of float32 arrays (``{"beat": [n, 1, t], "rr": [n, k]}``), the same names the
exported ONNX model takes, so training, export and the runtime agree on one layout.

Augmentations (:func:`augment`, numpy, applied per batch to the *signal* inputs ``[n, ch, t]``):
amplitude scaling (x U(0.8, 1.25)), baseline wander (a 0.05-0.5 Hz sinusoid of up to 10 % of the
window's range), Gaussian noise (SNR 20-40 dB) and time warping (resampled by U(0.9, 1.1) about
the window's centre, so a beat's fiducial point stays put). Each is applied with probability
``p``; the random generator is explicit, so a seeded run is reproducible.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.export.quantize import WEIGHT_BITS

Inputs = Mapping[str, np.ndarray]
#: Seed offset between the members of a seed ensemble (member ``j``: seed ``s + SEED_STEP j``).
SEED_STEP = 7919


def mean_ensemble(members: Sequence[Any]) -> Any:
    """One module whose output is the mean of its ``members``' outputs (logits), exported as one ONNX
    graph; the members are kept in its ``members`` list (state-dict keys ``members.<j>.…``)."""
    from torch import nn

    class MeanEnsemble(nn.Module):
        """Mean of the members' logits (a seed ensemble: same data and recipe, other seeds)."""

        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(members)

        def forward(self, *inputs: Any) -> Any:
            out = self.members[0](*inputs)
            for m in self.members[1:]:
                out = out + m(*inputs)
            return out * (1.0 / len(self.members))

    return MeanEnsemble()


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch (CPU, deterministic algorithms); return a numpy Generator."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may draw from the legacy global state
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return np.random.default_rng(seed)


def class_weights(labels: np.ndarray, n_classes: int, power: float = 0.5) -> np.ndarray:
    """Loss weights ``(N / (k * n_c)) ** power`` (``power=1``: fully balanced; 0.5: tempered, which
    keeps the majority class's precision); an absent class gets weight 0."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(float)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, (counts.sum() / (n_classes * counts)) ** power, 0.0)
    return (w / w[counts > 0].mean()).astype(np.float32)


def reverse_polarity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A batch ``[n, ch, t]`` with a random half of its windows negated: hand-held single-lead devices
    are often held reversed."""
    sign = np.where(rng.random(len(x)) < 0.5, -1.0, 1.0).astype(np.float32)
    return x * sign[:, None, None]


def augment(x: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Randomly scaled, wandering, noisy, time-warped copy of a batch ``[n, ch, t]`` (see module doc)."""
    x = np.array(x, dtype=np.float32, copy=True)
    n, _, t = x.shape
    span = np.ptp(x, axis=-1, keepdims=True) + 1e-6
    on = rng.random((4, n)) < p
    scale = np.where(on[0], rng.uniform(0.8, 1.25, n), 1.0)[:, None, None]
    x *= scale
    tt = np.arange(t, dtype=np.float32) / t
    f = rng.uniform(0.05, 0.5, n)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    wander = 0.1 * span * scale * rng.uniform(0, 1, n)[:, None, None] * np.sin(2 * np.pi * f * tt * 2 + phase)
    x += np.where(on[1][:, None, None], wander, 0.0).astype(np.float32)
    snr_db = rng.uniform(20, 40, n)[:, None, None]
    power = np.mean(x**2, axis=-1, keepdims=True)
    noise = rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    x += np.where(on[2][:, None, None], noise, 0.0).astype(np.float32)
    warp = np.flatnonzero(on[3])
    if len(warp):
        centre = (t - 1) / 2
        grid = np.arange(t)
        for i, r in zip(warp, rng.uniform(0.9, 1.1, len(warp)), strict=True):
            src = centre + (grid - centre) * r
            for c in range(x.shape[1]):
                x[i, c] = np.interp(src, grid, x[i, c])
    return x


@dataclass
class FitResult:
    epochs: int
    train_loss: list[float] = field(default_factory=list)
    val_score: list[float] = field(default_factory=list)
    best_epoch: int = -1


def _batches(n: int, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]


def predict(model: object, inputs: Inputs, batch: int = 1024) -> np.ndarray:
    """Model outputs (logits) for all items, in order, in eval mode."""
    import torch

    model.eval()
    names = list(inputs)
    n = len(inputs[names[0]])
    out = []
    with torch.no_grad():
        for idx in _batches(n, batch, None):
            out.append(
                model(*(torch.from_numpy(np.ascontiguousarray(inputs[k][idx])) for k in names)).numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def fit(
    model: object,
    inputs: Inputs,
    labels: np.ndarray,
    *,
    epochs: int,
    rng: np.random.Generator,
    batch: int = 256,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    weights: np.ndarray | None = None,
    augment_keys: Sequence[str] = (),
    val: tuple[Inputs, Callable[[np.ndarray], float]] | None = None,
    progress: bool = True,
    label: str = "training",
) -> FitResult:
    """AdamW + cosine learning rate, cross-entropy with ``weights``; ``augment_keys`` name the signal
    inputs to augment. With ``val=(inputs, score_fn)`` the best-scoring epoch's weights are kept."""
    import copy

    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(labels) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weights is None else torch.from_numpy(weights))
    names = list(inputs)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    result = FitResult(epochs)
    best: tuple[float, dict] | None = None
    bar = progress_bar(progress, label, epochs)
    try:
        for epoch in range(epochs):
            model.train()
            total, count = 0.0, 0
            for idx in _batches(len(labels), batch, rng):
                xs = []
                for k in names:
                    a = inputs[k][idx]
                    xs.append(
                        torch.from_numpy(augment(a, rng) if k in augment_keys else np.ascontiguousarray(a))
                    )
                opt.zero_grad()
                loss = loss_fn(model(*xs), y_all[idx])
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                count += len(idx)
            result.train_loss.append(total / max(count, 1))
            text = f"loss {result.train_loss[-1]:.4f}"
            if val is not None:
                score = float(val[1](predict(model, val[0])))
                result.val_score.append(score)
                text += f"  val {score:.4f}"
                if best is None or score > best[0]:
                    best = (score, copy.deepcopy(model.state_dict()))
                    result.best_epoch = epoch
            bar.advance(text)
    finally:
        bar.close()
    if best is not None:
        model.load_state_dict(best[1])
    return result


class _Bar:
    def __init__(self, progress: object | None, task: object | None) -> None:
        self.progress, self.task = progress, task

    def advance(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, status=text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def progress_bar(enabled: bool, label: str, epochs: int) -> _Bar:
    """An epoch bar (rich) with a status text, or a no-op when not ``enabled``."""
    if not enabled:
        return _Bar(None, None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )  # fmt: skip
    p.start()
    return _Bar(p, p.add_task(label, total=epochs, status=""))


def count_parameters(model: object) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def fake_quantize_weights(w: Any, bits: int) -> Any:
    """``w`` rounded as :mod:`vigil.export.quantize` ships it (symmetric, per output channel, ``bits``
    bits: ``2 ** (bits - 1) - 1`` levels each side of zero), with a straight-through gradient. A batch
    norm folded into a convolution at export scales whole output channels, which leaves this
    rounding unchanged."""
    import torch

    qmax = 2 ** (bits - 1) - 1
    s = w.detach().abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / qmax
    return w + (torch.clamp(torch.round(w / s), -qmax, qmax) * s - w).detach()


@contextlib.contextmanager
def weights_on_int8_grid(model: Any, bits: int) -> Iterator[None]:
    """Inside: every convolution and dense layer of ``model`` computes with its weights fake-quantized
    (:func:`fake_quantize_weights`), so fine-tuning learns around the rounding. On exit the weights
    are left on that grid, which INT8 export then represents exactly."""
    from torch import nn
    from torch.nn.utils import parametrize

    class OnGrid(nn.Module):
        def forward(self, w: Any) -> Any:
            return fake_quantize_weights(w, bits)

    layers = [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]
    for m in layers:
        parametrize.register_parametrization(m, "weight", OnGrid())
    try:
        yield
    finally:
        for m in layers:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def train_classifier(
    build: Any,
    inputs: dict[str, np.ndarray],
    y: np.ndarray,
    n_classes: int,
    augment_keys: tuple[str, ...],
    epochs: int,
    seed: int,
    progress: bool = True,
    label: str = "training",
    batch: int = 128,
    class_power: float = 1.0,
    qat_epochs: int = 0,
    weight_bits: int = WEIGHT_BITS,
) -> Any:
    """A network from ``build()`` trained with :func:`fit` on ``inputs``/``y``: seeded before it is
    built (so its initial weights follow ``seed``), class weights ``(N / (k n_c)) ** class_power``,
    biosignal augmentation on ``augment_keys``; then ``qat_epochs`` epochs of fine-tuning at a tenth
    of the learning rate with the weights on the INT8 artifact's ``weight_bits`` grid
    (:func:`weights_on_int8_grid`: 7-bit weights cost small networks a few points of some class
    otherwise). Returned in eval mode."""
    rng = seed_everything(seed)
    model = build()
    kw = dict(rng=rng, batch=batch, weights=class_weights(y, n_classes, class_power),
              augment_keys=augment_keys, progress=progress)  # fmt: skip
    fit(model, inputs, y, epochs=epochs, label=label, **kw)
    if qat_epochs > 0:
        with weights_on_int8_grid(model, weight_bits):
            fit(model, inputs, y, epochs=qat_epochs, lr=3e-4, label=f"{label} (INT8 weights)", **kw)
    return model.eval()
