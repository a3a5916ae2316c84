#!/usr/bin/env python
"""ecg-rhythm speed: INT8 vs FP32 ONNX Runtime vs torch eager, batch 1, 64 and 1024 windows, one core.

All three peers run in this one process on one CPU core (the process is pinned to it; ONNX Runtime and
torch get one thread each), on the same real windows: the sliding 10-s windows of the vendored CinC
2017 strips (``data/cinc2017``), repeated to fill a batch. Peers are timed in turns (INT8, FP32,
torch, INT8, ...) so that load from other processes hits them alike; the median time per call is
reported, with the ratios ``FP32 / INT8`` (INT8 speed-up) and ``torch / FP32``. Then the single-window
latency (p50 / p99 over ``--runs`` calls) of INT8 and FP32, the issue's floors (INT8 >= 1.5x FP32 at
batch 1024; single-window p99 <= 1 ms) and whether they are met.

    .venv/bin/python bench/rhythm_classifier.py
    .venv/bin/python bench/rhythm_classifier.py --model path/to/zoo/ecg-rhythm --runs 2000 --json out.json
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from model_speed import conclude, ort_peer, pin_to_one_core, round_robin, speed_args, tile

REPO = Path(__file__).resolve().parent.parent
BATCHES = (1, 64, 1024)


def _windows(params) -> dict[str, np.ndarray]:
    from vigil.firmware_bridge.replay import read_wfdb
    from vigil.kernels.rhythm_strip import strip_windows

    ecg, rr = [], []
    for hea in sorted((REPO / "data" / "cinc2017").glob("*.hea")):
        rec = read_wfdb(hea.with_suffix(""), channels=[0], annotator=None)
        w = strip_windows(rec.signal[:, 0], rec.fs, params)
        ecg.append(w.ecg)
        rr.append(w.rr)
    return {"ecg": np.concatenate(ecg), "rr": np.concatenate(rr)}


def _torch(zoo: Path) -> Callable[[dict], np.ndarray] | None:
    try:
        import torch

        from vigil.models.rhythm import _load_checkpoint
    except ImportError:
        return None
    torch.set_num_threads(1)
    _, _, model = _load_checkpoint(zoo)

    def run(feed: dict) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(feed["ecg"]), torch.from_numpy(feed["rr"])).numpy()

    return run


def _latency(fn: Callable, feed: dict, runs: int) -> tuple[float, float]:
    for _ in range(50):
        fn(feed)
    t = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn(feed)
        t[i] = time.perf_counter() - t0
    p50, p99 = np.percentile(t, [50, 99]) * 1e3
    return float(p50), float(p99)


def main() -> int:
    from vigil.export.card import load_card, verified_artifact
    from vigil.kernels.rhythm_strip import StripParams

    ap = speed_args(__doc__.split("\n")[0], REPO / "models" / "zoo" / "ecg-rhythm", runs=1000)
    args = ap.parse_args()
    cpu = pin_to_one_core(args.cpu)
    card = load_card(Path(args.model))
    folder = Path(args.model).parent
    peers = {p: ort_peer(verified_artifact(card, folder, p)) for p in ("int8", "fp32")}
    eager = _torch(folder)
    if eager is not None:
        peers["torch"] = eager
    x = _windows(StripParams.from_card(card.preprocessing))
    print(f"ecg-rhythm {card.version}: {len(x['ecg'])} real windows of {card.inputs['ecg'][-1]} samples "
          f"({card.preprocessing['window_s']:g} s at {card.fs:g} Hz); one core (cpu {cpu}), "
          f"{platform.processor() or platform.machine()}; peers: {', '.join(peers)}")  # fmt: skip
    if eager is None:
        print("torch eager: skipped (the train extra is not installed)")
    res: dict = {"batches": {}, "cpu": cpu}
    head = " ".join(f"{k + ' ms/call':>15}" for k in peers)
    print(f"{'batch':>6} {head} {'INT8 x':>8} {'torch/FP32':>11} {'INT8 win/s':>11}")
    for b in BATCHES:
        feed = tile(x, b)
        t = round_robin(peers, feed, args.seconds)
        speedup = t["fp32"] / t["int8"]
        row = {k: round(v * 1e3, 4) for k, v in t.items()}
        row["int8_speedup_vs_fp32"] = round(speedup, 3)
        if "torch" in t:
            row["torch_over_fp32"] = round(t["torch"] / t["fp32"], 3)
        res["batches"][b] = row
        print(f"{b:>6} " + " ".join(f"{v * 1e3:>15.3f}" for v in t.values()) + f" {speedup:>8.2f}"
              f" {row.get('torch_over_fp32', float('nan')):>11.2f} {b / t['int8']:>11.0f}")  # fmt: skip
    one = tile(x, 1)
    for p in ("int8", "fp32"):
        p50, p99 = _latency(peers[p], one, args.runs)
        res[f"{p}_single"] = {"p50_ms": round(p50, 4), "p99_ms": round(p99, 4)}
        print(f"single window {p}: p50 {p50:.3f} ms, p99 {p99:.3f} ms ({args.runs} calls)")
    return conclude(res, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
