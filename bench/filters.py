#!/usr/bin/env python
"""Streaming filter speed: Vigil's SOSFilter / sosfilt vs scipy.signal.sosfilt, side by side.

Design: ``filters.design_default('ecg', 500)``. Input: a real MIT-BIH lead tiled to the channel
count (or random data with ``--random``); it is about speed, so no resampling.

(a) a live stream in 10 ms chunks (5 samples at 500 Hz), 8 and 64 channels: time per call;
(b) one-minute blocks (30000 samples) of 64 channels: time per block.

Each round runs every implementation once, in turn (so load drift hits all alike); tables give the
best and the median round, ratios are ``scipy_time / vigil_time`` of the best rounds. Floors: >= 10x
for (a), >= 2x for (b).

Example::

    .venv/bin/python bench/filters.py --rounds 9 --json filters.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_data import data_root
from scipy import signal

from vigil.kernels import filters

FS = 500.0
CHUNK = 5  # 10 ms at 500 Hz
BLOCK = 30_000  # one minute at 500 Hz
FLOOR_STREAM = 10.0
FLOOR_BLOCK = 2.0


def load_signal(args: argparse.Namespace, n: int) -> tuple[np.ndarray, str]:
    """``n`` samples of one ECG lead (mV) from MIT-BIH, or random data; returns (x, description)."""
    if not args.random:
        path = data_root(args.data) / "mitdb" / args.record
        if path.with_suffix(".hea").exists():
            import wfdb

            rec = wfdb.rdrecord(str(path), channels=[0], sampto=n)
            x = np.ascontiguousarray(rec.p_signal[:, 0])
            lead = rec.sig_name[0]
            return x, f"MIT-BIH {args.record} {lead} (mV, {rec.fs:g} Hz data run as 500 Hz)"
        print(f"note: {path}.hea not found, using random data", file=sys.stderr)
    rng = np.random.default_rng(0)
    return rng.standard_normal(n), "random normal (seed 0)"


def tile(x: np.ndarray, n: int, nch: int, dtype: str) -> np.ndarray:
    """First ``n`` samples of ``x`` repeated over ``nch`` channels, C-contiguous [n, nch]."""
    return np.ascontiguousarray(np.tile(x[:n, None], (1, nch)), dtype=dtype)


Runner = Callable[[], None]


def stream_runners(sos: np.ndarray, x: np.ndarray, step: int, keep: bool = False) -> dict[str, Runner]:
    """One pass over ``x`` in chunks of ``step`` for each implementation (fresh state per pass).

    By default each output is dropped at once, as a live consumer would. With ``keep`` every
    output of the pass stays alive, so each call must get fresh memory (page faults): that mostly
    times the allocator.
    """
    chunks = [x[i : i + step] for i in range(0, len(x), step)]
    nsec, nch = sos.shape[0], x.shape[1]
    kept: list[np.ndarray] = []
    hold = kept.append if keep else (lambda y: None)

    def scipy_pass() -> None:
        kept.clear()
        zi = np.zeros((nsec, 2, nch))
        for c in chunks:
            y, zi = signal.sosfilt(sos, c, axis=0, zi=zi)
            hold(y)
            del y  # not alive during the next call

    def vigil_sosfilt_pass() -> None:
        kept.clear()
        zi = np.zeros((nsec, 2, nch))
        for c in chunks:
            y, zi = filters.sosfilt(sos, c, zi)
            hold(y)
            del y

    def vigil_filter_pass() -> None:
        kept.clear()
        f = filters.SOSFilter(sos, nch, init="zeros")
        for c in chunks:
            hold(f.process(c))

    return {
        "scipy.signal.sosfilt": scipy_pass,
        "vigil SOSFilter.process": vigil_filter_pass,
        "vigil sosfilt": vigil_sosfilt_pass,
    }


def check_equal(sos: np.ndarray, x: np.ndarray, step: int) -> dict[str, float]:
    """Max |vigil - scipy| over a whole chunked pass, per Vigil implementation."""
    nsec, nch = sos.shape[0], x.shape[1]
    chunks = [x[i : i + step] for i in range(0, len(x), step)]
    zi = np.zeros((nsec, 2, nch))
    ref = []
    for c in chunks:
        y, zi = signal.sosfilt(sos, c, axis=0, zi=zi)
        ref.append(y)
    r = np.concatenate(ref)
    f = filters.SOSFilter(sos, nch, init="zeros")
    a = np.concatenate([f.process(c) for c in chunks])
    zi = np.zeros((nsec, 2, nch))
    b = []
    for c in chunks:
        y, zi = filters.sosfilt(sos, c, zi)
        b.append(y)
    scale = float(np.max(np.abs(r))) or 1.0
    return {
        "vigil SOSFilter.process": float(np.max(np.abs(a - r))) / scale,
        "vigil sosfilt": float(np.max(np.abs(np.concatenate(b) - r))) / scale,
    }


def measure(runners: dict[str, Runner], rounds: int) -> dict[str, list[float]]:
    """Warm each runner, then ``rounds`` rounds running each once in turn (GC off while timing)."""
    for fn in runners.values():
        fn()
    gc.collect()
    gc.freeze()  # survivors out of the collector; rounds then run with the GC off
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            gc.disable()
            try:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
            finally:
                gc.enable()
    return times


def fmt_table(headers: list[str], rows: list[list[str]], title: str) -> str:
    """Plain-text table, first column left-aligned."""
    w = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(cells)
    ).rstrip()
    return "\n".join([title, line(headers), "  ".join("-" * x for x in w), *map(line, rows)])


def fmt_us(t: float) -> str:
    """Seconds as microseconds (or ms when large)."""
    return f"{t * 1e6:.2f} us" if t < 1e-3 else f"{t * 1e3:.3f} ms"


def trunc2(v: float) -> str:
    """Two decimals, rounded down, so a ratio just under a floor never prints as the floor."""
    return f"{math.floor(v * 100) / 100:.2f}"


def section(
    label: str, times: dict[str, list[float]], per: int, floor: float, errs: dict[str, float]
) -> tuple[list[list[str]], list[dict]]:
    """Rows (and JSON records) for one configuration; ``per`` = calls per timed pass."""
    ref = min(times["scipy.signal.sosfilt"]) / per
    ref_med = statistics.median(times["scipy.signal.sosfilt"]) / per
    rows, recs = [], []
    for name, ts in times.items():
        best, med = min(ts) / per, statistics.median(ts) / per
        is_vigil = name.startswith("vigil")
        ratio, ratio_med = ref / best, ref_med / med
        verdict = ("PASS" if ratio >= floor else "FAIL") if is_vigil else ""
        rows.append(
            [
                label,
                name,
                fmt_us(best),
                fmt_us(med),
                f"{trunc2(ratio)}x" if is_vigil else "1 (ref)",
                f"{trunc2(ratio_med)}x" if is_vigil else "",
                f">={floor:g}x" if is_vigil else "",
                verdict,
                f"{errs[name]:.1e}" if name in errs else "",
            ]
        )
        recs.append(
            {
                "config": label,
                "impl": name,
                "best_s": best,
                "median_s": med,
                "ratio_best": ratio if is_vigil else None,
                "ratio_median": ratio_med if is_vigil else None,
                "floor": floor if is_vigil else None,
                "pass": verdict == "PASS" if is_vigil else None,
                "max_rel_diff": errs.get(name),
                "rounds_s": ts,
            }
        )
    return rows, recs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        help="data directory holding mitdb/ (default: $VIGIL_DATA, else "
        "../shared/data next to the repository)",
    )
    ap.add_argument("--record", default="100", help="MIT-BIH record to tile (default 100)")
    ap.add_argument("--random", action="store_true", help="use random data instead of ECG")
    ap.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help="sample dtype (default float64)"
    )
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds (default 9)")
    ap.add_argument(
        "--chunks", type=int, default=2000, help="10 ms chunks per timed pass in (a) (default 2000 = 20 s)"
    )
    ap.add_argument(
        "--blocks", type=int, default=2, help="one-minute blocks per timed pass in (b) (default 2)"
    )
    ap.add_argument(
        "--keep-outputs",
        action="store_true",
        help="keep every output of a pass alive (each call then pays for fresh memory)",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 when a floor is missed")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    args = parse_args(argv)
    sos = filters.design_default("ecg", FS)
    n_a = args.chunks * CHUNK
    n_b = args.blocks * BLOCK
    x, desc = load_signal(args, max(n_a, n_b))
    if len(x) < max(n_a, n_b):
        x = np.resize(x, max(n_a, n_b))

    rows, recs = [], []
    for nch in (8, 64):
        xa = tile(x, n_a, nch, args.dtype)
        errs = check_equal(sos, xa[: 200 * CHUNK], CHUNK)
        times = measure(stream_runners(sos, xa, CHUNK, args.keep_outputs), args.rounds)
        r, j = section(f"(a) {nch} ch x {CHUNK}", times, args.chunks, FLOOR_STREAM, errs)
        rows += r
        recs += j
    xb = tile(x, n_b, 64, args.dtype)
    errs = check_equal(sos, xb[:BLOCK], BLOCK)
    times = measure(stream_runners(sos, xb, BLOCK, args.keep_outputs), args.rounds)
    r, j = section(f"(b) 64 ch x {BLOCK}", times, args.blocks, FLOOR_BLOCK, errs)
    rows += r
    recs += j

    pkgs = ("vigil", "numpy", "numba", "scipy")
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in pkgs)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("# bench/filters.py - streaming SOS filter speed, Vigil vs scipy.signal.sosfilt")
    print(f"command : {shlex.join([sys.executable, *sys.argv])}")
    print(f"design  : filters.design_default('ecg', {FS:g}) -> {sos.shape[0]} sections")
    print(f"signal  : {desc}, {args.dtype}, tiled to the channel count")
    print(f"versions: python {platform.python_version()}, {versions}")
    print(f"machine : {platform.machine()}, {os.cpu_count()} CPUs, load avg {load}")
    print(
        f"timing  : {args.rounds} rounds after a warm-up, implementations interleaved; (a) one "
        f"round = {args.chunks} chunks, (b) one round = {args.blocks} blocks; GC off; outputs "
        + ("kept alive (--keep-outputs)" if args.keep_outputs else "dropped after each call")
    )
    print()
    print(
        fmt_table(
            [
                "config",
                "implementation",
                "best/call",
                "median/call",
                "scipy/vigil",
                "(median)",
                "floor",
                "",
                "max rel diff",
            ],
            rows,
            "Time per call (best and median round); ratio = scipy time / Vigil time",
        )
    )
    fails = [f"{r['config']} {r['impl']}" for r in recs if r["pass"] is False]
    print()
    print("all floors met" if not fails else f"FLOOR MISSED: {'; '.join(fails)}")
    if args.json:
        doc = {
            "command": shlex.join([sys.executable, *sys.argv]),
            "signal": desc,
            "dtype": args.dtype,
            "keep_outputs": args.keep_outputs,
            "sos": sos.tolist(),
            "rounds": args.rounds,
            "results": recs,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"json    : {args.json}")
    return 1 if fails and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
