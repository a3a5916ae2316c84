#!/usr/bin/env python
"""QRS detection benchmark on MIT-BIH: Vigil vs WFDB XQRS vs NeuroKit2, side by side.

Every detector gets the same 1-D physical signal (mV) of each record and is scored beat by beat
against the reference annotations with :func:`vigil.kernels.beat_match.match_beats` (150 ms window),
both EC57-style (from 5 min, VF episodes excluded) and over the whole record. Speed ratios are
``peer_time / vigil_time`` over all records.

Peer detections (and their measured times) are cached under ``.bench/cache/qrs`` keyed by record,
channel, method and package version; ``--no-cache`` re-runs them. ``--vigil-only`` runs only Vigil
and shows peers from the score cache of the last full run; ``--watch`` keeps the records loaded and
re-scores Vigil whenever a ``vigil.kernels`` source file changes.

Examples::

    .venv/bin/python bench/qrs.py                      # everything (slow the first time)
    .venv/bin/python bench/qrs.py --vigil-only         # fast re-score while tuning
    .venv/bin/python bench/qrs.py --vigil-only --watch
    .venv/bin/python bench/qrs.py --records 100,101 --stream-chunk 360 --json qrs.json
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from bench_data import REPO, Record, data_root, load_records, record_names

from vigil.kernels.beat_match import BeatMatch, match_beats

CACHE_DEFAULT = REPO / ".bench" / "cache"
TOLERANCE_S = 0.150
EC57_START_S = 300.0
#: A NeuroKit2 method must reach this EC57 F1 to be named "fastest".
USABLE_F1 = 0.95

#: NeuroKit2 ``ecg_findpeaks`` methods tried by default (those that fail are skipped and noted).
NK_METHODS = (
    "neurokit",
    "pantompkins1985",
    "hamilton2002",
    "elgendi2010",
    "elgendi2013",
    "engzeemod2012",
    "christov2004",
    "kalidas2017",
    "nabian2018",
    "rodrigues2021",
    "zong2003",
    "martinez2004",
    "manikandan2012",
    "khamis2016",
    "gamboa2008",
    "ssf",
    "emrich2023",
    "promac",
)

Detect = Callable[[np.ndarray, float], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Data


# ---------------------------------------------------------------------------------------------
# Detectors


@dataclass
class Peer:
    """A peer detector: ``xqrs`` or a NeuroKit2 method (``nk:<method>``)."""

    name: str
    package: str
    method: str
    version: str
    clean: str = ""
    fn: Detect | None = None
    skip: str = ""


def pkg_version(pkg: str) -> str:
    """Installed version of ``pkg`` without importing it."""
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def make_peers(spec: str) -> list[Peer]:
    """Parse ``--peers`` (``all``, ``none`` or a comma list of ``xqrs`` and NeuroKit2 methods)."""
    if spec == "none":
        return []
    names = ["xqrs", *NK_METHODS] if spec == "all" else [s.strip() for s in spec.split(",") if s]
    peers = []
    for n in names:
        if n == "xqrs":
            peers.append(Peer("xqrs", "wfdb", "xqrs", pkg_version("wfdb")))
        else:
            m = n.removeprefix("nk:")
            peers.append(Peer(f"nk:{m}", "neurokit2", m, pkg_version("neurokit2")))
    return peers


def build_peer(peer: Peer) -> None:
    """Import the peer's package and set ``peer.fn`` (or ``peer.skip`` with the reason)."""
    if peer.package == "wfdb":
        import wfdb.processing

        def xqrs(x: np.ndarray, fs: float) -> np.ndarray:
            return wfdb.processing.xqrs_detect(sig=x, fs=fs, verbose=False)

        peer.fn = xqrs
        return
    try:
        import neurokit2 as nk
    except ImportError as e:
        peer.skip = f"neurokit2 not importable: {e}"
        return
    method = peer.method
    probe = np.sin(np.linspace(0, 20 * np.pi, 3600))
    try:  # the method's own cleaning when ecg_clean has one, else NeuroKit's default
        nk.ecg_clean(probe, sampling_rate=360, method=method)
        peer.clean = method
    except ValueError:
        peer.clean = "neurokit"
    clean = peer.clean

    def nk_detect(x: np.ndarray, fs: float) -> np.ndarray:
        sr = int(fs) if float(fs).is_integer() else fs
        c = nk.ecg_clean(x, sampling_rate=sr, method=clean)
        return nk.ecg_findpeaks(c, sampling_rate=sr, method=method)["ECG_R_Peaks"]

    peer.fn = nk_detect


