#!/usr/bin/env python
"""Vigil frame v1 codec speed on one core: ``protocol.decode``, ``protocol.encode`` and COBS streams.

Frames: the typical frame, 32 samples x 8 channels of int24 (768 payload bytes, 874 on the wire),
``--frames`` distinct ones with random samples, so the timings are not of one cached buffer.

(a) ``protocol.decode`` of each frame: payload MB/s (floor 50 MB/s, PASS/FAIL) and frames/s;
(b) ``protocol.encode`` of each decoded :class:`Frame`;
(c) ``cobs.CobsStream.feed`` of the COBS-encoded frames in ``--chunk``-byte reads (wire MB/s);
(d) (c) followed by ``decode`` of each frame it yields: the whole receive path of a serial link.

Each round times one pass over all frames; the tables give the best and the median of
``--rounds`` rounds after a warm-up, with the garbage collector off and the process pinned to one CPU.
MB is 10**6 bytes.

Example::

    .venv/bin/python bench/decode.py --rounds 9 --json decode.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vigil.firmware_bridge import cobs, protocol
from vigil.firmware_bridge.protocol import ChannelKind, SampleFormat

N_SAMPLES, N_CHANNELS, FORMAT = 32, 8, SampleFormat.INT24
FLOOR_MBPS = 50.0


def typical_frames(n: int, seed: int = 0) -> list[bytes]:
    """``n`` encoded typical frames of one stream (consecutive sequence numbers, random samples)."""
    rng = np.random.default_rng(seed)
    kinds = (ChannelKind.ECG,) * 3 + (ChannelKind.EEG,) * 3 + (ChannelKind.EMG, ChannelKind.RESP)
    out = []
    for i in range(n):
        raw = rng.integers(-(1 << 23), 1 << 23, (N_SAMPLES, N_CHANNELS)).astype(np.int32)
        f = protocol.make_frame(
            device_id=0xA1B2C3D4,
            sequence=i,
            timestamp_us=1_700_000_000_000_000 + i * 64_000,
            sample_rate=500.0,
            raw=raw,
            kinds=kinds,
            sample_format=FORMAT,
            scale=0.02235174,
            stream_id=1,
        )
        out.append(protocol.encode(f))
    return out


def time_rounds(fn: Callable[[], object], rounds: int) -> list[float]:
    """Seconds per call of ``fn`` for each of ``rounds`` rounds, after one warm-up call; GC off."""
    fn()
    times = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return times


def pin_one_cpu(cpu: int | None) -> str:
    """Pin this process to one CPU (the first allowed one by default); returns a description."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[0] if cpu is None else cpu
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def measure(frames: list[bytes], rounds: int, chunk: int) -> list[dict]:
    """Time (a)-(d); one record per row."""
    decoded = [protocol.decode(b) for b in frames]
    wire = b"".join(cobs.encode(b) for b in frames)
    reads = [wire[i : i + chunk] for i in range(0, len(wire), chunk)]
    payload = N_SAMPLES * N_CHANNELS * FORMAT.width
    n, size = len(frames), len(frames[0])
    decode, encode = protocol.decode, protocol.encode

    def dec() -> None:
        for b in frames:
            decode(b)

    def enc() -> None:
        for f in decoded:
            encode(f)

    def stream() -> None:
        s = cobs.CobsStream()
        got = 0
        for r in reads:
            got += len(s.feed(r))
        assert got == n

    def stream_decode() -> None:
        s = cobs.CobsStream()
        for r in reads:
            for b in s.feed(r):
                decode(b)

    # sanity: the paths under test give the right answers
    assert all(protocol.encode(f) == b for f, b in zip(decoded, frames, strict=True))
    assert [f.sequence for f in decoded] == list(range(n))
    s = cobs.CobsStream()
    assert [m for r in reads for m in s.feed(r)] == frames

    rows = [
        ("(a) decode", dec, payload, "payload", FLOOR_MBPS),
        ("(b) encode", enc, payload, "payload", None),
        (f"(c) CobsStream.feed, {chunk} B reads", stream, len(wire) / n, "wire", None),
        ("(d) CobsStream.feed + decode", stream_decode, payload, "payload", None),
    ]
    recs = []
    for label, fn, nbytes, unit, floor in rows:
        ts = time_rounds(fn, rounds)
        best, med = min(ts) / n, statistics.median(ts) / n
        mbps, mbps_med = nbytes / best / 1e6, nbytes / med / 1e6
        recs.append(
            {
                "case": label,
                "per_frame_s": best,
                "per_frame_median_s": med,
                "frames_per_s": 1 / best,
                "mb_per_s": mbps,
                "mb_per_s_median": mbps_med,
                "bytes_per_frame": nbytes,
                "unit": unit,
                "frame_bytes": size,
                "floor_mb_per_s": floor,
                "pass": None if floor is None else mbps >= floor,
                "rounds_s": ts,
            }
        )
    return recs


def fmt_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain fixed-width table."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=2000, help="distinct frames per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds (default 9)")
    ap.add_argument("--chunk", type=int, default=4096, help="bytes per CobsStream.feed call (default 4096)")
    ap.add_argument("--cpu", type=int, help="CPU to pin to (default: the first allowed one)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the decode floor is missed")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    args = parse_args(argv)
    pinned = "not pinned (--no-pin)" if args.no_pin else pin_one_cpu(args.cpu)
    frames = typical_frames(args.frames)
    recs = measure(frames, args.rounds, args.chunk)

    command = shlex.join([sys.executable, *sys.argv])
    pkgs = ("vigil", "numpy", "numba")
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in pkgs)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print("# bench/decode.py - Vigil frame v1 decode / encode / COBS stream speed, one core")
    print(f"command : {command}")
    print(
        f"frames  : {args.frames} typical frames, {N_SAMPLES} samples x {N_CHANNELS} ch int24, "
        f"{recs[0]['bytes_per_frame']} payload / {recs[0]['frame_bytes']} wire bytes each"
    )
    print(f"versions: python {platform.python_version()}, {versions}")
    print(f"machine : {platform.machine()}, {os.cpu_count()} CPUs, load avg {load}, {pinned}")
    print(
        f"timing  : best and median of {args.rounds} rounds (one pass over all frames), warm-up first, GC off"
    )
    print()
    rows = []
    for r in recs:
        verdict = "" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        floor = "" if r["floor_mb_per_s"] is None else f">={r['floor_mb_per_s']:g}"
        rows.append(
            [
                r["case"],
                f"{r['per_frame_s'] * 1e6:.2f} us",
                f"{r['per_frame_median_s'] * 1e6:.2f} us",
                f"{r['frames_per_s']:,.0f}",
                f"{r['mb_per_s']:.1f} ({r['unit']})",
                f"{r['mb_per_s_median']:.1f}",
                floor,
                verdict,
            ]
        )
    print(fmt_table(["case", "best/frame", "median", "frames/s", "MB/s best", "median", "floor", ""], rows))
    ok = recs[0]["pass"]
    print()
    verdict = "PASS" if ok else "FAIL"
    print(f"decode floor {FLOOR_MBPS:g} MB/s payload: {verdict} ({recs[0]['mb_per_s']:.1f} MB/s)")
    if args.json:
        doc = {"command": command, "frames": args.frames, "rounds": args.rounds, "chunk": args.chunk,
               "pinned": pinned, "versions": versions, "results": recs}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"json    : {args.json}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
