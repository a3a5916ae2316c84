#!/usr/bin/env python
"""ecg-beats speed: INT8 vs FP32 ONNX Runtime vs torch eager, batch 1, 64 and 1024 beats, one core.

All peers run in this one process, pinned to one CPU core (ONNX Runtime and torch get one thread
each), on the same real inputs: the ``beat-window/1`` windows of the detected beats of a vendored
MIT-BIH record (default ``data/mitdb/208``), repeated to fill a batch. Peers are timed in turns so
that load from other processes hits them alike; the median time per call is reported with the
ratios ``FP32 / INT8`` (the INT8 speed-up) and ``torch / FP32``. Then:

* single-window latency (p50 / p99 over ``--runs`` calls) of INT8 and FP32, and the issue's floors
  (INT8 >= 1.5x FP32 at batch 1024; single-window p99 <= 1 ms);
* what ONNX Runtime's graph optimisation level does at batch 1024 (basic / extended / all);
  the card's TensorRT artifact (``int8-tensorrt``: symmetric INT8 activations, ReLUs in float
  between a dequantize and a quantize on ONNX Runtime's CPU kernels) is timed beside them, to show
  what the CPU artifact's UINT8 activations buy;
* beats classified per second per core by the whole chain (streaming QRS detector, beat windows,
  INT8 network, the card's morphology pooling; 1-s chunks), from CPU time, and the same chain
  without the pooling (what the pooling costs).

    .venv/bin/python bench/beat_classifier.py
    .venv/bin/python bench/beat_classifier.py --json out.json
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


def _windows(record: Path, params) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    from vigil.firmware_bridge.replay import read_wfdb
    from vigil.kernels.beat_features import beat_inputs
    from vigil.kernels.qrs import QRSDetector

    rec = read_wfdb(record, channels=[0], annotator=None)
    x = rec.signal[:, 0]
    det = QRSDetector(rec.fs)
    beats = np.concatenate([det.process(x), det.finish()])
    b, _ = beat_inputs(x, rec.fs, beats, params)
    return {"beat": b.beat[b.valid], "rr": b.rr[b.valid]}, x, rec.fs


def _torch(pt: Path) -> Callable[[dict], np.ndarray] | None:
    if not pt.is_file():  # the weights are written by `vigil train ecg-beats`
        return None
    try:
        import torch

        from vigil.models.beats import build_model
    except ImportError:
        return None
    torch.set_num_threads(1)
    ckpt = torch.load(pt, weights_only=True)
    model = build_model(ckpt["net"], ckpt.get("members", 1))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()

    def run(feed: dict) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(feed["beat"]), torch.from_numpy(feed["rr"])).numpy()

    return run


def _latency(peers: dict[str, Callable], x: dict, runs: int) -> dict[str, tuple[float, float]]:
    """p50 / p99 (ms) of single-window calls on changing real windows, peers interleaved."""
    for fn in peers.values():
        for i in range(50):
            fn(tile(x, 1, i))
    t = {k: np.empty(runs) for k in peers}
    for i in range(runs):
        feed = tile(x, 1, i)
        for k, fn in peers.items():
            t0 = time.perf_counter()
            fn(feed)
            t[k][i] = time.perf_counter() - t0
    return {k: tuple(float(v) for v in np.percentile(a, [50, 99]) * 1e3) for k, a in t.items()}


def _pipeline_rate(x: np.ndarray, fs: float, model: Path, pooling: bool = True) -> tuple[int, float]:
    """(beats classified, CPU seconds) of the whole chain on one lead, 1-s chunks, INT8; ``pooling``
    False drops the card's post-processing."""
    from vigil.edge.beat_classes import BeatClassifier, classify_signal

    clf = BeatClassifier(model, "int8", providers="cpu", threads=1)
    clf.pooling = clf.pooling if pooling else None
    classify_signal(x[: int(20 * fs)], fs, clf)  # warm-up (Numba, ORT)
    t0 = time.process_time()
    _, cls, _ = classify_signal(x, fs, clf)
    return int((cls >= 0).sum()), time.process_time() - t0