def load_vigil() -> ModuleType:
    """Import ``vigil.kernels.qrs`` (fresh, for --watch reloads)."""
    return importlib.import_module("vigil.kernels.qrs")


def vigil_batch(qrs: ModuleType) -> Detect:
    """``qrs.detect`` as a detector."""
    return lambda x, fs: qrs.detect(x, fs)


def vigil_stream(qrs: ModuleType, chunk: int) -> Detect:
    """Vigil through ``QRSDetector`` in chunks of ``chunk`` samples."""

    def run(x: np.ndarray, fs: float) -> np.ndarray:
        det = qrs.QRSDetector(fs)
        parts = [det.process(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        parts.append(det.finish())
        return np.concatenate(parts)

    return run


def settle() -> None:
    """Collect once and freeze survivors, so later collections are short and rare."""
    gc.collect()
    gc.freeze()


def timed(fn: Detect, x: np.ndarray, fs: float, repeat: int) -> tuple[np.ndarray, list[float]]:
    """Run ``fn(x, fs)`` ``repeat`` times with the cyclic GC off; return output and times.

    Callers run ``settle()`` after warming up, so no collection of earlier garbage lands here.
    """
    times: list[float] = []
    out = None
    for _ in range(max(1, repeat)):
        gc.disable()
        try:
            t0 = time.perf_counter()
            out = fn(x, fs)
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return np.asarray(out, dtype=np.int64).ravel(), times


# ---------------------------------------------------------------------------------------------
# Results and cache


@dataclass
class Run:
    """One detector on one record."""

    det: np.ndarray
    times: list[float]
    ec57: BeatMatch
    whole: BeatMatch
    cached: bool = False
    error: str = ""

    @property
    def time_s(self) -> float:
        """Best of the measured times."""
        return min(self.times) if self.times else float("nan")


@dataclass
class Result:
    """A detector over all records."""

    name: str
    runs: dict[str, Run] = field(default_factory=dict)
    note: str = ""

    def total(self, mode: str) -> BeatMatch:
        """Gross counts over all records for ``mode`` ('ec57' or 'whole')."""
        tot = BeatMatch(0, 0, 0)
        for r in self.runs.values():
            tot = tot + getattr(r, mode)
        return tot

    @property
    def time_s(self) -> float:
        """Sum of per-record best times."""
        return float(sum(r.time_s for r in self.runs.values()))

    @property
    def n_cached(self) -> int:
        """Records whose result came from the cache."""
        return sum(r.cached for r in self.runs.values())

    @property
    def errors(self) -> list[str]:
        """Records on which the detector raised."""
        return [k for k, r in self.runs.items() if r.error]


def score(rec: Record, det: np.ndarray) -> tuple[BeatMatch, BeatMatch]:
    """EC57 (from 5 min, VF excluded) and whole-record scores."""
    ec57 = match_beats(rec.ref, det, rec.fs, TOLERANCE_S, EC57_START_S, rec.vf)
    whole = match_beats(rec.ref, det, rec.fs, TOLERANCE_S, 0.0, rec.vf)
    return ec57, whole


def f1(m: BeatMatch) -> float:
    """Harmonic mean of Se and +P (ranking key)."""
    d = 2 * m.tp + m.fn + m.fp
    return 2 * m.tp / d if d else 0.0


class Cache:
    """Peer detections as .npz per (package-version, method, record, channel) + a score index."""

    def __init__(self, root: Path, read: bool):
        self.root = root / "qrs"
        self.read = read  # --no-cache: never read, but still store fresh results
        self.index_path = self.root / "scores.json"
        self._index: dict[str, dict] | None = None

    def path(self, peer: Peer, rec: Record, channel: int) -> Path:
        """File holding ``peer``'s detections on ``rec``."""
        pkg = f"{peer.package}-{peer.version}"
        return self.root / pkg / peer.method / f"{rec.name}-ch{channel}.npz"

    def load(self, peer: Peer, rec: Record, channel: int) -> tuple[np.ndarray, list[float], str] | None:
        """Cached (detections, times, error) if present and made from the same signal."""
        p = self.path(peer, rec, channel)
        if not self.read or not p.exists():
            return None
        try:
            with np.load(p) as z:
                if str(z["digest"]) != rec.digest:
                    return None
                return z["det"].astype(np.int64), [float(t) for t in z["times"]], str(z["error"])
        except (OSError, KeyError, ValueError):
            return None

    def save(self, peer: Peer, rec: Record, channel: int, run: Run) -> None:
        """Store a fresh peer result (atomically)."""
        p = self.path(peer, rec, channel)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            det=run.det,
            times=np.asarray(run.times),
            digest=rec.digest,
            error=run.error,
            clean=peer.clean,
            when=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        os.replace(tmp, p)

    def clean_of(self, peer: Peer, rec: Record, channel: int) -> str:
        """The NeuroKit2 cleaning recorded with a cached result."""
        try:
            with np.load(self.path(peer, rec, channel)) as z:
                return str(z["clean"])
        except (OSError, KeyError, ValueError):
            return "?"

    @staticmethod
    def key(peer: Peer, rec: Record, channel: int) -> str:
        """Score-index key (the tolerance is fixed at 150 ms)."""
        return f"{peer.package}-{peer.version}/{peer.method}/{rec.name}-ch{channel}/{rec.digest}"

    def index(self) -> dict[str, dict]:
        """The score index (scores and times of peers from earlier full runs)."""
        if self._index is None:
            try:
                self._index = json.loads(self.index_path.read_text())
            except (OSError, ValueError):
                self._index = {}
        return self._index

    def put_score(self, peer: Peer, rec: Record, channel: int, run: Run) -> None:
        """Record a peer's scores for --vigil-only."""
        self.index()[self.key(peer, rec, channel)] = {
            "ec57": [run.ec57.tp, run.ec57.fn, run.ec57.fp],
            "whole": [run.whole.tp, run.whole.fn, run.whole.fp],
            "times": run.times,
            "error": run.error,
            "clean": peer.clean,
        }

    def flush_index(self) -> None:
        """Write the score index."""
        if self._index is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._index, indent=0, sort_keys=True))
        os.replace(tmp, self.index_path)


