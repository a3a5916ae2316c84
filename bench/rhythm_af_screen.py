#!/usr/bin/env python
"""AF screening from RR intervals on MIT-BIH: how well COSEn separates AF from non-AF windows.

For each record, the reference beat annotations give the beat positions, and the rhythm
annotations (``aux_note`` of ``+`` annotations: ``(AFIB``, ``(N``, ``(B``, ...) give the rhythm in
force at every beat. The RR interval ending at a beat takes that beat's rhythm. Windows of
``--window`` RR intervals (non-overlapping unless ``--stride`` says otherwise) are AF when every
interval is in an ``--af-labels`` rhythm, non-AF when none is, and left out when mixed. Each window
is scored with :func:`vigil.kernels.rhythm.rhythm_series` (COSEn of the window ending at its last
beat); AUC is the Mann-Whitney statistic, sensitivity/specificity are at ``--threshold``.

Data: ``--data``, else ``$VIGIL_DATA``, else ``../shared/data`` relative to the repository root,
with the records under ``mitdb/``.

Examples::

    .venv/bin/python bench/rhythm_af_screen.py
    .venv/bin/python bench/rhythm_af_screen.py --stride 10 --threshold -1.0 --per-record
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from bench_data import data_root

from vigil.kernels.beat_match import BEAT_SYMBOLS
from vigil.kernels.rhythm import AF_COSEN_THRESHOLD, rhythm_series


def load(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Reference beats (int64) and the rhythm label of each beat, from ``path``.atr."""
    import wfdb

    ann = wfdb.rdann(str(path), "atr")
    samples = np.asarray(ann.sample, dtype=np.int64)
    symbols = np.asarray(ann.symbol)
    aux = [a.strip("\x00 ") for a in ann.aux_note]
    rhythm, current = [], ""
    beats = []
    for s, sym, note in zip(samples, symbols, aux, strict=True):
        if note.startswith("("):
            current = note[1:]
        if sym in BEAT_SYMBOLS:
            beats.append(s)
            rhythm.append(current)
    return np.asarray(beats, dtype=np.int64), np.asarray(rhythm), float(ann.fs)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n1 n0), ties counted one half)."""
    from scipy.stats import rankdata

    r = rankdata(scores)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="root holding mitdb/ (default $VIGIL_DATA or ../shared/data)")
    p.add_argument("--window", type=int, default=60, help="RR intervals per window (60)")
    p.add_argument("--stride", type=int, default=None, help="beats between windows (= window)")
    p.add_argument("--threshold", type=float, default=AF_COSEN_THRESHOLD, help="COSEn cut-off")
    p.add_argument("--af-labels", default="AFIB", help="comma-separated AF rhythm labels")
    p.add_argument("--per-record", action="store_true", help="print each record's windows")
    a = p.parse_args(argv)
    root = data_root(a.data) / "mitdb"
    records = sorted({f.stem for f in root.glob("*.atr")})
    if not records:
        print(f"no MIT-BIH annotations under {root}", file=sys.stderr)
        return 1
    af_labels = set(a.af_labels.split(","))
    stride = a.stride or a.window
    scores, labels, names = [], [], []
    n_mixed = 0
    for rec in records:
        beats, rhythm, fs = load(root / rec)
        series = rhythm_series(beats, fs, window_beats=a.window)
        is_af = np.isin(rhythm[1:], list(af_labels))  # rhythm of each RR interval
        for end in range(a.window - 1, len(series), stride):
            frac = is_af[end - a.window + 1 : end + 1].mean()
            if 0.0 < frac < 1.0:
                n_mixed += 1
                continue
            scores.append(series.cosen[end])
            labels.append(frac == 1.0)
            names.append(rec)
    s, y, names = np.asarray(scores), np.asarray(labels), np.asarray(names)
    pred = s > a.threshold
    tp, fn = int((pred & y).sum()), int((~pred & y).sum())
    tn, fp = int((~pred & ~y).sum()), int((pred & ~y).sum())
    print(f"records: {len(records)} ({', '.join(records)})")
    af_recs = ", ".join(sorted(set(names[y].tolist())))
    print(
        f"windows of {a.window} RR, stride {stride}: {len(s)} scored "
        f"({int(y.sum())} AF in {af_recs}, {int((~y).sum())} non-AF), "
        f"{n_mixed} mixed left out"
    )
    if y.all() or not y.any():
        print("need both AF and non-AF windows to score", file=sys.stderr)
        return 1
    print(f"COSEn AF median {np.median(s[y]):.3f}, non-AF median {np.median(s[~y]):.3f}")
    print(f"AUC {auc(s, y):.3f}")
    print(
        f"threshold {a.threshold:g}: sensitivity {tp / (tp + fn):.3f} ({tp}/{tp + fn}), "
        f"specificity {tn / (tn + fp):.3f} ({tn}/{tn + fp})"
    )
    flagged = {r: int(((names == r) & pred & ~y).sum()) for r in records}
    worst = sorted(((v, r) for r, v in flagged.items() if v), reverse=True)
    print("false positives by record: " + (", ".join(f"{r} {v}" for v, r in worst) or "none"))
    if a.per_record:
        for r in records:
            m = names == r
            print(
                f"  {r}: {int(m.sum()):4d} windows, AF {int((m & y).sum()):4d}, "
                f"flagged {int((m & pred).sum()):4d}, COSEn median {np.median(s[m]):.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
