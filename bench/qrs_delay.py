#!/usr/bin/env python
"""Detection delay of the streaming QRS detector on MIT-BIH: how late each beat is reported.

Every record is streamed through :class:`vigil.kernels.qrs.QRSDetector` in chunks of ``--chunk-ms``
(10 ms default, a typical wearable packet). A beat's delay is the time from its fiducial sample to
the end of the chunk whose ``process`` call returned it, so the figure includes the packet wait.
Prints per-record and pooled percentiles, the share reported beyond ``max_delay_s`` (beats found by
search-back) and the largest delay.

    .venv/bin/python bench/qrs_delay.py [--data DIR] [--records 100,208] [--chunk-ms 10]
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_data import data_root, load_records, record_names

from vigil.kernels.qrs import QRSDetector


def delays(x: np.ndarray, fs: float, chunk: int) -> tuple[np.ndarray, float]:
    """Delay (s) of every beat when ``x`` is streamed in ``chunk``-sample pieces; and max_delay_s."""
    det = QRSDetector(fs)
    out = []
    for start in range(0, len(x), chunk):
        end = min(start + chunk, len(x))
        beats = det.process(x[start:end])
        out.append((end - beats) / fs)
    return np.concatenate(out), det.max_delay_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder holding mitdb/ (default: $VIGIL_DATA, else ../shared/data)")
    ap.add_argument("--records", help="comma list of records (default: all)")
    ap.add_argument("--channel", type=int, default=0)
    ap.add_argument("--chunk-ms", type=float, default=10.0)
    args = ap.parse_args()
    mitdb = data_root(args.data) / "mitdb"
    records = load_records(mitdb, record_names(mitdb, args.records), args.channel)
    pooled = []
    print(f"{'record':<8}{'beats':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'late %':>8}")
    for rec in records:
        chunk = max(1, round(args.chunk_ms * rec.fs / 1000))
        d, bound = delays(rec.x, rec.fs, chunk)
        pooled.append(d)
        p50, p95, p99 = np.percentile(d, [50, 95, 99]) * 1000
        late = 100 * np.mean(d > bound + chunk / rec.fs)
        print(f"{rec.name:<8}{len(d):7d}{p50:9.0f}{p95:9.0f}{p99:9.0f}{d.max() * 1000:9.0f}{late:8.2f}")
    d = np.concatenate(pooled)
    p50, p95, p99 = np.percentile(d, [50, 95, 99]) * 1000
    late = 100 * np.mean(d > bound + chunk / rec.fs)
    print(f"{'all':<8}{len(d):7d}{p50:9.0f}{p95:9.0f}{p99:9.0f}{d.max() * 1000:9.0f}{late:8.2f}")
    print(
        f"\nmax_delay_s (envelope peak final; search-back excluded) = {bound * 1000:.0f} ms "
        f"+ {args.chunk_ms:g} ms packet; 'late' = beats reported after that (search-back)"
    )


if __name__ == "__main__":
    main()