# ---------------------------------------------------------------------------------------------
# Running


def progress(msg: str) -> None:
    """Progress line on stderr."""
    print(msg, file=sys.stderr, flush=True)


def warm_vigil(fn: Detect, rec: Record) -> None:
    """Compile / load Numba code on 10 s of signal."""
    fn(rec.x[: int(10 * rec.fs)].copy(), rec.fs)


def run_vigil(name: str, fn: Detect, records: list[Record], repeat: int) -> Result:
    """Time (best of ``repeat``) and score Vigil on every record."""
    res = Result(name)
    settle()
    for rec in records:
        det, times = timed(fn, rec.x, rec.fs, repeat)
        ec57, whole = score(rec, det)
        res.runs[rec.name] = Run(det, times, ec57, whole)
    return res


def prepare_peers(peers: list[Peer], records: list[Record], cache: Cache, channel: int, max_s: float) -> None:
    """Build and warm peers with records to compute; mark those that fail or are too slow."""
    rec0 = records[0]
    for peer in peers:
        if all(cache.load(peer, r, channel) is not None for r in records):
            continue  # everything cached: nothing to build or warm
        try:
            build_peer(peer)
        except Exception as e:  # noqa: BLE001 - any import failure means "skip"
            peer.skip = f"{type(e).__name__}: {e}"
        if peer.skip:
            continue
        seg = rec0.x[: int(30 * rec0.fs)].copy()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                peer.fn(seg, rec0.fs)
                dt = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            peer.skip = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            continue
        projected = dt * len(rec0.x) / len(seg)
        if projected > max_s:
            peer.skip = f"too slow: ~{projected:.0f} s per record projected (> --peer-max-s {max_s:g})"


