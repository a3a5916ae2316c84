#!/usr/bin/env python
"""ecg-rhythm fold networks for the MIT-BIH alarm evaluation of the MIT-BIH-pretrained recipe: for
every DS1 record, a network whose pretraining (:mod:`vigil.models.rhythm_pretext`) never read it.

A network pretrained on the beat labels of every DS1 record never saw a MIT-BIH rhythm label, but an
AF alarm evaluated on a DS1 record would run on a waveform it has read. This script trains the recipe
with ``--pretrain-epochs`` (every CinC record, the same seed) with the pretraining split in two halves
of DS1: the network of each half is pretrained on the other half only. Each is exported like the
shipped one (FP32, both INT8 artifacts with the shipped card's calibration method) under
``DIR/<record>/ecg-rhythm.*`` for every record of its half, with a copy of the shipped card whose
artifacts are replaced (its metrics stay the shipped network's; the version says which half the
pretraining left out). ``bench/beat_folds.py`` writes the ``ecg-beats`` fold networks in the same
layout.

Needs the train extra and the data (``--data``, ``$VIGIL_DATA`` or ``../shared/data``). Two networks
of about 6 min each on one core; ``--workers 2`` trains them side by side.

    .venv/bin/python bench/rhythm_folds.py --out ~/.cache/vigil/folds --workers 2
    .venv/bin/python bench/alarm_eval.py --compare --networks zoo --fold-models ~/.cache/vigil/folds
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench_data import data_root

from vigil.export.card import ModelCard, artifact, card_path, load_card
from vigil.models import rhythm
from vigil.models.beats import DS1
from vigil.models.registry import ZOO
from vigil.models.rhythm_pretext import pretext_windows

HALVES = (DS1[0::2], DS1[1::2])


def fold_network(data: Path, out: Path, half: int, seed: int, pretrain_epochs: int) -> list[str]:
    """Train and export the network pretrained without ``HALVES[half]``; the records it serves."""
    shipped = load_card(ZOO / rhythm.NAME)
    cfg = dataclasses.replace(rhythm.Config(), pretrain_epochs=pretrain_epochs)
    records = rhythm.load_records(data / rhythm.DATASET, cfg.strip)
    left_out = HALVES[half]
    kept = tuple(n for n in DS1 if n not in left_out)
    pretext = pretext_windows(data / "mitdb", kept, cfg.strip, leads=cfg.pretext_leads)
    model = rhythm.fit_model(cfg, records, seed, False, f"half {half + 1}", pretext)
    method = shipped.metrics["calibration"]["chosen"]
    served = [n for n in left_out if (data / "mitdb" / f"{n}.hea").is_file()]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / f"{rhythm.NAME}.fp32.onnx"
        _, _, int8s = rhythm.export_artifacts(model, cfg, records, fp32, method, seed)
        files = {"fp32": fp32, **int8s}
        for name in served:
            d = out / name
            d.mkdir(parents=True, exist_ok=True)
            copies = {}
            for key, path in files.items():
                copies[key] = d / path.name
                copies[key].write_bytes(path.read_bytes())
            card = ModelCard(**{
                **shipped.__dict__,
                "version": f"{shipped.version}-pretext-without-{'-'.join(left_out)}",
                "artifacts": {k: artifact(v) for k, v in copies.items()},
            })  # fmt: skip
            card.save(card_path(d / rhythm.NAME))
    return served


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("~/.cache/vigil/folds").expanduser())
    p.add_argument("--data", help="root holding cinc2017_af/ and mitdb/ ($VIGIL_DATA or ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=1, help="networks trained side by side, one core each")
    a = p.parse_args(argv)
    data = data_root(a.data)
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        args = [data] * 2, [a.out] * 2, [0, 1], [a.seed] * 2, [a.pretrain_epochs] * 2
        served = list(pool.map(fold_network, *args))
    print(f"ecg-rhythm fold networks for {sum(map(len, served))} DS1 records in {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
