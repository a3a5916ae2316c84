#!/usr/bin/env python
"""Alarm evaluation on MIT-BIH: the monitor's alarms on real recordings, scored against the annotations.

Each record's lead 0 (MLII) is replayed through :class:`vigil.edge.pipeline.Monitor` as one device
would send it: :class:`~vigil.firmware_bridge.replay.ReplayTransport` frames (32 samples, int16 on
the wire) at ``speed=0``, each frame arriving when its last sample was acquired, the monitor's clock
being the signal clock, ``handle`` for every item and ``tick`` every ``monitor.tick_s`` of signal
(as :meth:`Monitor.run` ticks a replay that runs faster than real time). Alarm settings are the
shipped defaults (``Config()``); nothing is tuned on these records. One operator action is
simulated, because a replay has no nurse: a *latched* alarm (asystole, ventricular run) is
acknowledged ``--ack-after`` seconds after it is raised; without that it stays active for the rest
of the record and can never be raised again. Times are signal seconds since the record's start.

**References** (``<record>.atr``, read with wfdb; the monitor path never sees them):

* ``irregular_rhythm`` (the AF screen): ``(AFIB`` rhythm episodes. ``(AFL`` episodes are reported
  beside them, not scored.
* ``pause`` / ``asystole``: reference RR intervals (consecutive beat annotations,
  :data:`~vigil.kernels.beat_match.BEAT_SYMBOLS`) longer than the rule's threshold (2.5 s / 4 s).
* ``bradycardia`` / ``tachycardia``: the engine compares the rate of the latest RR interval, falling
  while the next beat is awaited (:meth:`Features.from_rhythm`), with its limit on every update for
  ``condition_delay_s``. The reference does the same on reference beats: at time ``t`` after beat
  ``b[i]`` the rate is ``60 / max(b[i] - b[i-1], t - b[i])``; an episode is a span where it stays at
  or beyond the limit (<= 40 / >= 150 bpm) for at least the condition delay (5 s); episodes less
  than the rule's clear delay (3 s) apart are one, as the alarm would not have cleared between them.
* ``ventricular_run``: runs of >= 3 (the rule's threshold) consecutive AAMI-V beats (``V``, ``E``)
  and ``(VT`` episodes. The rule-only monitor cannot raise it (it needs beat classes from a model,
  issue 5), so it is reported as such with the reference counts.
* VF (``[`` ... ``]``, record 207): reference episodes that overlap a VF span are dropped, and an
  alarm raised inside a VF span (± tolerance) that matches nothing is counted as *during VF*, not as
  false: any alarm there is clinically right, and the RR reference has no beats to judge it by.

**Scoring**, per alarm type with tolerance ``tol`` = the rule's condition delay + a slack
(:data:`SLACK_S`; 30 s for the AF screen, whose 60-beat window lags the onset, 5 s otherwise):

* a reference episode is *detected* when an alarm of that type is raised in ``[onset, end + tol]``,
  or was already active at its onset (counted, but gives no delay);
* a raised alarm is *true* when its active span (raise to clear, or record end) overlaps a reference
  episode widened by ``tol`` on both sides; *false* otherwise (unless during VF);
* episode sensitivity ``Se = detected / episodes``, alarm positive predictivity ``+P = true / raised``
  (VF ones left out), false alarms per monitored hour (hours of signal), detection delay ``raise -
  onset`` (median, p90);
* AF also duration-weighted, as in EC38/EC57 AF reporting: duration Se = the fraction of AF time
  under an active AF alarm, duration +P = the fraction of AF-alarm time that is AF.

Technical alarms (lead off, poor signal, device lost) are counted per hour and listed with the
reference noise marking of lead 0 (``~`` annotations) at that time; alarms the quality gate held back
are counted per type (``AlarmEngine.suppressed``). False physiological alarms are broken down by the
reference rhythm at their raise time.

Results on the 27 shared records (13.54 h; default settings): AF screen episode Se 0.92 (44/48; the
4 missed are 2-5 s bursts in 217), alarm +P 0.22, 1.55 false/h, duration Se 0.95, duration +P 0.19;
tachycardia 4/6, bradycardia 4/4 and pause 4/4 with no false tachycardia or bradycardia; 5 false
pauses and 3 false asystoles (0.59/h together, the detector missing beats in baseline jumps);
no technical alarm raised. ``--compare`` runs the records twice, rule-only and with the shipped
networks (``--networks``), and prints what the networks add (the AF screen by the rhythm network,
ventricular runs and ectopy from beat classes).

Data: ``--data``, else ``$VIGIL_DATA``, else ``../shared/data`` relative to the repository root,
with the records under ``mitdb/``.

Examples::

    .venv/bin/python bench/alarm_eval.py
    .venv/bin/python bench/alarm_eval.py --records 201,203 --per-record --list
    .venv/bin/python bench/alarm_eval.py --per-record --json alarm_eval.json
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from bench_data import data_root, record_names

from vigil.edge.alarms import ECTOPY_WINDOW_S, AlarmConfig, is_technical
from vigil.edge.config import Config
from vigil.edge.messages import AlarmState, Alert
from vigil.edge.networks import TASKS, Networks, load_networks
from vigil.edge.pipeline import Monitor
from vigil.firmware_bridge.replay import ReplayTransport, read_wfdb
from vigil.firmware_bridge.transport import Received
from vigil.kernels.beat_match import BEAT_SYMBOLS

Interval = tuple[float, float]

#: Physiological alarms scored against a reference, in print order.
SCORED = ("irregular_rhythm", "atrial_fibrillation", "tachycardia", "bradycardia", "pause", "asystole",
          "ventricular_run", "ectopy")  # fmt: skip
#: Alarms a rule-only monitor cannot raise: they read network outputs (``--networks``).
NEEDS_NETWORKS = ("atrial_fibrillation", "ventricular_run", "ectopy")
TECHNICAL = ("lead_off", "poor_signal", "device_lost", "battery_low")
#: Slack (s) added to each rule's condition delay to make its matching tolerance.
SLACK_S = {"irregular_rhythm": 30.0, "atrial_fibrillation": 30.0, "ectopy": 10.0}
DEFAULT_SLACK_S = 5.0
#: AAMI class V: the beat labels a ventricular run is made of.
V_CLASS = frozenset("VE")
S_CLASS = frozenset("AaJS")
SHORT = {"irregular_rhythm": "AF", "atrial_fibrillation": "AFnet", "tachycardia": "tachy",
         "bradycardia": "brady", "pause": "pause", "asystole": "asys", "ventricular_run": "Vrun",
         "ectopy": "PVC/m"}  # fmt: skip


def tolerance(alarm: str, cfg: AlarmConfig) -> float:
    """Matching tolerance (s) of ``alarm``: its condition delay plus :data:`SLACK_S`."""
    return getattr(cfg, alarm).condition_delay_s + SLACK_S.get(alarm, DEFAULT_SLACK_S)


# ---------------------------------------------------------------------------------------------
# Intervals


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted union of closed intervals (touching ones join)."""
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def total(intervals: Iterable[Interval]) -> float:
    """Length of the union of ``intervals``."""
    return sum(b - a for a, b in merge(intervals))