def main() -> int:
    from vigil.export.card import load_card, verified_artifact
    from vigil.kernels.beat_features import BeatWindowParams

    ap = speed_args(__doc__.split("\n")[0], REPO / "models" / "zoo" / "ecg-beats", runs=2000)
    ap.add_argument("--record", default=str(REPO / "data" / "mitdb" / "208"), help="WFDB record")
    args = ap.parse_args()
    cpu = pin_to_one_core(args.cpu)
    card = load_card(Path(args.model))
    folder = Path(args.model).parent
    paths = {p: verified_artifact(card, folder, p) for p in ("int8", "fp32")}
    peers = {p: ort_peer(paths[p]) for p in ("int8", "fp32")}
    eager = _torch(folder / f"{card.name}.pt")
    if eager is not None:
        peers["torch"] = eager
    x, lead, fs = _windows(Path(args.record), BeatWindowParams.from_card(card.preprocessing))
    print(
        f"{card.name} {card.version}: {len(x['rr'])} real beats of record {Path(args.record).name} "
        f"({card.inputs['beat'][1:]} + rr {card.inputs['rr'][1:]} at {card.fs:g} Hz); one core "
        f"(cpu {cpu}), {platform.processor() or platform.machine()}; peers: {', '.join(peers)}"
    )
    if eager is None:
        print("torch eager: skipped (no train extra, or no ecg-beats.pt: run vigil train ecg-beats)")
    res: dict = {"cpu": cpu, "batches": {}}
    print(f"{'batch':>6} " + " ".join(f"{k + ' ms/call':>15}" for k in peers)
          + f" {'INT8 x':>7} {'torch/FP32':>11} {'INT8 beats/s':>13}")  # fmt: skip
    for b in BATCHES:
        t = round_robin(peers, tile(x, b), args.seconds)
        row = {k: round(v * 1e3, 4) for k, v in t.items()}
        row["int8_speedup_vs_fp32"] = round(t["fp32"] / t["int8"], 3)
        if "torch" in t:
            row["torch_over_fp32"] = round(t["torch"] / t["fp32"], 3)
        res["batches"][b] = row
        print(f"{b:>6} " + " ".join(f"{v * 1e3:>15.4f}" for v in t.values())
              + f" {row['int8_speedup_vs_fp32']:>7.2f} {row.get('torch_over_fp32', float('nan')):>11.2f}"
              f" {b / t['int8']:>13.0f}")  # fmt: skip
    lat = _latency({p: peers[p] for p in ("int8", "fp32")}, x, args.runs)
    for p, (p50, p99) in lat.items():
        res[f"{p}_single"] = {"p50_ms": round(p50, 4), "p99_ms": round(p99, 4)}
        print(f"single window {p}: p50 {p50:.3f} ms, p99 {p99:.3f} ms ({args.runs} calls)")

    levels = {
        f"{p} {lv}": ort_peer(paths[p], lv) for p in ("int8", "fp32") for lv in ("basic", "extended", "all")
    }
    if "int8-tensorrt" in card.artifacts:
        levels["int8-tensorrt all"] = ort_peer(verified_artifact(card, folder, "int8-tensorrt"))
    t = round_robin(levels, tile(x, 1024), args.seconds)
    res["variants_batch1024_ms"] = {k: round(v * 1e3, 4) for k, v in t.items()}
    print("batch 1024 by ONNX Runtime graph optimisation level (ms/call, FP32-all / variant):")
    for k, v in t.items():
        print(f"  {k:<17} {v * 1e3:9.3f}  x{t['fp32 all'] / v:5.2f}")

    for pooled in (True, False):
        n, cpu_s = _pipeline_rate(lead, fs, Path(args.model), pooled)
        key, what = ("pipeline", "pooled") if pooled else ("pipeline_without_pooling", "no pooling")
        res[key] = {"beats": n, "cpu_s": round(cpu_s, 3), "beats_per_s": round(n / cpu_s)}
        print(f"whole chain (detector + beat windows + INT8, {what}, 1-s chunks) on {len(lead) / fs:.0f} s "
              f"of ECG: {n} beats in {cpu_s:.2f} CPU s = {n / cpu_s:.0f} beats/s per core "
              f"({len(lead) / fs / cpu_s:.0f}x real time)")  # fmt: skip

    return conclude(res, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