def run_peer(peer: Peer, rec: Record, cache: Cache, channel: int, repeat: int) -> Run:
    """A peer on one record: from the cache, or timed and stored."""
    hit = cache.load(peer, rec, channel)
    if hit is not None:
        det, times, err = hit
        ec57, whole = score(rec, det)
        return Run(det, times, ec57, whole, cached=True, error=err)
    if peer.fn is None:
        build_peer(peer)
    pristine = rec.x.copy()
    settle()
    err = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det, times = timed(peer.fn, rec.x, rec.fs, repeat)
    except Exception as e:  # noqa: BLE001 - recorded as a failed record
        det, times = np.empty(0, np.int64), [float("nan")]
        err = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    if not np.array_equal(rec.x, pristine):
        rec.x[:] = pristine
        err = err or "modified its input (restored)"
    ec57, whole = score(rec, det)
    run = Run(det, times, ec57, whole, error=err)
    cache.save(peer, rec, channel, run)
    return run


def peers_from_index(
    peers: list[Peer], records: list[Record], cache: Cache, channel: int
) -> tuple[list[Result], list[str]]:
    """Peer results from the score index (--vigil-only); peers missing a record are left out."""
    idx = cache.index()
    out, missing = [], []
    for peer in peers:
        entries = [idx.get(cache.key(peer, r, channel)) for r in records]
        if any(e is None for e in entries):
            missing.append(peer.name)
            continue
        res = Result(peer.name, note=f"clean={entries[0].get('clean', '')}")
        for r, e in zip(records, entries, strict=True):
            res.runs[r.name] = Run(
                np.empty(0, np.int64),
                e["times"],
                BeatMatch(*e["ec57"]),
                BeatMatch(*e["whole"]),
                cached=True,
                error=e["error"],
            )
        out.append(res)
    return out, missing


# ---------------------------------------------------------------------------------------------
# Output


def fmt_table(
    headers: list[str], rows: list[list[str]], groups: list[tuple[str, int]] | None = None, title: str = ""
) -> str:
    """Plain-text table; first column left-aligned, others right; optional spanning group row."""
    w = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells)
    ).rstrip()
    out = [title] if title else []
    if groups:
        parts, i = [], 0
        for label, n in groups:
            span = sum(w[i : i + n]) + 2 * (n - 1)
            parts.append(label.center(span, "-") if label else " " * span)
            i += n
        out.append("  ".join(parts).rstrip())
    out.append(line(headers))
    out.append("  ".join("-" * x for x in w))
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def pct(v: float) -> str:
    """Fraction as a percentage with two decimals."""
    return "   -" if v != v else f"{100 * v:.2f}"


def counts(m: BeatMatch) -> list[str]:
    """TP FN FP Se +P cells."""
    return [str(m.tp), str(m.fn), str(m.fp), pct(m.se), pct(m.ppv)]


def src(res: Result) -> str:
    """Where a detector's results came from."""
    n, k = len(res.runs), res.n_cached
    return "run" if k == 0 else "cache" if k == n else f"cache {k}/{n}"


def per_record_table(records: list[Record], cols: list[Result]) -> str:
    """EC57 counts per record, detectors side by side."""
    headers = ["record", "lead", "beats"]
    groups: list[tuple[str, int]] = [("", 3)]
    for res in cols:
        headers += ["TP", "FN", "FP", "Se%", "+P%"]
        groups.append((f" {res.name} ", 5))
    rows = []
    for rec in records:
        r0 = cols[0].runs[rec.name].ec57
        row = [rec.name, rec.lead, str(r0.tp + r0.fn)]
        for res in cols:
            run = res.runs[rec.name]
            row += counts(run.ec57) if not run.error else ["err", "", "", "", ""]
        rows.append(row)
    title = (
        f"Per record, EC57 scoring (from {EC57_START_S:g} s, VF excluded, {TOLERANCE_S * 1000:g} ms window)"
    )
    return fmt_table(headers, rows, groups, title)


def totals_table(results: list[Result], base: Result) -> str:
    """Gross Se / +P per detector, both scoring modes, total time and peer/Vigil ratio."""
    headers = [
        "detector",
        "source",
        "TP",
        "FN",
        "FP",
        "Se%",
        "+P%",
        "TP",
        "FN",
        "FP",
        "Se%",
        "+P%",
        "time s",
        "peer/vigil",
    ]
    groups = [("", 2), (f" EC57 (from {EC57_START_S:g} s) ", 5), (" whole record ", 5), ("", 2)]
    rows = []
    for res in results:
        ratio = res.time_s / base.time_s if base.time_s > 0 else float("nan")
        name = res.name + ("*" if res.errors else "")
        rows.append(
            [
                name,
                src(res),
                *counts(res.total("ec57")),
                *counts(res.total("whole")),
                f"{res.time_s:.3f}",
                "1 (base)" if res is base else f"{ratio:.1f}x",
            ]
        )
    return fmt_table(headers, rows, groups, "Totals over all records (gross)")


