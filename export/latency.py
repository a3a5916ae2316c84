"""Single-window latency of a shipped network, for its model card.

What a card's ``latency`` says: ONNX Runtime on the CPU, one thread, batch 1, through the same
:func:`vigil.export.runtime.load_model` the monitor uses, FP32 and INT8 measured in alternating
blocks so that load from other processes hits both alike.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def measure_latency(
    stem: Path, one: dict[str, np.ndarray], calls: int = 2000, blocks: int = 5
) -> dict[str, Any]:
    """Single-window latency of the shipped artifacts (``load_model``, CPU, one thread), in ms.

    ``blocks`` blocks of ``calls`` calls, FP32 and INT8 alternating block by block (after a warm-up):
    p50 over all calls, p99 per block and its median over the blocks (``p99_ms``) and worst block,
    and the share of calls over 1 ms: on a shared machine a call that meets another process's
    scheduler slice waits ~4 ms, and once that happens to more than 1 % of calls it *is* the p99.
    """
    from .runtime import load_model

    out: dict[str, Any] = {
        "threads": 1,
        "provider": "CPUExecutionProvider",
        "calls": calls * blocks,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine inflates p99
    }
    models = {p: load_model(stem, precision=p, providers="cpu", threads=1) for p in ("fp32", "int8")}
    times: dict[str, list[np.ndarray]] = {p: [] for p in models}
    for m in models.values():
        for _ in range(100):
            m.run(one)
    for _ in range(blocks):
        for p, m in models.items():
            t = np.empty(calls)
            for i in range(calls):
                t0 = time.perf_counter()
                m.run(one)
                t[i] = time.perf_counter() - t0
            times[p].append(t)
    for p, ts in times.items():
        p99 = [float(np.quantile(t, 0.99)) for t in ts]
        every = np.concatenate(ts)
        out[p] = {
            "p50_ms": round(float(np.median(every)) * 1e3, 4),
            "p99_ms": round(float(np.median(p99)) * 1e3, 4),
            "p99_worst_block_ms": round(max(p99) * 1e3, 4),
            # calls that waited for the core (a scheduler slice of another process is ~4 ms)
            "share_over_1ms": round(float(np.mean(every > 1e-3)), 5),
        }
    return out
