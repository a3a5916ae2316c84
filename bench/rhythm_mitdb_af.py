#!/usr/bin/env python
"""How an ``ecg-rhythm`` recipe reads MIT-BIH, window by window: AF sensitivity and the rate of false
AF calls, against the reference rhythm annotations, for networks trained on every CinC record with
each ``--pretrain-epochs`` arm and ``--seeds`` (what ``vigil train`` ships, less the cross-validation),
and for ``--models`` folders (e.g. ``models/zoo``).

The AF alarm is driven by these calls, and MIT-BIH holds what CinC strips rarely show for long:
frequent PVCs and couplets (208), paced rhythm (102, 104, 107, 217), bigeminy, ventricular runs. A
recipe that scores higher on CinC but calls those AF costs the monitor false alarms. Every 10-s
window from the start of each record (lead 0, "rhythm-strip/1") is classified by the INT8 CPU artifact
(MinMax calibration, as the shipped card) and labelled AF when the reference rhythm at its centre is
``(AFIB`` or ``(AFL``. Records are grouped into the DS1 records that the MIT-BIH pretraining reads
and the others (record 100 of DS2 and the paced records), which no recipe has seen.

Each network trains in about 3 min on one core; ``--workers`` trains them side by side. Networks are
cached under ``--cache`` by (pretraining epochs, seed).

    .venv/bin/python bench/rhythm_mitdb_af.py --pretrain-epochs 0 10 --seeds 0 10 20 --workers 2 \
        --models models/zoo
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from bench_data import data_root
from rhythm_af_screen import load

from vigil.firmware_bridge.replay import read_wfdb
from vigil.kernels.rhythm_strip import StripParams, cut_windows, prepare_strip
from vigil.models import rhythm
from vigil.models.beats import DS1

AF = ("AFIB", "AFL")


def train_network(data: Path, cache: Path, pretrain_epochs: int, seed: int) -> Path:
    """``cache/pretrain<E>-seed<S>/ecg-rhythm.int8.onnx``, trained on every CinC record unless there."""
    cfg = dataclasses.replace(rhythm.Config(), pretrain_epochs=pretrain_epochs, teachers=())
    out = cache / f"pretrain{pretrain_epochs}-leads{''.join(map(str, cfg.pretext_leads))}-seed{seed}"
    if (out / f"{rhythm.NAME}.int8.onnx").is_file():
        return out
    records = rhythm.load_records(data / rhythm.DATASET, cfg.strip)
    pretext = rhythm.load_pretext(data, cfg) if pretrain_epochs else None
    model = rhythm.fit_model(cfg, records, seed, False, "", pretext)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / f"{rhythm.NAME}.fp32.onnx"
        _, _, int8s = rhythm.export_artifacts(model, cfg, records, fp32, "minmax", seed)
        int8s["int8"].replace(out / f"{rhythm.NAME}.int8.onnx")
    return out


def windows(mitdb: Path, name: str, params: StripParams) -> tuple[dict, np.ndarray]:
    """Network inputs of every 10-s window of ``name`` and whether the reference rhythm at its centre
    is AF."""
    rec = read_wfdb(mitdb / name, channels=[0], annotator=None)
    beats, rhythm_at_beat, fs = load(mitdb / name)
    strip = prepare_strip(rec.signal[:, 0], rec.fs, params)
    starts = np.arange(0, len(strip) - params.window + 1, params.window)
    centre = ((starts + params.window / 2) * fs / params.fs).astype(np.int64)
    beat = np.clip(np.searchsorted(beats, centre) - 1, 0, len(beats) - 1)
    w = cut_windows(strip, starts)
    return {"ecg": w.ecg, "rr": w.rr}, np.isin(rhythm_at_beat[beat], AF)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-epochs", type=int, nargs="*", default=[0, 10], help="one arm per value")
    p.add_argument("--seeds", type=int, nargs="*", default=[0], help="training seeds")
    p.add_argument("--models", type=Path, nargs="*", default=[], help="folders holding ecg-rhythm.int8.onnx")
    p.add_argument("--workers", type=int, default=1, help="networks trained side by side, one core each")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vigil" / "rhythm_final")
    p.add_argument("--data", help="root holding cinc2017_af/ and mitdb/ ($VIGIL_DATA or ../shared/data)")
    a = p.parse_args(argv)
    data = data_root(a.data)
    jobs = [(e, s) for e in a.pretrain_epochs for s in a.seeds]
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        trained = list(
            pool.map(train_network, [data] * len(jobs), [a.cache] * len(jobs), *zip(*jobs, strict=True))
        )
    folders = {f"pretrain {e:>2}, seed {s:>2}": d for (e, s), d in zip(jobs, trained, strict=True)}
    folders.update({str(m): m for m in a.models})
    mitdb = data / "mitdb"
    names = sorted(x.stem for x in mitdb.glob("*.hea"))
    counts = {(k, g): np.zeros(4, dtype=np.int64) for k in folders for g in ("DS1", "unseen")}
    per_record = {k: {} for k in folders}
    for name in names:
        x, ref = windows(mitdb, name, rhythm.Config().strip)
        group = "DS1" if name in DS1 else "unseen"
        for k, d in folders.items():
            label = rhythm.onnx_scores(d / f"{rhythm.NAME}.int8.onnx", x).argmax(1)
            called = label == rhythm.CLASSES.index("A")
            counts[k, group] += [np.sum(called & ref), np.sum(ref), np.sum(called & ~ref), np.sum(~ref)]
            per_record[k][name] = int(np.sum(called & ~ref))
    print(f"MIT-BIH, {len(names)} records, 10-s windows, INT8: AF window sensitivity and false AF calls")
    for k in folders:
        parts = []
        for g in ("DS1", "unseen"):
            tp, pos, fp, neg = counts[k, g]
            se, false_af = tp / max(1, pos), fp / max(1, neg)
            parts.append(f"{g}: Se {se:.3f} ({tp}/{pos}), false AF {false_af:.4f} ({fp}/{neg})")
        worst = sorted(per_record[k].items(), key=lambda kv: -kv[1])[:4]
        print(f"{k:>22}  " + "  ".join(parts) + "  most: " + ", ".join(f"{n} {c}" for n, c in worst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