def header_lines(args: argparse.Namespace, mitdb: Path, records: list[Record]) -> list[str]:
    """Command line, data, versions and machine."""
    pkgs = ("vigil", "numpy", "numba", "scipy", "wfdb", "neurokit2")
    versions = ", ".join(f"{p} {pkg_version(p)}" for p in pkgs)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [
        "# bench/qrs.py - QRS detection on MIT-BIH, beat-by-beat (ANSI/AAMI EC57 style)",
        f"command : {shlex.join([sys.executable, *sys.argv])}",
        f"data    : {mitdb} ({len(records)} records, channel {args.channel}, "
        f"{sum(len(r.x) for r in records) / records[0].fs / 3600:.2f} h)",
        f"versions: python {platform.python_version()}, {versions}",
        f"machine : {platform.machine()}, {os.cpu_count()} CPUs, load avg {load}",
        f"timing  : best of {args.repeat} per record for Vigil (after a warm-up call), best of "
        f"{args.peer_repeat} for peers; totals are sums of per-record bests",
    ]


def result_json(res: Result) -> dict:
    """JSON-able form of a detector's results."""
    return {
        "source": src(res),
        "note": res.note,
        "time_s": res.time_s,
        "ec57": counts_dict(res.total("ec57")),
        "whole": counts_dict(res.total("whole")),
        "records": {
            k: {
                "ec57": counts_dict(r.ec57),
                "whole": counts_dict(r.whole),
                "times_s": r.times,
                "time_s": r.time_s,
                "cached": r.cached,
                "error": r.error,
                "n_detected": int(len(r.det)),
            }
            for k, r in res.runs.items()
        },
    }


def no_nan(obj: object) -> object:
    """Replace NaN floats by None so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [no_nan(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def counts_dict(m: BeatMatch) -> dict:
    """BeatMatch as a dict with Se and +P."""
    return {"tp": m.tp, "fn": m.fn, "fp": m.fp, "se": m.se, "ppv": m.ppv}


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Peers: xqrs and NeuroKit2 methods " + ", ".join(NK_METHODS),
    )
    ap.add_argument(
        "--data",
        help="data directory holding mitdb/ (default: $VIGIL_DATA, else "
        "../shared/data next to the repository)",
    )
    ap.add_argument("--channel", type=int, default=0, help="signal channel (default 0 = MLII)")
    ap.add_argument("--records", help="comma list of records, e.g. 100,101 (default: all)")
    ap.add_argument(
        "--peers", default="all", help="'all', 'none' or a comma list of xqrs and NeuroKit2 methods"
    )
    ap.add_argument(
        "--vigil-only",
        action="store_true",
        help="run only Vigil; peers are shown from the score cache if present",
    )
    ap.add_argument(
        "--watch",
        action="store_true",
        help="keep records loaded; re-run Vigil whenever vigil/kernels/*.py changes",
    )
    ap.add_argument(
        "--stream-chunk",
        type=int,
        metavar="N",
        help="run Vigil through QRSDetector in chunks of N samples (and check that it equals detect())",
    )
    ap.add_argument("--repeat", type=int, default=3, help="Vigil timing: best of N (default 3)")
    ap.add_argument("--peer-repeat", type=int, default=1, help="peer timing: best of N (default 1)")
    ap.add_argument(
        "--peer-max-s",
        type=float,
        default=300.0,
        help="skip a peer projected to take longer than this per record (default 300)",
    )
    ap.add_argument(
        "--no-cache",
        action="store_true",
        help="re-run peers instead of reading the cache (fresh results replace it)",
    )
    ap.add_argument(
        "--cache-dir", type=Path, default=CACHE_DEFAULT, help=f"cache directory (default {CACHE_DEFAULT})"
    )
    ap.add_argument(
        "--all",
        action="store_true",
        help="per-record table with every detector (wide) instead of the best three",
    )
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write all results as JSON")
    args = ap.parse_args(argv)
    if args.stream_chunk is not None and args.stream_chunk < 1:
        ap.error("--stream-chunk must be >= 1")
    return args


def wait_for_change(files: dict[Path, float]) -> None:
    """Block until a watched file's mtime changes."""
    while True:
        time.sleep(0.5)
        for p, m in files.items():
            try:
                if p.stat().st_mtime != m:
                    time.sleep(0.3)  # let the editor finish writing
                    return
            except OSError:
                return


