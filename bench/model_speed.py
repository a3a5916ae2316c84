"""Timing pieces the network speed benchmarks share (bench/beat_classifier.py,
bench/rhythm_classifier.py): real windows tiled to a batch, a one-thread ONNX Runtime peer, peers
timed in turns, and the issue's speed floors."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: INT8 at least this many times faster than FP32 at batch 1024, and single-window p99 (ms) at most.
FLOOR_INT8_SPEEDUP, FLOOR_P99_MS = 1.5, 1.0


def tile(x: dict[str, np.ndarray], n: int, offset: int = 0) -> dict[str, np.ndarray]:
    """``n`` rows of the windows ``x`` from row ``offset`` on, repeated as needed (contiguous)."""
    k = len(next(iter(x.values())))
    idx = (offset + np.arange(n)) % k
    return {key: np.ascontiguousarray(v[idx]) for key, v in x.items()}


def ort_peer(path: Path, level: str = "all") -> Callable[[dict], np.ndarray]:
    """ONNX Runtime on the CPU, one intra- and one inter-op thread, at graph optimisation ``level``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)[0]


def round_robin(peers: dict[str, Callable], feed: dict, seconds: float) -> dict[str, float]:
    """Median seconds per call of each peer, timed in turns for about ``seconds`` in all (at least
    5 calls each), so that load from other processes hits them alike."""
    for fn in peers.values():
        fn(feed)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in peers}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or min(len(v) for v in times.values()) < 5:
        for k, fn in peers.items():
            t0 = time.perf_counter()
            fn(feed)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def floors(res: dict) -> dict[str, bool]:
    """The issue's speed floors on ``res`` (``batches[1024]["int8_speedup_vs_fp32"]``,
    ``int8_single``/``fp32_single`` p99): printed, and returned for the JSON."""
    s = res["batches"][1024]["int8_speedup_vs_fp32"]
    p99 = max(res["int8_single"]["p99_ms"], res["fp32_single"]["p99_ms"])
    ok_s, ok_p = s >= FLOOR_INT8_SPEEDUP, p99 <= FLOOR_P99_MS
    print(
        f"floor INT8 >= {FLOOR_INT8_SPEEDUP:g}x FP32 at batch 1024: {'met' if ok_s else 'MISSED'} ({s:.2f}x)"
    )
    print(
        f"floor single-window p99 <= {FLOOR_P99_MS:g} ms: {'met' if ok_p else 'MISSED'} (worst {p99:.3f} ms)"
    )
    return {"int8_1.5x_at_1024": ok_s, "single_p99_le_1ms": ok_p}


def speed_args(description: str, model: Path, runs: int) -> argparse.ArgumentParser:
    """The options every network speed benchmark takes (``--model``, ``--runs``, ``--seconds``,
    ``--cpu``, ``--json``); a benchmark adds its own before parsing."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default=str(model), help="card or stem")
    ap.add_argument(
        "--runs", type=int, default=runs, help=f"single-window calls for p50/p99 (default {runs})"
    )
    ap.add_argument("--seconds", type=float, default=6.0, help="timing budget per batch size (default 6)")
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the first allowed)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return ap


def pin_to_one_core(cpu: int | None) -> int:
    """Pin this process to ``cpu`` (default: the first core it may use); returns the core."""
    core = cpu if cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def conclude(res: dict, json_path: str | None) -> int:
    """The end every speed benchmark shares: the floors' verdicts into ``res``, the load the run saw,
    ``res`` as JSON to ``json_path`` when given; the exit status."""
    res["floors"] = floors(res)
    print(f"load average during the run: {os.getloadavg()[0]:.2f} (machine has {os.cpu_count()} cores)")
    if json_path:
        Path(json_path).write_text(json.dumps(res, indent=2) + "\n")
    return 0