def overlap_s(x: Iterable[Interval], y: Iterable[Interval]) -> float:
    """Length of the intersection of two unions of intervals."""
    x, y = merge(x), merge(y)
    i = j = 0
    out = 0.0
    while i < len(x) and j < len(y):
        lo, hi = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        out += max(0.0, hi - lo)
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def overlaps(a: Interval, b: Interval) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


# ---------------------------------------------------------------------------------------------
# Reference episodes from annotations


def label_spans(times: Sequence[float], labels: Sequence[str], end_s: float) -> dict[str, list[Interval]]:
    """Spans of each state of a piecewise-constant label (a label holds until the next one)."""
    out: dict[str, list[Interval]] = {}
    for k, (t, lab) in enumerate(zip(times, labels, strict=True)):
        stop = times[k + 1] if k + 1 < len(times) else end_s
        if stop > t:
            out.setdefault(lab, []).append((float(t), float(stop)))
    return {lab: merge(v) for lab, v in out.items()}


def long_rr(beats_s: np.ndarray, threshold_s: float) -> list[Interval]:
    """RR intervals (consecutive beats) longer than ``threshold_s``, as (beat, next beat)."""
    b = np.asarray(beats_s, dtype=np.float64)
    idx = np.flatnonzero(np.diff(b) > threshold_s)
    return [(float(b[i]), float(b[i + 1])) for i in idx]


def hr_episodes(
    beats_s: np.ndarray, limit_bpm: float, upper: bool, min_s: float, end_s: float, join_s: float = 0.0
) -> list[Interval]:
    """Spans where the reference rate is at or beyond ``limit_bpm`` for at least ``min_s``; such
    spans less than ``join_s`` apart form one episode (as an alarm's clear delay keeps it raised).

    The rate at ``t`` in ``[b[i], b[i+1])`` is ``60 / max(b[i] - b[i-1], t - b[i])``: that of the
    latest RR interval, falling while the next beat is awaited, as the engine's rate does.
    """
    b = np.asarray(beats_s, dtype=np.float64)
    lim = 60.0 / limit_bpm  # the RR (s) at the limit
    segs: list[Interval] = []
    for i in range(1, len(b)):
        a, z, rr = float(b[i]), float(b[i + 1]) if i + 1 < len(b) else end_s, float(b[i] - b[i - 1])
        if upper:  # rate >= limit <=> max(rr, t - a) <= lim
            if rr <= lim:
                segs.append((a, min(z, a + lim)))
        elif rr >= lim:  # rate <= limit <=> max(rr, t - a) >= lim
            segs.append((a, z))
        elif a + lim < z:
            segs.append((a + lim, z))
    out: list[Interval] = []
    for a, z in merge(segs):
        if z - a < min_s:
            continue
        if out and a - out[-1][1] < join_s:
            out[-1] = (out[-1][0], z)
        else:
            out.append((a, z))
    return out


def beat_runs(
    beats_s: np.ndarray, symbols: Sequence[str], classes: frozenset[str], min_len: int
) -> list[Interval]:
    """Runs of at least ``min_len`` consecutive beats whose label is in ``classes``: (first, last)."""
    out, start, n = [], 0, 0
    for k, s in enumerate([*symbols, ""]):
        if s in classes:
            start, n = (k, 1) if n == 0 else (start, n + 1)
            continue
        if n >= min_len:
            out.append((float(beats_s[start]), float(beats_s[k - 1])))
        n = 0
    return out


