"""Where the benchmarks find the real data sets, and how they load MIT-BIH records."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vigil.kernels.beat_match import BEAT_SYMBOLS, vf_intervals

REPO = Path(__file__).resolve().parents[1]


def data_root(arg: str | None) -> Path:
    """``--data``, else ``$VIGIL_DATA``, else ``../shared/data`` relative to the repository root."""
    if arg:
        return Path(arg).expanduser().resolve()
    env = os.environ.get("VIGIL_DATA")
    return Path(env).expanduser().resolve() if env else (REPO / ".." / "shared" / "data").resolve()


@dataclass
class Record:
    """One MIT-BIH record: a lead as float64 mV, reference beats and VF intervals."""

    name: str
    lead: str
    fs: float
    x: np.ndarray
    ref: np.ndarray
    vf: list[tuple[int, int]]
    digest: str


def record_names(mitdb: Path, only: str | None) -> list[str]:
    """Names from ``RECORDS`` (or ``*.hea``), filtered by a comma list."""
    if not mitdb.is_dir():
        sys.exit(f"{mitdb} not found (set --data or $VIGIL_DATA to the folder holding mitdb/)")
    rec_file = mitdb / "RECORDS"
    if rec_file.exists():
        names = [ln.strip() for ln in rec_file.read_text().splitlines() if ln.strip()]
        names = [n for n in names if (mitdb / f"{n}.hea").exists()]
    else:
        names = sorted(p.stem for p in mitdb.glob("*.hea"))
    if only:
        want = [w.strip() for w in only.split(",") if w.strip()]
        missing = [w for w in want if w not in names]
        if missing:
            sys.exit(f"records not found in {mitdb}: {', '.join(missing)}")
        names = [n for n in names if n in want]
    if not names:
        sys.exit(f"no MIT-BIH records found in {mitdb}")
    return names


def load_records(mitdb: Path, names: list[str], channel: int) -> list[Record]:
    """Read every record once (wfdb), channel ``channel`` as physical units."""
    import wfdb

    out = []
    for name in names:
        path = str(mitdb / name)
        rec = wfdb.rdrecord(path, channels=[channel])
        ann = wfdb.rdann(path, "atr")
        x = np.ascontiguousarray(rec.p_signal[:, 0], dtype=np.float64)
        sym = np.asarray(ann.symbol)
        ref = np.asarray(ann.sample, dtype=np.int64)[np.isin(sym, list(BEAT_SYMBOLS))]
        digest = hashlib.blake2b(x.tobytes(), digest_size=8).hexdigest()
        out.append(
            Record(name, rec.sig_name[0], float(rec.fs), x, ref, vf_intervals(ann.sample, ann.symbol), digest)
        )
    return out