def snapshot(folder: Path) -> dict[Path, float]:
    """mtimes of the kernels package sources."""
    return {p: p.stat().st_mtime for p in folder.glob("*.py")}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    args = parse_args(argv)
    mitdb = data_root(args.data) / "mitdb"
    names = record_names(mitdb, args.records)
    t_load = time.perf_counter()
    records = load_records(mitdb, names, args.channel)
    t_load = time.perf_counter() - t_load
    cache = Cache(args.cache_dir, read=not args.no_cache)
    peers = make_peers(args.peers)

    peer_results: list[Result] = []
    notes: list[str] = []
    qrs = load_vigil()
    if not args.vigil_only:
        prepare_peers(peers, records, cache, args.channel, args.peer_max_s)
        for p in peers:
            if p.skip:
                notes.append(f"skipped {p.name}: {p.skip}")
        active = [p for p in peers if not p.skip]
        peer_results = [Result(p.name) for p in active]
        for i, rec in enumerate(records, 1):
            msg = [f"[{i}/{len(records)}] {rec.name}:"]
            for peer, res in zip(active, peer_results, strict=True):
                run = run_peer(peer, rec, cache, args.channel, args.peer_repeat)
                res.runs[rec.name] = run
                cache.put_score(peer, rec, args.channel, run)
                msg.append(
                    f"{peer.name} {'cached' if run.cached else f'{run.time_s:.2f}s'}"
                    + (" ERR" if run.error else "")
                )
            progress(" ".join(msg))
        cache.flush_index()
        for p, res in zip(active, peer_results, strict=True):
            if p.package == "neurokit2":
                res.note = f"clean={p.clean or cache.clean_of(p, records[0], args.channel)}"
    else:
        peer_results, missing = peers_from_index(peers, records, cache, args.channel)
        if peer_results:
            notes.append("--vigil-only: peer rows are from the score cache of an earlier full run")
        if missing and args.peers != "all":
            notes.append(f"not in the score cache: {', '.join(missing)}")

    rc = 0
    kernels_dir = Path(qrs.__file__).parent
    current: ModuleType | None = qrs
    while True:
        if current is not None:
            try:
                out, rc = vigil_pass(args, current, records, peer_results, notes, mitdb, t_load)
                print(out, flush=True)
            except Exception:  # noqa: BLE001 - in --watch mode a broken edit must not end the loop
                if not args.watch:
                    raise
                traceback.print_exc()
        if not args.watch:
            return rc
        progress(f"watching {kernels_dir}/*.py for changes (Ctrl-C to stop) ...")
        try:
            wait_for_change(snapshot(kernels_dir))
        except KeyboardInterrupt:
            return rc
        for mod in [
            m for m in sys.modules if m.startswith("vigil.kernels.") and not m.endswith(".beat_match")
        ]:
            del sys.modules[mod]
        try:
            current = load_vigil()
        except Exception:  # noqa: BLE001 - wait for the next edit
            traceback.print_exc()
            current = None