def count_episodes(times_s: np.ndarray, window_s: float, threshold: float, join_s: float) -> list[Interval]:
    """Spans where at least ``threshold`` of the events ``times_s`` fall in the trailing ``window_s``
    (the event count of ``(t - window_s, t]``); spans less than ``join_s`` apart are one."""
    steps = sorted([(float(t), 1) for t in times_s] + [(float(t) + window_s, -1) for t in times_s])
    out, n, start = [], 0, None
    for t, d in steps:
        n += d
        if n >= threshold and start is None:
            start = t
        elif n < threshold and start is not None:
            out.append((start, t))
            start = None
    spans: list[Interval] = []
    for a, b in out:
        if spans and a - spans[-1][1] < join_s:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


def noise_subtype_marks(subtype: int, channel: int = 0) -> bool:
    """Whether a ``~`` annotation's subtype marks ``channel`` noisy or unreadable (WFDB: bits 0-3
    noisy, bits 4-7 unreadable, -1 every signal unreadable)."""
    return subtype == -1 or bool(subtype & ((1 << channel) | (1 << (channel + 4))))


@dataclass
class Reference:
    """Reference episodes of one record (signal seconds) and what is needed to explain alarms."""

    duration_s: float
    episodes: dict[str, list[Interval]]  # scored alarm type -> episodes (VF overlaps dropped)
    info: dict[str, list[Interval]]  # informational: "afl", "vt", "v_runs"
    vf: list[Interval]
    rhythm_t: list[float] = field(default_factory=list)
    rhythm: list[str] = field(default_factory=list)
    noise: list[Interval] = field(default_factory=list)  # lead 0 marked noisy or unreadable
    beat_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    beat_sym: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U1"))

    def rhythm_at(self, t: float) -> str:
        k = bisect.bisect_right(self.rhythm_t, t) - 1
        return self.rhythm[k] if k >= 0 else "?"

    def rhythms_in(self, span: Interval) -> list[str]:
        """Rhythm labels in force at some time of ``span``, in order."""
        a = bisect.bisect_right(self.rhythm_t, span[0]) - 1
        b = bisect.bisect_right(self.rhythm_t, span[1])
        return list(dict.fromkeys(self.rhythm[max(a, 0) : b])) or ["?"]

    def noisy_at(self, span: Interval) -> bool:
        return any(overlaps(span, n) for n in self.noise)

    def ectopy(self, span: Interval) -> tuple[float, float]:
        """Fractions of the reference beats in ``span`` that are AAMI V (V, E) and S (A, a, J, S)."""
        m = (self.beat_t >= span[0]) & (self.beat_t <= span[1])
        sym = self.beat_sym[m]
        if not len(sym):
            return math.nan, math.nan
        return float(np.isin(sym, list(V_CLASS)).mean()), float(np.isin(sym, list(S_CLASS)).mean())


def reference_from_annotations(
    sample: Sequence[int],
    symbol: Sequence[str],
    aux: Sequence[str],
    subtype: Sequence[int],
    fs: float,
    duration_s: float,
    cfg: AlarmConfig,
) -> Reference:
    """Reference episodes of every scored alarm type from WFDB annotation fields; see the docstring."""
    t = np.asarray(sample, dtype=np.float64) / fs
    aux = [a.rstrip("\x00").strip() for a in aux]
    beat = np.array([s in BEAT_SYMBOLS for s in symbol], dtype=bool)
    bt = t[beat]
    bsym = [s for s, k in zip(symbol, beat, strict=True) if k]
    rk = [k for k, a in enumerate(aux) if symbol[k] == "+" and a.startswith("(")]
    rhythm_t, rhythm = [float(t[k]) for k in rk], [aux[k][1:] for k in rk]
    spans = label_spans(rhythm_t, rhythm, duration_s)
    vf, start = [], None
    for tk, s in zip(t, symbol, strict=True):
        if s == "[":
            start = float(tk)
        elif s == "]" and start is not None:
            vf.append((start, float(tk)))
            start = None
    if start is not None:
        vf.append((start, duration_s))
    nk = [k for k, s in enumerate(symbol) if s == "~"]
    noisy = [noise_subtype_marks(int(subtype[k])) for k in nk]
    noise = label_spans([float(t[k]) for k in nk], noisy, duration_s).get(True, [])
    v_runs = beat_runs(bt, bsym, V_CLASS, math.ceil(cfg.ventricular_run.threshold))
    vt = spans.get("VT", [])
    v_times = bt[np.isin(np.asarray(bsym, dtype="<U1"), list(V_CLASS))]
    episodes = {
        "irregular_rhythm": spans.get("AFIB", []),
        "atrial_fibrillation": spans.get("AFIB", []),
        "tachycardia": hr_episodes(bt, cfg.tachycardia.threshold, True, cfg.tachycardia.condition_delay_s,
                                   duration_s, cfg.tachycardia.clear_delay_s),
        "bradycardia": hr_episodes(bt, cfg.bradycardia.threshold, False, cfg.bradycardia.condition_delay_s,
                                   duration_s, cfg.bradycardia.clear_delay_s),
        "pause": long_rr(bt, cfg.pause.threshold),
        "asystole": long_rr(bt, cfg.asystole.threshold),
        "ventricular_run": merge(v_runs + vt),
        "ectopy": count_episodes(v_times, ECTOPY_WINDOW_S, cfg.ectopy.threshold, cfg.ectopy.clear_delay_s),
    }  # fmt: skip
    episodes = {k: [e for e in v if not any(overlaps(e, f) for f in vf)] for k, v in episodes.items()}
    info = {"afl": spans.get("AFL", []), "vt": vt, "v_runs": v_runs}
    return Reference(
        duration_s, episodes, info, vf, rhythm_t, rhythm, noise, bt, np.asarray(bsym, dtype="<U1")
    )


