#!/usr/bin/env python
"""Start-up cost of Vigil's kernels in a fresh interpreter, with a warm Numba cache.

Each run is a new subprocess that times, in order: ``import vigil.kernels.filters,
vigil.kernels.qrs``; ``filters.design_default('ecg', fs)``; the first
``filters.sosfilt`` call and the first ``qrs.detect`` call on 10 s of ECG. One unmeasured run fills
the Numba cache first; the table gives the median (and min / max) over ``--runs`` runs. With
``--cold`` one more run uses an empty private ``NUMBA_CACHE_DIR`` to show the compile cost.

Also reported: state bytes per channel of ``SOSFilter`` and of ``QRSDetector`` (``state_bytes``).

Example::

    .venv/bin/python bench/startup.py --runs 5 --cold
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_data import data_root

CHILD = r"""
import time
t0 = time.perf_counter()
import vigil.kernels.filters as filters
import vigil.kernels.qrs as qrs
t1 = time.perf_counter()
import json, resource, sys
import numpy as np
x = np.load(sys.argv[1])
fs = float(sys.argv[2])
t2 = time.perf_counter()
sos = filters.design_default("ecg", fs)
t3 = time.perf_counter()
y = filters.sosfilt(sos, x)
t4 = time.perf_counter()
beats = qrs.detect(x, fs)
t5 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "design": t3 - t2, "sosfilt": t4 - t3, "detect": t5 - t4,
                  "n_beats": int(len(beats)),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

PHASES = (
    ("import", "import vigil.kernels.filters, vigil.kernels.qrs"),
    ("design", "filters.design_default('ecg', fs) (numpy design)"),
    ("sosfilt", "first filters.sosfilt(sos, x) on 10 s"),
    ("detect", "first qrs.detect(x, fs) on 10 s"),
    ("in_process", "sum of the above"),
    ("process", "whole subprocess (interpreter start to exit)"),
)


def ten_seconds(args: argparse.Namespace) -> tuple[np.ndarray, float, str]:
    """10 s of MIT-BIH (mV) or, if absent, a synthetic 1 Hz pulse train at 360 Hz."""
    path = data_root(args.data) / "mitdb" / args.record
    if path.with_suffix(".hea").exists():
        import wfdb

        hdr = wfdb.rdheader(str(path))
        rec = wfdb.rdrecord(str(path), channels=[0], sampto=int(10 * hdr.fs))
        return np.ascontiguousarray(rec.p_signal[:, 0]), float(rec.fs), f"MIT-BIH {args.record}"
    fs = 360.0
    t = np.arange(int(10 * fs)) / fs
    x = np.exp(-(((t % 1.0) - 0.5) ** 2) / (2 * 0.01**2))
    return x, fs, "synthetic pulse train (mitdb not found)"


def run_child(npy: Path, fs: float, env: dict[str, str]) -> dict[str, float]:
    """One fresh subprocess; returns its phase times (s) plus the whole-process wall time."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(npy), repr(fs)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"child failed (rc {p.returncode}):\n{p.stderr}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["in_process"] = out["import"] + out["design"] + out["sosfilt"] + out["detect"]
    out["process"] = wall
    return out


def state_sizes() -> list[tuple[str, str]]:
    """State bytes per channel of SOSFilter and QRSDetector."""
    from vigil.kernels import filters, qrs

    rows = []
    for label, sos in (
        ("ecg @500 Hz", filters.design_default("ecg", 500)),
        ("eeg @250 Hz", filters.design_default("eeg", 250)),
        ("emg @1000 Hz + 50 Hz notch", filters.design_default("emg", 1000, mains=50)),
    ):
        f = filters.SOSFilter(sos, 8)
        rows.append((f"SOSFilter {label} ({sos.shape[0]} sections)", f"{f.state_bytes} B"))
    for fs in (250.0, 360.0, 500.0):
        d = qrs.QRSDetector(fs)
        sb = getattr(d, "state_bytes", None)
        rows.append(
            (f"QRSDetector @{fs:g} Hz (one lead)", f"{sb} B" if sb is not None else "n/a (no state_bytes)")
        )
    return rows


def fmt_table(headers: list[str], rows: list[list[str]], title: str) -> str:
    """Plain-text table, first column left-aligned."""
    w = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells)
    ).rstrip()
    return "\n".join([title, line(headers), "  ".join("-" * x for x in w), *map(line, rows)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        help="data directory holding mitdb/ (default: $VIGIL_DATA, else "
        "../shared/data next to the repository)",
    )
    ap.add_argument("--record", default="100", help="MIT-BIH record for the 10 s (default 100)")
    ap.add_argument("--runs", type=int, default=5, help="measured subprocesses (default 5)")
    ap.add_argument(
        "--cold", action="store_true", help="also time one run with an empty private Numba cache (compiles)"
    )
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    args = parse_args(argv)
    x, fs, desc = ten_seconds(args)
    env = dict(os.environ)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-startup-") as tmp:
        npy = Path(tmp) / "x.npy"
        np.save(npy, x)
        cold = None
        if args.cold:
            cold = run_child(npy, fs, {**env, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba")})
        run_child(npy, fs, env)  # fill the (normal) Numba cache
        runs = [run_child(npy, fs, env) for _ in range(max(1, args.runs))]

    pkgs = ("vigil", "numpy", "numba", "scipy")
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in pkgs)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("# bench/startup.py - start-up cost of vigil.kernels in a fresh interpreter")
    print(f"command : {shlex.join([sys.executable, *sys.argv])}")
    print(f"signal  : 10 s of {desc} at {fs:g} Hz ({runs[0]['n_beats']} beats detected)")
    print(f"versions: python {platform.python_version()}, {versions}")
    print(f"machine : {platform.machine()}, {os.cpu_count()} CPUs, load avg {load}")
    print(f"runs    : 1 to fill the Numba cache, then {len(runs)} measured fresh subprocesses")
    print()
    headers = ["phase", "median ms", "min ms", "max ms"] + (["cold cache ms"] if cold else [])
    rows = []
    for key, label in PHASES:
        ts = [r[key] * 1e3 for r in runs]
        row = [label, f"{statistics.median(ts):.1f}", f"{min(ts):.1f}", f"{max(ts):.1f}"]
        if cold:
            row.append(f"{cold[key] * 1e3:.1f}")
        rows.append(row)
        results[key] = {
            "median_ms": statistics.median(ts),
            "runs_ms": ts,
            "cold_ms": cold[key] * 1e3 if cold else None,
        }
    rss = statistics.median(r["maxrss_kb"] for r in runs) / 1024
    print(fmt_table(headers, rows, "Start-up with a warm Numba cache"))
    print(f"peak RSS of the child (median): {rss:.1f} MiB")
    print()
    sizes = state_sizes()
    print(
        fmt_table(
            ["streaming object", "state bytes / channel"],
            [list(r) for r in sizes],
            "Streaming state carried between chunks",
        )
    )
    if args.json:
        doc = {
            "command": shlex.join([sys.executable, *sys.argv]),
            "signal": desc,
            "fs": fs,
            "phases": results,
            "maxrss_mib": rss,
            "state_bytes": dict(sizes),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"json    : {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