def vigil_pass(
    args: argparse.Namespace,
    qrs: ModuleType,
    records: list[Record],
    peer_results: list[Result],
    notes: list[str],
    mitdb: Path,
    t_load: float,
) -> tuple[str, int]:
    """Run and score Vigil, then format every table; returns (text, exit code)."""
    rc = 0
    t0 = time.perf_counter()
    extra: list[str] = []
    batch_fn = vigil_batch(qrs)
    warm_vigil(batch_fn, records[0])
    batch = run_vigil("vigil", batch_fn, records, args.repeat)
    vig = batch
    vigil_rows = [batch]
    if args.stream_chunk:
        sfn = vigil_stream(qrs, args.stream_chunk)
        warm_vigil(sfn, records[0])
        vig = run_vigil(f"vigil-stream[{args.stream_chunk}]", sfn, records, args.repeat)
        vigil_rows = [vig, batch]
        diff = [r.name for r in records if not np.array_equal(vig.runs[r.name].det, batch.runs[r.name].det)]
        same = len(records) - len(diff)
        extra.append(
            f"stream (QRSDetector, chunks of {args.stream_chunk}) vs detect(): "
            f"{same}/{len(records)} records identical" + (f"; DIFFERENT: {', '.join(diff)}" if diff else "")
        )
        rc = 1 if diff else 0
    t_vigil = time.perf_counter() - t0

    nk = [r for r in peer_results if r.name.startswith("nk:")]
    nk_ok = [r for r in nk if not r.errors]
    best_nk = max(nk_ok or nk, key=lambda r: f1(r.total("ec57"))) if nk else None
    usable = [r for r in nk_ok if f1(r.total("ec57")) >= USABLE_F1]
    fastest_nk = min(usable, key=lambda r: r.time_s) if usable else None
    xqrs = next((r for r in peer_results if r.name == "xqrs"), None)

    cols = [vig] + ([xqrs] if xqrs else []) + ([best_nk] if best_nk else [])
    if args.all:
        cols = vigil_rows + peer_results
    ordered_peers = ([xqrs] if xqrs else []) + sorted(nk, key=lambda r: -f1(r.total("ec57")))
    lines = header_lines(args, mitdb, records)
    lines.append(f"wall    : records loaded in {t_load:.2f} s; Vigil pass {t_vigil:.2f} s")
    lines.append("")
    lines.append(per_record_table(records, cols))
    lines.append("")
    lines.append(totals_table(vigil_rows + ordered_peers, vig))
    lines.append("")
    summary = []
    if best_nk:
        m = best_nk.total("ec57")
        summary.append(
            f"NeuroKit2 most accurate (EC57 F1): {best_nk.name} "
            f"(Se {pct(m.se)}%, +P {pct(m.ppv)}%, {best_nk.time_s:.2f} s)"
        )
    if fastest_nk:
        m = fastest_nk.total("ec57")
        summary.append(
            f"NeuroKit2 fastest with EC57 F1 >= {USABLE_F1:.0%}: {fastest_nk.name} "
            f"({fastest_nk.time_s:.2f} s, "
            f"Se {pct(m.se)}%, +P {pct(m.ppv)}%)"
        )
    cached = [r.name for r in peer_results if r.n_cached]
    if cached:
        which = "all peers" if len(cached) == len(peer_results) else ", ".join(cached)
        summary.append(
            f"from cache ({args.cache_dir / 'qrs'}; times are those measured when cached): {which}"
        )
    for r in peer_results:
        if r.errors:
            summary.append(
                f"{r.name}*: raised on {', '.join(r.errors)} (scored as no detections): "
                f"{r.runs[r.errors[0]].error}"
            )
    cleans = [f"{r.name[3:]}<-{r.note[6:]}" for r in nk if r.note.startswith("clean=")]
    if cleans:
        summary.append(
            "NeuroKit2 time = ecg_clean + ecg_findpeaks; cleaning used (method<-clean): " + ", ".join(cleans)
        )
    lines += summary + extra + notes

    if args.json:
        doc = {
            "command": shlex.join([sys.executable, *sys.argv]),
            "data": str(mitdb),
            "channel": args.channel,
            "tolerance_s": TOLERANCE_S,
            "ec57_start_s": EC57_START_S,
            "repeat": args.repeat,
            "peer_repeat": args.peer_repeat,
            "records": [
                {
                    "name": r.name,
                    "lead": r.lead,
                    "fs": r.fs,
                    "n_samples": len(r.x),
                    "n_ref": len(r.ref),
                    "vf": r.vf,
                }
                for r in records
            ],
            "vigil_base": vig.name,
            "detectors": {r.name: result_json(r) for r in vigil_rows + ordered_peers},
            "best_neurokit2": best_nk.name if best_nk else None,
            "fastest_neurokit2": fastest_nk.name if fastest_nk else None,
            "notes": summary + extra + notes,
            "median_vigil_time_s": {k: statistics.median(r.times) for k, r in vig.runs.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(no_nan(doc), indent=1))
        lines.append(f"json    : {args.json}")
    return "\n".join(lines), rc


if __name__ == "__main__":
    sys.exit(main())