def load_reference(path: Path, cfg: AlarmConfig) -> Reference:
    """:func:`reference_from_annotations` of WFDB record ``path`` (``<path>.atr``)."""
    import wfdb

    header = wfdb.rdheader(str(path))
    a = wfdb.rdann(str(path), "atr")
    aux = a.aux_note or [""] * len(a.sample)
    sub = a.subtype if a.subtype is not None else np.zeros(len(a.sample), dtype=int)
    return reference_from_annotations(
        a.sample, a.symbol, aux, sub, float(a.fs), header.sig_len / header.fs, cfg
    )


# ---------------------------------------------------------------------------------------------
# Alarms from the monitor


@dataclass
class Raised:
    """One raised alarm: raise time, end of its active span (clear, or the record's end)."""

    alarm: str
    t: float
    end: float
    value: float | None = None
    cleared: bool = False

    @property
    def span(self) -> Interval:
        return (self.t, self.end)


def alarm_spans(events: Iterable[tuple[float, str, AlarmState, float | None]], end_s: float) -> list[Raised]:
    """Raised alarms with their active spans from ``(time, alarm, state, value)`` events in time order."""
    out: list[Raised] = []
    open_: dict[str, Raised] = {}
    for t, alarm, state, value in events:
        if state is AlarmState.RAISED:
            r = open_.get(alarm)
            if r is not None:  # raised again without a clear: close the old span there
                r.end = t
            open_[alarm] = Raised(alarm, t, end_s, value)
            out.append(open_[alarm])
        elif state is AlarmState.CLEARED and alarm in open_:
            r = open_.pop(alarm)
            r.end, r.cleared = t, True
    return out


@dataclass
class Replay:
    """What the monitor said about one record."""

    events: list[tuple[float, str, AlarmState, float | None]]  # (signal s, alarm, state, value)
    suppressed: Counter
    duration_s: float
    frames: int
    dropped: int
    gaps: int
    wall_s: float


def replay_alarms(
    transport: ReplayTransport, config: Config, ack_after_s: float = 10.0, networks: Networks | None = None
) -> tuple[Monitor, list[tuple[float, str, AlarmState, float | None]]]:
    """Run the single-device replay ``transport`` (``speed=0``) through a :class:`Monitor` on the
    signal clock, ticking every ``monitor.tick_s`` of signal and acknowledging latched alarms
    ``ack_after_s`` after their raise; returns the monitor and its alarm events as ``(signal seconds
    since the recording's start, alarm, state, value)``, in time order."""
    alerts: list[Alert] = []
    clock = [0.0]
    mon = Monitor(
        config,
        lambda m: alerts.append(m) if isinstance(m, Alert) else None,
        clock=lambda: clock[0],
        networks=networks,
    )
    latched = {n for n, r in config.alarms.rules().items() if r.latching}
    acks: list[tuple[float, str, str]] = []  # (due, device, alarm)
    seen = 0

    def tick() -> None:
        nonlocal seen
        mon.tick()
        for a in alerts[seen:]:
            if a.state is AlarmState.RAISED and a.alarm in latched:
                acks.append((a.device_time_us * 1e-6 + ack_after_s, a.device, a.alarm))
        now = mon.now()
        for due, dev, alarm in [x for x in acks if x[0] <= now]:
            acks.remove((due, dev, alarm))
            alerts.extend(mon.engine.command(dev, alarm, "acknowledge", now))
        seen = len(alerts)

    async def drive() -> None:
        next_tick = -math.inf
        async for item in transport:
            if isinstance(item, Received):
                f = item.frame  # arrives when its last sample is acquired; the clock is the signal's
                clock[0] = f.timestamp_us * 1e-6 + f.n_samples / f.sample_rate
                item = Received(f, item.source, clock[0])
            mon.handle(item)
            if clock[0] >= next_tick:
                next_tick = clock[0] + mon.tick_s
                tick()
        tick()

    asyncio.run(drive())
    s = mon.session(transport.device_id)
    anchor = s.anchor if s is not None else 0.0  # session time of signal sample 0
    events = sorted(
        ((a.device_time_us * 1e-6 - anchor, a.alarm, a.state, a.value.get("value")) for a in alerts),
        key=lambda e: e[0],
    )
    return mon, events


