"""The task ``ecg-rhythm``'s network learns before its CinC strips: beat classes on MIT-BIH DS1.

1000 labelled strips are few for a network that must learn what ectopic, aberrant and fibrillating
beats look like from the strip label alone (``bench/rhythm_learning_curve.py``: the score climbs
about 4 points per doubling of records). MIT-BIH labels every beat. So the network first reads 10-s
MIT-BIH DS1 windows, prepared exactly as CinC strips are ("rhythm-strip/1": lead MLII resampled to
100 Hz, band-passed, normalised, with the same RR features), and a linear head on its GRU outputs
names, at each of the 32 time steps (0.32 s), the AAMI class of the reference beat that falls in the
step (N, S, V, F, Q) or "no beat". The head is then dropped and every weight goes on to the CinC
training. ``leads`` chooses the MIT-BIH leads read: lead 0 (MLII, the closest to the hand-held lead I)
alone, or with the second lead (mostly V1) as more windows with the same labels, as the shipped recipe
does (``Config.pretext_leads``). Only DS1 records are read (the records
``ecg-beats`` trains on): record 100 and DS2 stay unseen.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vigil.kernels.beat_features import aami_class
from vigil.kernels.beat_match import BEAT_SYMBOLS
from vigil.kernels.rhythm_strip import StripParams, cut_windows, prepare_strip

STEP_CLASSES = 6  # 0: no beat in the step; 1 + the AAMI class index (N, S, V, F, Q)
IGNORE = -100  # a beat symbol with no AAMI class: its step is not scored
STEPS = 32  # time steps of the network's GRU per window


def step_labels(
    starts: np.ndarray, beats: np.ndarray, classes: np.ndarray, window: int, steps: int = STEPS
) -> np.ndarray:
    """``[windows, steps]`` targets: 1 + the AAMI class of the beat in each step, 0 where none falls,
    IGNORE for a beat of no class (-1 in ``classes``). ``beats`` are sorted sample indices at the
    model rate; the step of a beat at ``b`` in a window from ``s`` is ``(b - s) * steps // window``."""
    out = np.zeros((len(starts), steps), dtype=np.int64)
    for i, s in enumerate(np.asarray(starts, dtype=np.int64)):
        lo, hi = np.searchsorted(beats, [s, s + window])
        step = (beats[lo:hi] - s) * steps // window
        out[i, step] = np.where(classes[lo:hi] >= 0, classes[lo:hi] + 1, IGNORE)
    return out


def pretext_windows(
    mitdb: Path,
    names: tuple[str, ...],
    params: StripParams,
    hop_s: float = 5.0,
    leads: tuple[int, ...] = (0,),
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Network inputs of every ``hop_s`` window of each of ``leads`` of the records ``names`` found in
    ``mitdb``, and their step labels. Raises ``FileNotFoundError`` when none of them is there."""
    from vigil.firmware_bridge.replay import read_wfdb

    present = [n for n in names if (Path(mitdb) / f"{n}.hea").is_file()]
    if not present:
        raise FileNotFoundError(f"{mitdb}: none of the MIT-BIH records {', '.join(names)}")
    ecg, rr, lab = [], [], []
    for name, lead in ((n, k) for n in present for k in leads):
        rec = read_wfdb(Path(mitdb) / name, channels=[lead])
        strip = prepare_strip(rec.signal[:, 0], rec.fs, params)
        ann = rec.annotations
        is_beat = np.array([s in BEAT_SYMBOLS for s in ann.symbol], dtype=bool)
        classes = np.array(
            [aami_class(s) for s, b in zip(ann.symbol, is_beat, strict=True) if b], dtype=np.int64
        )
        at = np.round(ann.sample[is_beat] * params.fs / rec.fs).astype(np.int64)
        w = cut_windows(strip, np.arange(0, max(1, len(strip) - params.window), int(hop_s * params.fs)))
        ecg.append(w.ecg)
        rr.append(w.rr)
        lab.append(step_labels(w.start, at, classes, params.window))
    return {"ecg": np.concatenate(ecg), "rr": np.concatenate(rr)}, np.concatenate(lab)


def pretrain(model, inputs: dict, labels: np.ndarray, cfg, epochs: int, rng: np.random.Generator) -> None:
    """Fit ``model`` (a :func:`vigil.models.rhythm.build` network, ``cfg`` its Config) to the step
    labels for ``epochs``: a throw-away linear head on the GRU outputs, cross-entropy with tempered
    class weights, AdamW with a one-cycle schedule, the recipe's augmentation and polarity flips."""
    import torch
    from torch import nn

    from vigil.models.training import augment, class_weights, reverse_polarity

    head = nn.Linear(2 * cfg.hidden, STEP_CLASSES)
    seen: dict[str, torch.Tensor] = {}
    hook = model.gru.register_forward_hook(lambda m, a, out: seen.__setitem__("h", out[0]))
    n = len(labels)
    steps = math.ceil(n / cfg.batch)
    opt = torch.optim.AdamW(
        list(model.parameters()) + list(head.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=epochs * steps, pct_start=0.15)
    weights = class_weights(labels[labels != IGNORE], STEP_CLASSES, cfg.class_power)
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights), ignore_index=IGNORE)
    try:
        for _ in range(epochs):
            model.train()
            for idx in np.array_split(rng.permutation(n), steps):
                ecg = reverse_polarity(augment(inputs["ecg"][idx], rng), rng)
                model(torch.from_numpy(np.ascontiguousarray(ecg)), torch.from_numpy(inputs["rr"][idx]))
                target = torch.from_numpy(labels[idx]).reshape(-1)
                loss = loss_fn(head(seen["h"]).reshape(-1, STEP_CLASSES), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    finally:
        hook.remove()