def replay_monitor(
    path: Path, config: Config | None = None, ack_after_s: float = 10.0, networks: Networks | None = None
) -> Replay:
    """Replay lead 0 of WFDB record ``path`` through a :class:`Monitor` (with ``networks``: fresh ones
    per record); see the module docstring."""
    config = config or Config()
    rec = read_wfdb(path, channels=[0], annotator=None)
    t0 = time.perf_counter()
    mon, events = replay_alarms(ReplayTransport(rec, device_id=1, speed=0), config, ack_after_s, networks)
    s = mon.session(1)
    return Replay(
        events=events,
        suppressed=Counter(mon.engine.suppressed),
        duration_s=rec.duration_s,
        frames=mon.stats.frames_processed,
        dropped=mon.stats.frames_dropped,
        gaps=0 if s is None else s.gaps,
        wall_s=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Score:
    """Counts of one alarm type over one or more records (summable)."""

    episodes: int = 0
    detected: int = 0  # by a raise in [onset, end + tol], or already active at onset
    already_active: int = 0
    raised: int = 0
    true: int = 0
    false: int = 0
    during_vf: int = 0
    delays: list[float] = field(default_factory=list)
    ref_s: float = 0.0  # reference episode time
    alarm_s: float = 0.0  # time under an active alarm
    both_s: float = 0.0  # reference time under an active alarm

    def __iadd__(self, o: Score) -> Score:
        for k in ("episodes", "detected", "already_active", "raised", "true", "false", "during_vf",
                  "ref_s", "alarm_s", "both_s"):  # fmt: skip
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.delays += o.delays
        return self

    @property
    def se(self) -> float:
        return self.detected / self.episodes if self.episodes else math.nan

    @property
    def ppv(self) -> float:
        n = self.true + self.false
        return self.true / n if n else math.nan

    @property
    def dur_se(self) -> float:
        return self.both_s / self.ref_s if self.ref_s else math.nan

    @property
    def dur_ppv(self) -> float:
        return self.both_s / self.alarm_s if self.alarm_s else math.nan

    def delay(self, q: float) -> float:
        return float(np.percentile(self.delays, q)) if self.delays else math.nan


def score(
    episodes: Sequence[Interval], raised: Sequence[Raised], tol: float, exclude: Sequence[Interval] = ()
) -> tuple[Score, list[str]]:
    """Score ``raised`` alarms of one type against reference ``episodes``; see the module docstring.

    Returns the :class:`Score` and one verdict per alarm: "true", "false" or "vf" (raised within
    ``tol`` of an ``exclude`` span and matching no episode).
    """
    s = Score(episodes=len(episodes), raised=len(raised))
    for on, end in episodes:
        hits = [r.t for r in raised if on <= r.t <= end + tol]
        if any(r.t < on <= r.end for r in raised):
            s.detected += 1
            s.already_active += 1
        elif hits:
            s.detected += 1
            s.delays.append(min(hits) - on)
    verdicts = []
    for r in raised:
        if any(overlaps(r.span, (on - tol, end + tol)) for on, end in episodes):
            s.true += 1
            verdicts.append("true")
        elif any(overlaps((r.t, r.t), (a - tol, b + tol)) for a, b in exclude):
            s.during_vf += 1
            verdicts.append("vf")
        else:
            s.false += 1
            verdicts.append("false")
    spans = [r.span for r in raised]
    s.ref_s, s.alarm_s, s.both_s = total(episodes), total(spans), overlap_s(episodes, spans)
    return s, verdicts


@dataclass
class Listed:
    """One alarm worth listing (a false physiological alarm or a technical one) and the reference
    around it: over ``window`` (the tolerance before a physiological raise; a technical alarm's
    condition delay before its raise to its clear), the rhythms in force, whether lead 0 was marked
    noisy, and the fractions of V and S beats."""

    record: str
    alarm: str
    t: float
    duration_s: float
    rhythm: str  # at the raise
    window: Interval
    rhythms: list[str]
    ref_noise: bool
    v_frac: float
    s_frac: float
    value: float | None


def make_listed(name: str, r: Raised, ref: Reference, window: Interval) -> Listed:
    window = (max(0.0, window[0]), min(ref.duration_s, window[1]))
    v, s = ref.ectopy(window)
    return Listed(name, r.alarm, r.t, r.end - r.t, ref.rhythm_at(r.t), window, ref.rhythms_in(window),
                  ref.noisy_at(window), v, s, r.value)  # fmt: skip


@dataclass
class RecordResult:
    name: str
    duration_s: float
    scores: dict[str, Score]
    reference_counts: dict[str, int]  # informational: afl, vt, v_runs
    afl_flagged: int  # AFL episodes with an AF alarm raised or active in them
    technical: Counter
    suppressed: Counter
    other: Counter  # raised alarms of types not scored here
    listed: list[Listed]
    replay: Replay


def evaluate_record(
    path: Path, config: Config | None = None, ack_after_s: float = 10.0, networks: Networks | None = None
) -> RecordResult:
    """Replay one record and score every alarm type against its reference annotations."""
    config = config or Config()
    cfg = config.alarms
    ref = load_reference(path, cfg)
    rp = replay_monitor(path, config, ack_after_s, networks)
    raised = alarm_spans(rp.events, rp.duration_s)
    scores, out = {}, []
    for alarm in SCORED:
        mine = [r for r in raised if r.alarm == alarm]
        tol = tolerance(alarm, cfg)
        sc, verdicts = score(ref.episodes[alarm], mine, tol, ref.vf)
        scores[alarm] = sc
        out += [make_listed(path.name, r, ref, (r.t - tol, r.t)) for r, v in zip(mine, verdicts, strict=True)
                if v == "false"]  # fmt: skip
    technical, other = Counter(), Counter()
    for r in raised:
        if r.alarm in SCORED:
            continue
        if is_technical(r.alarm):
            technical[r.alarm] += 1
            delay = getattr(cfg, r.alarm).condition_delay_s
            out.append(make_listed(path.name, r, ref, (r.t - delay, r.end)))
        else:
            other[r.alarm] += 1
    af = [r.span for r in raised if r.alarm in ("irregular_rhythm", "atrial_fibrillation")]
    afl = ref.info["afl"]
    return RecordResult(
        name=path.name,
        duration_s=rp.duration_s,
        scores=scores,
        reference_counts={k: len(v) for k, v in ref.info.items()},
        afl_flagged=sum(any(overlaps(e, s) for s in af) for e in afl),
        technical=technical,
        suppressed=rp.suppressed,
        other=other,
        listed=sorted(out, key=lambda x: x.t),
        replay=rp,
    )


# ---------------------------------------------------------------------------------------------
# Report


def _f(x: float, spec: str = ".2f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def _cell(s: Score) -> str:
    if not s.episodes and not s.raised:
        return "-"
    return f"{s.detected}/{s.episodes} f{s.false}" + (f" v{s.during_vf}" if s.during_vf else "")


def print_per_record(results: Sequence[RecordResult]) -> None:
    print("\nPer record (cells: detected/reference episodes, f = false alarms, v = raised during VF):")
    cols = [SHORT[a] for a in SCORED]
    head = f"{'rec':>4} {'min':>5} " + " ".join(f"{c:>11}" for c in cols)
    print(head + f" {'Vrun ref':>8} {'VT ref':>6} {'lead_off':>8} {'poor_sig':>8} {'suppr':>5}")
    for r in results:
        cells = " ".join(f"{_cell(r.scores[a]):>11}" for a in SCORED)
        print(
            f"{r.name:>4} {r.duration_s / 60:5.1f} {cells} {r.reference_counts['v_runs']:8d} "
            f"{r.reference_counts['vt']:6d} {r.technical['lead_off']:8d} {r.technical['poor_signal']:8d} "
            f"{sum(r.suppressed.values()):5d}"
        )


def summarise(results: Sequence[RecordResult], cfg: AlarmConfig, networks: Sequence[str] = ()) -> dict:
    """Totals over records, per alarm type (a JSON-ready dict); ``networks``: the tasks that ran."""
    hours = sum(r.duration_s for r in results) / 3600
    out: dict = {
        "records": [r.name for r in results],
        "hours": hours,
        "networks": list(networks),
        "alarms": {},
    }
    for alarm in SCORED:
        s = Score()
        for r in results:
            s += r.scores[alarm]
        false_by_rhythm = Counter(x.rhythm for r in results for x in r.listed if x.alarm == alarm)
        out["alarms"][alarm] = {
            "tolerance_s": tolerance(alarm, cfg),
            "needs_networks": alarm in NEEDS_NETWORKS,
            "episodes": s.episodes,
            "detected": s.detected,
            "already_active": s.already_active,
            "se": s.se,
            "raised": s.raised,
            "true": s.true,
            "false": s.false,
            "during_vf": s.during_vf,
            "ppv": s.ppv,
            "false_per_hour": s.false / hours if hours else math.nan,
            "delay_median_s": s.delay(50),
            "delay_p90_s": s.delay(90),
            "duration_se": s.dur_se,
            "duration_ppv": s.dur_ppv,
            "reference_s": s.ref_s,
            "alarm_s": s.alarm_s,
            "suppressed": sum(r.suppressed[alarm] for r in results),
            "false_by_rhythm": dict(false_by_rhythm.most_common()),
        }
    out["reference"] = {k: sum(r.reference_counts[k] for r in results) for k in ("afl", "vt", "v_runs")}
    out["afl_flagged"] = sum(r.afl_flagged for r in results)
    tech = Counter()
    for r in results:
        tech += r.technical
    out["technical"] = {
        a: {
            "raised": tech[a],
            "per_hour": tech[a] / hours if hours else math.nan,
            "suppressed": sum(r.suppressed[a] for r in results),
        }
        for a in TECHNICAL
    }
    other = Counter()
    for r in results:
        other += r.other
    out["other"] = dict(other)
    out["suppressed"] = dict(sum((r.suppressed for r in results), Counter()))
    phys_false = sum(out["alarms"][a]["false"] for a in SCORED)
    out["physiological_false_per_hour"] = phys_false / hours if hours else math.nan
    return out


def print_totals(t: dict, results: Sequence[RecordResult], list_all: bool) -> None:
    n, hours = len(t["records"]), t["hours"]
    print(f"\nTotals over {n} records, {hours:.2f} h monitored ({hours * 60:.0f} min of signal):")
    print(
        f"{'alarm':<20} {'tol_s':>5} {'ref':>4} {'det':>4} {'Se':>5} {'raised':>6} {'true':>4} "
        f"{'false':>5} {'VF':>3} {'+P':>5} {'FA/h':>5} {'delay_med':>9} {'delay_p90':>9} {'suppr':>5}"
    )
    for alarm, a in t["alarms"].items():
        if a["needs_networks"] and not t["networks"]:
            print(
                f"{alarm:<20} {a['tolerance_s']:5.0f} {a['episodes']:4d}    - needs the networks (--networks)"
            )
            continue
        if alarm == "irregular_rhythm" and "ecg-rhythm" in t["networks"]:
            print(
                f"{alarm:<20} {a['tolerance_s']:5.0f} {a['episodes']:4d}    - "
                "stands down for atrial_fibrillation"
            )
            continue
        print(
            f"{alarm:<20} {a['tolerance_s']:5.0f} {a['episodes']:4d} {a['detected']:4d} {_f(a['se']):>5} "
            f"{a['raised']:6d} {a['true']:4d} {a['false']:5d} {a['during_vf']:3d} {_f(a['ppv']):>5} "
            f"{_f(a['false_per_hour']):>5} {_f(a['delay_median_s'], '.1f'):>9} "
            f"{_f(a['delay_p90_s'], '.1f'):>9} {a['suppressed']:5d}"
        )
    af_alarm = af_alarm_of(t)
    af = t["alarms"][af_alarm]
    print(
        f"AF ({af_alarm} vs (AFIB): duration Se {_f(af['duration_se'])} "
        f"({af['reference_s'] / 60:.1f} min of AF), duration +P {_f(af['duration_ppv'])} "
        f"({af['alarm_s'] / 60:.1f} min under an AF alarm); {af['already_active']} episode(s) found the "
        f"alarm already active"
    )
    print(
        f"AFL (informational): {t['reference']['afl']} episodes, {t['afl_flagged']} with an AF alarm in them"
    )
    for a, v in t["technical"].items():
        if v["raised"] or a in ("lead_off", "poor_signal"):
            print(f"technical {a}: {v['raised']} raised ({_f(v['per_hour'])}/h)")
    if t["other"]:
        print("other alarms raised: " + ", ".join(f"{k} {v}" for k, v in t["other"].items()))
    print("suppressed by the quality gate: " + (", ".join(f"{k} {v}" for k, v in t["suppressed"].items())
                                                 or "none"))  # fmt: skip
    print("false alarms by reference rhythm at the raise:")
    for alarm, a in t["alarms"].items():
        if a["false"]:
            by = ", ".join(f"({k} {v}" for k, v in a["false_by_rhythm"].items())
            recs = Counter(x.record for r in results for x in r.listed if x.alarm == alarm)
            where = ", ".join(f"{k} {v}" for k, v in recs.most_common())
            print(f"  {alarm}: {by}; records: {where}")
    listed = [x for r in results for x in r.listed if list_all or is_technical(x.alarm)]
    if listed:
        print("technical alarms" + (" and false physiological alarms" if list_all else "") + ":")
        for x in listed:
            v = "" if x.value is None else f" value {x.value:.3g}"
            rh = ",".join(f"({k}" for k in x.rhythms)
            print(
                f"  {x.record} {x.alarm:<16} at {x.t:7.1f} s for {x.duration_s:6.1f} s{v}; reference over "
                f"{x.window[0]:.0f}-{x.window[1]:.0f} s: {rh}, V {_f(100 * x.v_frac, '.0f')} % "
                f"S {_f(100 * x.s_frac, '.0f')} %, lead 0 noisy: {'yes' if x.ref_noise else 'no'}"
            )


def af_alarm_of(t: dict) -> str:
    """The alarm that screens for AF in run ``t``: the rhythm network's, else the COSEn rule's."""
    return "atrial_fibrillation" if "ecg-rhythm" in t["networks"] else "irregular_rhythm"


def summary_line(t: dict) -> str:
    af, tech = t["alarms"][af_alarm_of(t)], t["technical"]
    n_tech = sum(v["raised"] for v in tech.values())
    hours = t["hours"]
    return (
        f"summary: {len(t['records'])} records, {hours:.2f} h: AF episodes Se {_f(af['se'])} "
        f"({af['detected']}/{af['episodes']}), alarm +P {_f(af['ppv'])}, "
        f"duration Se {_f(af['duration_se'])}; "
        f"physiological false alarms {_f(t['physiological_false_per_hour'])}/h; technical alarms "
        f"{n_tech / hours if hours else math.nan:.2f}/h; suppressed {sum(t['suppressed'].values())}"
    )


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, AlarmState):
        return x.value
    return x


def to_json(results: Sequence[RecordResult], totals: dict, args: dict) -> dict:
    recs = []
    for r in results:
        recs.append({
            "record": r.name,
            "duration_s": r.duration_s,
            "wall_s": r.replay.wall_s,
            "frames": r.replay.frames,
            "dropped": r.replay.dropped,
            "scores": {a: {**asdict(s), "se": s.se, "ppv": s.ppv} for a, s in r.scores.items()},
            "reference_counts": r.reference_counts,
            "afl_flagged": r.afl_flagged,
            "technical": dict(r.technical),
            "suppressed": dict(r.suppressed),
            "other": dict(r.other),
            "listed": [asdict(x) for x in r.listed],
            "events": [list(e) for e in r.replay.events],
        })  # fmt: skip
    return _jsonable({"args": args, "totals": totals, "records": recs})


def run_all(
    root: Path,
    names: Sequence[str],
    config: Config,
    ack_after: float,
    networks: str,
    fold_models: Path | None = None,
    paced: Sequence[str] = (),
) -> tuple[list[RecordResult], dict, float]:
    """Evaluate ``names``; ``networks``: "none", "zoo" (the shipped models) or a model folder.

    ``fold_models``: a folder of ``<record>/<network>.*`` fold models (``bench/beat_folds.py``,
    ``bench/rhythm_folds.py``): each record is then read by the networks that never saw it; a record
    without one uses the shipped network (said on stderr)."""
    t0 = time.perf_counter()
    results, tasks = [], []
    for name in names:
        nets = None
        if networks != "none":
            m = config.models
            folder = None if networks == "zoo" else Path(networks)
            nets = load_networks(
                folder, m.tasks(), m.precision, "cpu", 1, config.alarms.poor_signal.threshold
            )
            if name in paced:
                nets.paced = ("1",)  # the replayed device, as a [[devices]] entry with paced = true
            for task in ("ecg-beats", "ecg-rhythm") if fold_models is not None else ():
                fold = fold_models / name / task
                if task not in nets.nets:
                    continue
                if fold.with_suffix(".card.json").exists():
                    if not nets.load(task, fold, m.precision, "cpu", 1, **m.tasks()[task]):
                        raise SystemExit(f"fold model {fold} refused")
                    print(f"  {name}: {task} fold model (never saw {name})", file=sys.stderr)
                else:
                    print(f"  {name}: no {task} fold model; the shipped one", file=sys.stderr)
            tasks = list(nets.nets)
        r = evaluate_record(root / name, config, ack_after, nets)
        results.append(r)
        print(f"  {name}: {r.replay.wall_s:.1f} s, {len(r.replay.events)} alarm events", file=sys.stderr)
    return results, summarise(results, config.alarms, tasks), time.perf_counter() - t0


def print_comparison(rule: dict, net: dict) -> None:
    """Rule-only monitor against the monitor with networks, per alarm: what the networks gain."""
    nets = ", ".join(net["networks"]) or "none loaded"
    print(f"\nWhat the networks ({nets}) gain over the rule-only monitor "
          f"({net['hours']:.2f} h, {len(net['records'])} records):")  # fmt: skip
    print(f"{'alarm':<28} {'ref':>4} | {'rule-only: det':>14} {'Se':>5} {'false':>5} {'FA/h':>5} "
          f"| {'networks: det':>13} {'Se':>5} {'false':>5} {'FA/h':>5}")  # fmt: skip

    def cells(a: dict | None) -> str:
        if a is None:
            return f"{'cannot raise':>14} {'-':>5} {'-':>5} {'-':>5}"
        return f"{a['detected']:>14d} {_f(a['se']):>5} {a['false']:5d} {_f(a['false_per_hour']):>5}"

    rows = [("AF screen", af_alarm_of(rule), af_alarm_of(net))]
    rows += [(a, a, a) for a in SCORED if a not in ("irregular_rhythm", "atrial_fibrillation")]
    for label, ra, na in rows:
        r = None if ra in NEEDS_NETWORKS else rule["alarms"][ra]
        n = net["alarms"][na]
        shown = label if ra == na else f"{label} ({ra} -> {na})"
        print(f"{shown:<28} {n['episodes']:4d} | {cells(r)} | {cells(n)[1:]}")
    print(
        f"physiological false alarms/h: rule-only {_f(rule['physiological_false_per_hour'])}, "
        f"with networks {_f(net['physiological_false_per_hour'])} (ectopy is a low-priority advisory)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="root holding mitdb/ (default $VIGIL_DATA or ../shared/data)")
    p.add_argument("--records", help="comma-separated record names (default: all found)")
    p.add_argument("--ack-after", type=float, default=10.0,
                   help="acknowledge a latched alarm this many seconds after it is raised (10)")  # fmt: skip
    p.add_argument("--networks", default="none",
                   help="none (rule-only, default), zoo (the shipped models) or a model folder")  # fmt: skip
    p.add_argument("--tasks", help="networks to run, comma-separated (default: all of [models])")
    p.add_argument("--paced", default="", help="records replayed as a paced device (e.g. 102,104,107,217)")
    p.add_argument("--fold-models", "--beat-folds", type=Path,
                   help="folder of <record>/<network>.* fold models that never saw the record")  # fmt: skip
    p.add_argument("--compare", action="store_true",
                   help="run rule-only and with --networks (default zoo); print the gain")  # fmt: skip
    p.add_argument("--per-record", action="store_true", help="print the per-record table")
    p.add_argument("--list", action="store_true", help="list every false physiological alarm too")
    p.add_argument("--json", help="write the results (with every alarm event) to this file")
    a = p.parse_args(argv)
    root = data_root(a.data) / "mitdb"
    names = record_names(root, a.records)
    config = Config()
    if a.tasks:
        keep = {t.strip() for t in a.tasks.split(",")}
        unknown = keep - set(TASKS)
        if unknown:
            raise SystemExit(f"unknown network(s) {sorted(unknown)}")
        flags = {t.replace("-", "_"): t in keep for t in TASKS}
        config = dataclasses.replace(config, models=dataclasses.replace(config.models, **flags))
    if a.compare and a.networks == "none":
        a.networks = "zoo"
    rule = run_all(root, names, config, a.ack_after, "none") if a.compare else None
    paced = [n.strip() for n in a.paced.split(",") if n.strip()]
    results, totals, wall = run_all(root, names, config, a.ack_after, a.networks, a.fold_models, paced)
    print(f"records: {len(names)} ({', '.join(names)}); lead 0; default alarm settings; "
          f"latched alarms acknowledged {a.ack_after:g} s after raise; networks: "
          f"{', '.join(totals['networks']) or 'none'}")  # fmt: skip
    dropped = sum(r.replay.dropped for r in results)
    print(f"replay: {sum(r.replay.frames for r in results)} frames, {dropped} dropped, {wall:.1f} s wall")
    if a.per_record:
        print_per_record(results)
    print_totals(totals, results, a.list)
    print(summary_line(totals))
    if rule is not None:
        print_comparison(rule[1], totals)
    if a.json:
        Path(a.json).write_text(json.dumps(to_json(results, totals, vars(a)), indent=1))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
