"""The alarm engine: kernel features in, IEC 60601-1-8 style alarm events out, per device.

Each update hands the engine one :class:`Features` snapshot of a device (heart rhythm, signal
quality, EEG/EMG features, battery, optional model outputs) at device time ``features.time``; the
engine answers with the :class:`~vigil.edge.messages.Alert` events that snapshot caused. Nothing
reads a clock: every decision follows from the sequence of inputs and the times passed in, so a
replay gives the same events.

**Alarm life cycle** (one state machine per device and alarm type, configured by an
:class:`AlarmRule`):

* *Condition delay*: the raise condition (value at or beyond ``threshold``) must hold on every
  update for ``condition_delay_s`` before the alarm is RAISED.
* *Hysteresis*: once raised, the condition ends only when the value is strictly on the far side of
  ``clear_threshold`` on every update for ``clear_delay_s``. Between the two thresholds nothing
  changes, so a value hovering at the limit does not chatter.
* *Latching*: a latched alarm whose condition ended stays active (``condition_present`` False)
  until acknowledged; acknowledging it then clears it (ACKNOWLEDGED, then CLEARED). A non-latched
  alarm is CLEARED when its condition ends. Latched by default: asystole, ventricular run,
  seizure (both rules) and EMG burst: events that must be seen even if they stopped by themselves.
* *Escalation*: an active alarm not acknowledged ``escalation_after_s`` after it was raised goes up
  one priority level, once (ESCALATED; medium becomes high). Escalation ends an audio pause.
* *Acknowledge / silence* (:meth:`AlarmEngine.command`, the MQTT command topic): ``acknowledge``
  marks the alarm seen (no escalation; it clears when its condition ends, at once if already
  ended); ``silence`` pauses its audio for ``duration_s`` (SILENCED; default
  :attr:`AlarmConfig.silence_s`) without acknowledging it.
* *Supersession*: while asystole is present, pause and bradycardia are not raised (and are cleared
  if active and not latched); lead off likewise supersedes poor signal.

**Suppression (the quality gate).** Physiological alarms are judged on the snapshot's own signal
quality, with no delay:

* *lead off* (``features.lead_off`` or a GAP quality flag: non-finite samples) suppresses every
  physiological alarm, asystole included: there is no signal to judge.
* *poor signal* (``quality_score <= poor_signal.threshold``) suppresses every physiological alarm
  except asystole, pause and bradycardia on a flat ECG trace (FLAT without NOISE flagged while
  rhythm features are present, :func:`is_flat_ecg`): a flat line is what asystole looks like, so
  it is for the missing-beat alarms to call, not a reason to stay quiet. For the same reason a flat
  ECG trace gives no poor-signal verdict (the poor-signal alarm holds its state). Asystole is never
  suppressed while the quality is good. A lead fault that shows only as a flat trace (a rail)
  therefore raises asystole unless the device reports it in ``Features.lead_off``: the error is on
  the loud side.
* Technical alarms (lead off, poor signal, device lost, battery low) are never suppressed, so a
  nurse is always told why the physiological alarms went quiet.

A suppressed alarm is neither raised nor cleared and its pending delay restarts; an alarm already
active stays active (and may escalate). Each run of consecutive updates in which an inactive
alarm's raise condition holds while suppressed counts once in :attr:`AlarmEngine.suppressed` (per
alarm type, all devices) and per device, and is logged at INFO. A superseded alarm is not gated,
so it is not counted either.

*Stale data*: when ``features.time - features.last_seen`` exceeds :attr:`AlarmConfig.stale_after_s`
(see :meth:`AlarmEngine.tick`), every alarm but device lost and battery low holds its state.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from vigil.kernels.quality import QualityFlag

from .messages import AlarmState, Alert, Priority

log = logging.getLogger(__name__)

#: Keys of :attr:`Features.model` that rules read (filled by networks when they exist).
MODEL_BEAT_CLASSES = "beat_classes"  # AAMI labels ("N", "S", "V", "F", "Q") of the new beats
MODEL_SEIZURE_PROBABILITY = "seizure_probability"  # in [0, 1]
MODEL_AF_PROBABILITY = "af_probability"  # in [0, 1], of the latest rhythm window
MODEL_RHYTHM = "rhythm"  # label of the latest rhythm window ("N", "A", "O", "~"); informational
#: Probabilities a network reports every few seconds: the engine holds the latest for
#: :attr:`AlarmConfig.model_hold_s`, so snapshots between two reports keep judging it.
HELD_MODEL_VALUES = (MODEL_AF_PROBABILITY, MODEL_SEIZURE_PROBABILITY)
#: EEG band (a key of :attr:`Features.eeg_band_powers`, :data:`vigil.kernels.eeg.BANDS`) whose
#: power tracks rhythmic seizure discharges (3-8 Hz; theta is the kernel band closest to it).
SEIZURE_BAND = "theta"

_ACTIONS = {"acknowledge": "acknowledge", "ack": "acknowledge", "silence": "silence"}


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class AlarmRule:
    """Thresholds and timing of one alarm type (units: those of the alarm's value, seconds).

    The alarm is raised when the value is at or beyond ``threshold`` (above it for upper limits,
    below it for lower limits) for ``condition_delay_s``; its condition ends when the value is
    strictly on the far side of ``clear_threshold`` (None: ``threshold``) for ``clear_delay_s``.
    ``escalation_after_s`` (None: never) raises the priority one level if unacknowledged that long.
    ``priority`` also accepts its string value ("high", "medium", "low") for TOML.
    """

    enabled: bool = True
    priority: Priority = Priority.MEDIUM
    threshold: float = math.nan
    clear_threshold: float | None = None
    condition_delay_s: float = 0.0
    clear_delay_s: float = 0.0
    latching: bool = False
    escalation_after_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.priority, Priority):
            object.__setattr__(self, "priority", Priority(self.priority))
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold!r}")
        if self.clear_threshold is not None and not math.isfinite(self.clear_threshold):
            raise ValueError(f"clear_threshold must be finite or None, got {self.clear_threshold!r}")
        for name in ("condition_delay_s", "clear_delay_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        e = self.escalation_after_s
        if e is not None and not (math.isfinite(e) and e > 0):
            raise ValueError(f"escalation_after_s must be > 0 or None, got {e!r}")

    @property
    def clear_level(self) -> float:
        return self.threshold if self.clear_threshold is None else self.clear_threshold


@dataclass(frozen=True)
class _Spec:
    """What an alarm type measures: direction of its limit, unit, technical or physiological."""

    upper: bool  # True: raised at or above the threshold; False: at or below
    unit: str
    technical: bool
    detail: str  # message detail; {v} value, {t} threshold, {d} condition delay


_SPECS: dict[str, _Spec] = {
    "device_lost": _Spec(True, "s", True, "no data for {v:.1f} s"),
    "battery_low": _Spec(False, "%", True, "battery {v:.0f} % (limit {t:g} %)"),
    "lead_off": _Spec(True, "", True, "lead off / no signal; physiological alarms suppressed"),
    "poor_signal": _Spec(
        False, "score", True, "signal quality {v:.2f} (limit {t:g}); physiological alarms suppressed"
    ),
    "asystole": _Spec(True, "s", False, "no beat for {v:.1f} s"),
    "ventricular_run": _Spec(True, "beats", False, "{v:.0f} consecutive ventricular beats"),
    "ectopy": _Spec(True, "PVC/min", False, "{v:.0f} ventricular ectopic beats in the last minute"),
    "bradycardia": _Spec(False, "bpm", False, "HR {v:.0f} bpm (limit {t:g})"),
    "tachycardia": _Spec(True, "bpm", False, "HR {v:.0f} bpm (limit {t:g})"),
    "pause": _Spec(True, "s", False, "no beat for {v:.1f} s"),
    "irregular_rhythm": _Spec(
        True, "COSEn", False, "COSEn {v:.2f} at or above {t:g} for {d:g} s (AF screening)"
    ),
    "atrial_fibrillation": _Spec(
        True, "probability", False, "AF probability {v:.2f} for {d:g} s (rhythm network)"
    ),
    "seizure": _Spec(True, "x baseline", False, "EEG line length / theta amplitude {v:.1f}x baseline"),
    "seizure_model": _Spec(True, "probability", False, "seizure probability {v:.2f}"),
    "emg_burst": _Spec(True, "x baseline", False, "EMG RMS {v:.1f}x baseline for {d:g} s"),
}


def is_upper_limit(alarm: str) -> bool:
    """True when ``alarm`` is raised at or above its threshold, False when at or below (KeyError: unknown)."""
    return _SPECS[alarm].upper


def unit_of(alarm: str) -> str:
    """Unit of the value ``alarm``'s thresholds compare ("bpm", "s", "score", ...; "" for lead off)."""
    return _SPECS[alarm].unit


def is_technical(alarm: str) -> bool:
    """True for technical (equipment) alarms, which the quality gate never suppresses."""
    return _SPECS[alarm].technical


#: Alarms a flat ECG trace does not suppress: those a missing beat raises.
FLAT_TRACE_ALARMS = ("asystole", "pause", "bradycardia")
#: Alarm -> the alarms it supersedes while its condition is present.
SUPERSEDES: dict[str, tuple[str, ...]] = {
    "asystole": ("pause", "bradycardia"),
    "lead_off": ("poor_signal",),
}


@dataclass(frozen=True)
class AlarmConfig:
    """Every alarm type's :class:`AlarmRule` (field name = alarm name) and the engine's settings.

    Rules are evaluated in field order (a superseding alarm before those it supersedes). Clinical
    defaults; limits are inclusive. Value of each rule:

    * ``device_lost``: seconds since the newest sample (``time - last_seen``).
    * ``battery_low``: battery charge, %.
    * ``lead_off``: 1 when the lead is off (``Features.lead_off`` or a GAP flag), else 0.
    * ``poor_signal``: quality score in [0, 1]; its threshold also closes the quality gate.
    * ``asystole``, ``pause``: seconds since the last beat.
    * ``ventricular_run``: longest run of consecutive V beats (beat network only).
    * ``ectopy``: V beats in the last 60 s (beat network only; measured once the network has
      labelled the device's beats for 60 s).
    * ``bradycardia``, ``tachycardia``: heart rate, bpm.
    * ``irregular_rhythm``: COSEn of the RR window (needs >= ``min_rr_for_af`` intervals); not
      measured on a device the rhythm network reads (``atrial_fibrillation`` takes over).
    * ``atrial_fibrillation``: the rhythm network's P(AF), mean of its latest three 10-s windows
      (held ``model_hold_s``).
    * ``seizure``: EEG line length, or the square root of :data:`SEIZURE_BAND` power, over the
      device's own baseline (whichever is higher; the square root makes a power ratio an amplitude
      ratio, like that of line length).
    * ``seizure_model``: the seizure network's probability (held ``model_hold_s``).
    * ``emg_burst``: EMG RMS over the device's own baseline.
    """

    device_lost: AlarmRule = AlarmRule(
        priority=Priority.MEDIUM, threshold=10.0, clear_threshold=2.0, escalation_after_s=120.0
    )
    battery_low: AlarmRule = AlarmRule(priority=Priority.LOW, threshold=20.0, clear_threshold=25.0)
    lead_off: AlarmRule = AlarmRule(
        priority=Priority.MEDIUM,
        threshold=1.0,
        condition_delay_s=5.0,
        clear_delay_s=5.0,
        escalation_after_s=300.0,
    )
    poor_signal: AlarmRule = AlarmRule(
        priority=Priority.LOW, threshold=0.3, clear_threshold=0.5, condition_delay_s=10.0, clear_delay_s=5.0
    )
    asystole: AlarmRule = AlarmRule(priority=Priority.HIGH, threshold=4.0, latching=True)
    ventricular_run: AlarmRule = AlarmRule(priority=Priority.HIGH, threshold=3.0, latching=True)
    ectopy: AlarmRule = AlarmRule(
        priority=Priority.LOW, threshold=10.0, clear_threshold=6.0, condition_delay_s=0.0, clear_delay_s=60.0
    )
    bradycardia: AlarmRule = AlarmRule(
        priority=Priority.HIGH, threshold=40.0, clear_threshold=45.0, condition_delay_s=5.0, clear_delay_s=3.0
    )
    tachycardia: AlarmRule = AlarmRule(
        priority=Priority.MEDIUM,
        threshold=150.0,
        clear_threshold=140.0,
        condition_delay_s=5.0,
        clear_delay_s=3.0,
        escalation_after_s=120.0,
    )
    pause: AlarmRule = AlarmRule(priority=Priority.MEDIUM, threshold=2.5, clear_delay_s=5.0)
    irregular_rhythm: AlarmRule = AlarmRule(
        priority=Priority.MEDIUM,
        threshold=-1.4,
        clear_threshold=-1.6,
        condition_delay_s=30.0,
        clear_delay_s=30.0,
    )
    atrial_fibrillation: AlarmRule = AlarmRule(
        priority=Priority.MEDIUM,
        threshold=0.6,
        clear_threshold=0.4,
        condition_delay_s=30.0,
        clear_delay_s=30.0,
    )
    seizure: AlarmRule = AlarmRule(
        priority=Priority.HIGH,
        threshold=3.0,
        clear_threshold=2.0,
        condition_delay_s=10.0,
        clear_delay_s=10.0,
        latching=True,
    )
    seizure_model: AlarmRule = AlarmRule(
        priority=Priority.HIGH,
        threshold=0.8,
        clear_threshold=0.5,
        condition_delay_s=5.0,
        clear_delay_s=10.0,
        latching=True,
    )
    emg_burst: AlarmRule = AlarmRule(
        priority=Priority.HIGH,
        threshold=5.0,
        clear_threshold=3.0,
        condition_delay_s=10.0,
        clear_delay_s=5.0,
        latching=True,
    )
    #: Data older than this (s) leaves every alarm but device_lost and battery_low as it is.
    stale_after_s: float = 3.0
    #: Default audio pause of the ``silence`` command (s).
    silence_s: float = 120.0
    #: Fewest RR intervals in the window for a COSEn verdict.
    min_rr_for_af: int = 12
    #: A network's latest probability (:data:`HELD_MODEL_VALUES`) stands this long (s) after its report.
    model_hold_s: float = 25.0
    #: Baselines (EEG, EMG): median of the first ``baseline_learn_s`` of accepted values, then an
    #: exponential moving average with time constant ``baseline_tau_s``.
    baseline_learn_s: float = 60.0
    baseline_tau_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("stale_after_s", "silence_s", "baseline_learn_s", "baseline_tau_s", "model_hold_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v!r}")

    def rules(self) -> dict[str, AlarmRule]:
        """Every alarm type's rule, enabled or not, in evaluation order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in _SPECS}


#: Alarm types in evaluation order.
ALARMS: tuple[str, ...] = tuple(AlarmConfig().rules())


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Features:
    """One device's kernel outputs at device time ``time`` (s): what the rules look at.

    NaN (or an empty mapping) means "not measured"; a rule whose value is not measured holds its
    state. ``last_seen``: device time of the newest sample (None: ``time``). ``quality_flags``:
    :class:`~vigil.kernels.quality.QualityFlag` bits of the latest quality window. ``lead_off``:
    the device's lead-off bit, or non-finite samples in the newest chunk (quicker than the quality
    window's GAP flag). ``in_pause`` is informational: the pause rule uses ``since_last_beat_s``
    against its own threshold. ``eeg_band_powers``: band name -> power (names of
    :data:`vigil.kernels.eeg.BANDS`). ``model``: outputs of networks, see :data:`MODEL_BEAT_CLASSES`
    and :data:`MODEL_SEIZURE_PROBABILITY`.
    """

    time: float
    last_seen: float | None = None
    hr_bpm: float = math.nan
    since_last_beat_s: float = math.nan
    in_pause: bool = False
    af_cosen: float = math.nan
    n_rr: int = 0
    quality_score: float = math.nan
    quality_flags: int = 0
    lead_off: bool = False
    eeg_line_length: float = math.nan
    eeg_band_powers: Mapping[str, float] = field(default_factory=dict)
    emg_rms: float = math.nan
    battery_pct: float = math.nan
    model: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.time):
            raise ValueError(f"time must be finite, got {self.time!r}")

    @property
    def age_s(self) -> float:
        """Seconds since the newest sample."""
        return 0.0 if self.last_seen is None else self.time - self.last_seen

    @classmethod
    def from_rhythm(cls, time: float, rhythm: Any, report_delay_s: float = 0.5, **kwargs: Any) -> Features:
        """Features from a :class:`~vigil.kernels.rhythm.RhythmSummary` plus any other fields.

        The heart rate is that of the latest RR interval, capped at ``60 / (since_last_beat_s -
        report_delay_s)`` once that wait is longer than the interval: when beats stop, the rate falls
        instead of freezing at its last value. ``report_delay_s`` allows for a detector reporting a
        beat after its R wave (:class:`~vigil.kernels.qrs.QRSDetector`: 0.2-0.4 s), so a beat
        that happened but is not reported yet does not lower the rate.
        """
        hr, wait = rhythm.hr_bpm, rhythm.since_last_beat_s - report_delay_s
        if math.isfinite(hr) and wait > rhythm.rr_s:
            hr = 60.0 / wait
        return cls(
            time,
            hr_bpm=hr,
            since_last_beat_s=rhythm.since_last_beat_s,
            in_pause=rhythm.in_pause,
            af_cosen=rhythm.window.cosen,
            n_rr=rhythm.window.n_rr,
            **kwargs,
        )


# ---------------------------------------------------------------------------------------------
# State


@dataclass(slots=True)
class Baseline:
    """A device's own resting level of one feature, learned from values the engine accepts.

    The level is the median of the values of the first ``learn_s`` seconds (from the first
    accepted value, at least 3 values), then follows an exponential moving average with time
    constant ``tau_s``. NaN until learned.
    """

    learn_s: float
    tau_s: float
    level: float = math.nan
    _start: float | None = None
    _last: float = math.nan
    _values: list[float] = field(default_factory=list)

    def ratio(self, value: float) -> float | None:
        """``value / level``, or None when either is unknown."""
        if not (math.isfinite(value) and math.isfinite(self.level) and self.level > 0):
            return None
        return value / self.level

    def observe(self, t: float, value: float) -> None:
        """Accept ``value`` at time ``t`` into the baseline."""
        if not math.isfinite(value):
            return
        if math.isfinite(self.level):
            self.level += (1.0 - math.exp(-max(t - self._last, 0.0) / self.tau_s)) * (value - self.level)
        else:
            self._start = t if self._start is None else self._start
            self._values.append(value)
            if t - self._start >= self.learn_s and len(self._values) >= 3:
                self.level = statistics.median(self._values)
                self._values = []
        self._last = t


@dataclass(frozen=True)
class ActiveAlarm:
    """Snapshot of one active alarm (see :meth:`AlarmEngine.active`)."""

    alarm: str
    priority: Priority
    raised_at: float
    value: float
    condition_present: bool  # False: latched, awaiting acknowledgement
    acknowledged: bool
    escalated: bool
    silenced_until: float | None
    technical: bool

    def silenced(self, now: float) -> bool:
        return self.silenced_until is not None and now < self.silenced_until


@dataclass(slots=True)
class _AlarmState:
    """Explicit state of one alarm of one device."""

    active: bool = False
    present: bool = False
    priority: Priority = Priority.LOW
    raised_at: float = math.nan
    pending_since: float | None = None
    clear_since: float | None = None
    acknowledged: bool = False
    escalated: bool = False
    silenced_until: float | None = None
    value: float = math.nan
    suppressing: bool = False

    def step(
        self, rule: AlarmRule, upper: bool, value: float | None, now: float, superseded: bool
    ) -> list[AlarmState]:
        """Advance to ``now`` with ``value`` (None: unknown, hold); return the transitions."""
        if value is not None:
            self.value = value
        if superseded:
            self.pending_since = None
            if self.active and self.present:
                return self._end(rule)
            return []
        if value is None:
            self.pending_since = self.clear_since = None
            return self._escalate(rule, now)
        met = _reached(value, rule.threshold, upper)
        clear = not _reached(value, rule.clear_level, upper)
        if not self.active:
            if not met:
                self.pending_since = None
                return []
            self.pending_since = now if self.pending_since is None else self.pending_since
            if now - self.pending_since < rule.condition_delay_s:
                return []
            self._raise(rule, now)
            return [AlarmState.RAISED]
        if met:
            self.present, self.clear_since = True, None
        elif clear and self.present:
            self.clear_since = now if self.clear_since is None else self.clear_since
            if now - self.clear_since >= rule.clear_delay_s:
                return self._end(rule)
        else:
            self.clear_since = None
        return self._escalate(rule, now)

    def _raise(self, rule: AlarmRule, now: float) -> None:
        self.active = self.present = True
        self.priority, self.raised_at = rule.priority, now
        self.pending_since = self.clear_since = self.silenced_until = None
        self.acknowledged = self.escalated = False

    def _end(self, rule: AlarmRule) -> list[AlarmState]:
        """The condition ended: clear, unless latched and not yet acknowledged."""
        self.present, self.clear_since = False, None
        if rule.latching and not self.acknowledged:
            return []
        self.active = False
        return [AlarmState.CLEARED]

    def _escalate(self, rule: AlarmRule, now: float) -> list[AlarmState]:
        e = rule.escalation_after_s
        if not self.active or self.acknowledged or self.escalated or self.priority is Priority.HIGH:
            return []
        if e is None or now - self.raised_at < e:
            return []
        self.escalated, self.silenced_until = True, None
        self.priority = {Priority.LOW: Priority.MEDIUM}.get(self.priority, Priority.HIGH)
        return [AlarmState.ESCALATED]

    def acknowledge(self) -> list[AlarmState]:
        if not self.active or self.acknowledged:
            return []
        self.acknowledged, self.silenced_until = True, None
        if self.present:
            return [AlarmState.ACKNOWLEDGED]
        self.active = False
        return [AlarmState.ACKNOWLEDGED, AlarmState.CLEARED]

    def silence(self, until: float) -> list[AlarmState]:
        if not self.active:
            return []
        self.silenced_until = until
        return [AlarmState.SILENCED]


@dataclass(slots=True)
class _Device:
    """Everything the engine keeps about one device."""

    alarms: dict[str, _AlarmState]
    baselines: dict[str, Baseline]
    features: Features | None = None
    now: float = -math.inf  # latest time evaluated (snapshot or tick)
    v_run: int = 0  # consecutive V beats at the end of the latest update
    v_run_max: float | None = None  # longest V run seen by the latest update (None: no model)
    labelled_since: float | None = None  # time of the first beat labels (None: no beat network)
    v_beats: deque = field(default_factory=deque)  # (time, V beats) of the updates of the last minute
    held: dict = field(default_factory=dict)  # HELD_MODEL_VALUES key -> (time, value)
    suppressed: Counter[str] = field(default_factory=Counter)
    #: The latest evaluation was of fresh data and left no alarm active, pending or clearing: a tick
    #: on the same snapshot changes nothing until the data goes stale or the device is lost.
    quiet: bool = False


# ---------------------------------------------------------------------------------------------
# Measures: Features (+ device state) -> the value a rule compares, or None (unknown)


def _reached(value: float, level: float, upper: bool) -> bool:
    """At or beyond ``level``: above it for an upper limit, below it for a lower one."""
    return value >= level if upper else value <= level


def _baseline_input(f: Features, key: str) -> float:
    """The raw feature behind baseline ``key``."""
    if key == "emg_rms":
        return f.emg_rms
    if key == "eeg_line_length":
        return f.eeg_line_length
    return f.eeg_band_powers.get(SEIZURE_BAND, math.nan)


def _finite(v: float) -> float | None:
    return v if v is not None and math.isfinite(v) else None


_GAP, _FLAT, _NOISE = int(QualityFlag.GAP), int(QualityFlag.FLAT), int(QualityFlag.NOISE)


def is_lead_off(f: Features) -> bool:
    """Lead off: the device says so, or the quality window saw non-finite samples."""
    return bool(f.lead_off or int(f.quality_flags) & _GAP)


def is_flat_ecg(f: Features) -> bool:
    """A flat ECG trace: FLAT but not NOISE flagged, on a device with rhythm features.

    A quiet amplifier during asystole gives exactly this (the quality kernel also flags CLIP and
    WANDER on such a window), so it is for the missing-beat alarms (:data:`FLAT_TRACE_ALARMS`) to
    judge, not a reason to stay quiet.
    """
    flags = int(f.quality_flags)
    return bool(flags & _FLAT) and not flags & _NOISE and math.isfinite(f.since_last_beat_s)


def _poor_signal(f: Features, dev: _Device, cfg: AlarmConfig) -> float | None:
    return None if is_flat_ecg(f) else _finite(f.quality_score)


def _ventricular_run(f: Features, dev: _Device, cfg: AlarmConfig) -> float | None:
    return dev.v_run_max


ECTOPY_WINDOW_S = 60.0


def _ectopy(f: Features, dev: _Device, cfg: AlarmConfig) -> float | None:
    if dev.labelled_since is None or f.time - dev.labelled_since < ECTOPY_WINDOW_S:
        return None
    return float(sum(n for t, n in dev.v_beats if t > f.time - ECTOPY_WINDOW_S))


def _irregular(f: Features, dev: _Device, cfg: AlarmConfig) -> float | None:
    if MODEL_AF_PROBABILITY in dev.held:  # the rhythm network reads this device
        return None
    return _finite(f.af_cosen) if f.n_rr >= cfg.min_rr_for_af else None


def _held(key: str) -> Callable[[Features, _Device, AlarmConfig], float | None]:
    """The measure of a network probability held for ``model_hold_s`` after its report."""

    def measure(f: Features, dev: _Device, cfg: AlarmConfig) -> float | None:
        t_v = dev.held.get(key)
        return None if t_v is None or f.time - t_v[0] > cfg.model_hold_s else _finite(t_v[1])

    return measure


def _seizure(f: Features, dev: _Device, cfg: AlarmConfig) -> float | None:
    ll = dev.baselines["eeg_line_length"].ratio(f.eeg_line_length)
    p = dev.baselines["eeg_band"].ratio(f.eeg_band_powers.get(SEIZURE_BAND, math.nan))
    ratios = [r for r in (ll, None if p is None else math.sqrt(max(p, 0.0))) if r is not None]
    return max(ratios) if ratios else None


_MEASURES: dict[str, Callable[[Features, _Device, AlarmConfig], float | None]] = {
    "device_lost": lambda f, d, c: f.age_s,
    "battery_low": lambda f, d, c: _finite(f.battery_pct),
    "lead_off": lambda f, d, c: 1.0 if is_lead_off(f) else 0.0,
    "poor_signal": _poor_signal,
    "asystole": lambda f, d, c: _finite(f.since_last_beat_s),
    "ventricular_run": _ventricular_run,
    "ectopy": _ectopy,
    "bradycardia": lambda f, d, c: _finite(f.hr_bpm),
    "tachycardia": lambda f, d, c: _finite(f.hr_bpm),
    "pause": lambda f, d, c: _finite(f.since_last_beat_s),
    "irregular_rhythm": _irregular,
    "atrial_fibrillation": _held(MODEL_AF_PROBABILITY),
    "seizure": _seizure,
    "seizure_model": _held(MODEL_SEIZURE_PROBABILITY),
    "emg_burst": lambda f, d, c: d.baselines["emg_rms"].ratio(f.emg_rms),
}
_ALWAYS_FRESH = ("device_lost", "battery_low")


def _at(f: Features, now: float) -> Features:
    """Snapshot ``f`` seen again at a later ``now``: no new data, so it ages."""
    return replace(f, time=now, last_seen=f.time if f.last_seen is None else f.last_seen)


def quality_gate(f: Features, cfg: AlarmConfig, alarm: str) -> str | None:
    """Why physiological ``alarm`` is suppressed for snapshot ``f`` ("lead_off", "poor_signal"), or None."""
    if _SPECS[alarm].technical:
        return None
    if is_lead_off(f):
        return "lead_off"
    poor = math.isfinite(f.quality_score) and f.quality_score <= cfg.poor_signal.threshold
    if poor and not (alarm in FLAT_TRACE_ALARMS and is_flat_ecg(f)):
        return "poor_signal"
    return None


def longest_run(labels: Sequence[str], carry: int, label: str = "V") -> tuple[int, int]:
    """``(longest run of label including the carried run, run at the end)`` of beat labels."""
    run, best = carry, carry
    for c in labels:
        run = run + 1 if c == label else 0
        best = max(best, run)
    return best, run


# ---------------------------------------------------------------------------------------------
# The engine


class AlarmEngine:
    """Alarm state of every device; see the module docstring for the semantics.

    ``update(device, features)`` after each new snapshot, ``tick(now)`` periodically (device lost,
    delays and escalation move on without data), ``command(device, alarm, action, now)`` for
    acknowledge/silence. ``site`` goes into every :class:`Alert`.
    """

    def __init__(self, config: AlarmConfig | None = None, site: str = "local"):
        self.config = AlarmConfig() if config is None else config
        self.site = site
        self.rules = {n: r for n, r in self.config.rules().items() if r.enabled}
        # per rule, in evaluation order: what _evaluate needs, looked up once
        self._table = [
            (name, rule, _SPECS[name].upper, _SPECS[name].technical, _MEASURES[name],
             tuple(s for s, sub in SUPERSEDES.items() if name in sub and s in self.rules),
             name in _ALWAYS_FRESH, name in FLAT_TRACE_ALARMS)
            for name, rule in self.rules.items()
        ]  # fmt: skip
        lost = self.rules.get("device_lost")
        self._lost_after = math.inf if lost is None else lost.threshold
        #: Suppression episodes per alarm type, all devices.
        self.suppressed: Counter[str] = Counter()
        self._devices: dict[str, _Device] = {}

    # -- inputs --------------------------------------------------------------------------

    def update(self, device: str, features: Features) -> list[Alert]:
        """Take a new snapshot of ``device`` and return the events it causes.

        The engine's now is ``features.time``, or the latest :meth:`tick` time if that is later.
        Snapshots of one device must not go back in time (``ValueError``).
        """
        dev = self._device(device)
        if dev.features is not None and features.time < dev.features.time:
            raise ValueError(f"{device}: time went backwards, {features.time} after {dev.features.time}")
        self._take_model(dev, features)
        dev.features = features
        f = features if features.time >= dev.now else _at(features, dev.now)
        dev.now = f.time
        events = self._evaluate(device, dev, f)
        self._learn_baselines(dev, f)
        return events

    @staticmethod
    def _take_model(dev: _Device, f: Features) -> None:
        """Network outputs of snapshot ``f`` into the device's state (V runs, V beats, held values)."""
        labels = f.model.get(MODEL_BEAT_CLASSES)
        if labels is None:
            # no new beat classes in this snapshot (they come once per beat-network call, not with
            # every chunk): the run in progress carries over, the rule holds its state
            dev.v_run_max = None
        else:
            labels = [str(c) for c in labels]
            best, dev.v_run = longest_run(labels, dev.v_run)
            dev.v_run_max = float(best)
            if dev.labelled_since is None:
                dev.labelled_since = f.time
            dev.v_beats.append((f.time, labels.count("V")))
            while dev.v_beats and dev.v_beats[0][0] <= f.time - ECTOPY_WINDOW_S:
                dev.v_beats.popleft()
        for key in HELD_MODEL_VALUES:
            v = f.model.get(key)
            if v is not None:
                dev.held[key] = (f.time, float(v))

    def tick(self, now: float) -> list[Alert]:
        """Re-evaluate every device at ``now`` on its latest snapshot: device lost, delays and
        escalation move on without data. ``now`` is on the devices' clock (that of ``Features.time``)."""
        events = []
        fresh = min(self.config.stale_after_s, math.nextafter(self._lost_after, -math.inf))
        for name, dev in self._devices.items():
            f = dev.features
            if f is None or now < dev.now:
                continue
            dev.now = now
            if dev.quiet:  # same snapshot, still fresh, not lost: nothing can change (see _Device)
                age = now - (f.time if f.last_seen is None else f.last_seen)
                if age <= fresh:
                    lost = dev.alarms.get("device_lost")
                    if lost is not None:
                        lost.value = age
                    continue
            events += self._evaluate(name, dev, _at(f, now))
        return events

    def command(
        self, device: str, alarm: str, action: str, now: float, duration_s: float | None = None
    ) -> list[Alert]:
        """Apply ``action`` ("acknowledge"/"ack" or "silence") to ``alarm`` ("*": every active one).

        Unknown actions and alarm types raise ``ValueError``; an alarm not active gives no event.
        ``duration_s`` is the audio pause of "silence" (default :attr:`AlarmConfig.silence_s`).
        """
        act = _ACTIONS.get(action)
        if act is None:
            raise ValueError(f"unknown action {action!r}; one of {sorted(_ACTIONS)}")
        if alarm != "*" and alarm not in _SPECS:
            raise ValueError(f"unknown alarm {alarm!r}; one of {ALARMS} or '*'")
        d = self.config.silence_s if duration_s is None else float(duration_s)
        if not (math.isfinite(d) and d > 0):
            raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
        dev = self._devices.get(device)
        if dev is None:
            return []
        dev.quiet = False
        events = []
        for name in self.rules if alarm == "*" else (alarm,):
            st = dev.alarms.get(name)
            if st is None:
                continue
            states = st.acknowledge() if act == "acknowledge" else st.silence(now + d)
            events += [self._alert(device, name, st, s, now, silence_s=d) for s in states]
        return events

    # -- outputs -------------------------------------------------------------------------

    def active(self, device: str) -> list[ActiveAlarm]:
        """Active alarms of ``device``, highest priority first, then oldest first."""
        dev = self._devices.get(device)
        if dev is None:
            return []
        rank = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}
        out = [
            ActiveAlarm(n, s.priority, s.raised_at, s.value, s.present, s.acknowledged, s.escalated,
                        s.silenced_until, _SPECS[n].technical)
            for n, s in dev.alarms.items() if s.active
        ]  # fmt: skip
        return sorted(out, key=lambda a: (rank[a.priority], a.raised_at, ALARMS.index(a.alarm)))

    def suppressed_for(self, device: str) -> Counter[str]:
        """Suppression episodes of ``device`` per alarm type."""
        dev = self._devices.get(device)
        return Counter() if dev is None else Counter(dev.suppressed)

    def baseline(self, device: str, name: str) -> float:
        """Learned baseline ("eeg_line_length", "eeg_band", "emg_rms") of ``device`` (NaN: none yet)."""
        dev = self._devices.get(device)
        return math.nan if dev is None else dev.baselines[name].level

    def devices(self) -> list[str]:
        return list(self._devices)

    # -- internals -----------------------------------------------------------------------

    def _device(self, device: str) -> _Device:
        dev = self._devices.get(device)
        if dev is None:
            c = self.config
            dev = _Device(
                alarms={n: _AlarmState() for n in self.rules},
                baselines={k: Baseline(c.baseline_learn_s, c.baseline_tau_s)
                           for k in ("eeg_line_length", "eeg_band", "emg_rms")},
            )  # fmt: skip
            self._devices[device] = dev
        return dev

    def _evaluate(self, device: str, dev: _Device, f: Features) -> list[Alert]:
        now, cfg = f.time, self.config
        stale = f.age_s > cfg.stale_after_s
        # the quality gate (quality_gate, inlined): the same for every rule but its kind
        lead_off = is_lead_off(f)
        q = f.quality_score
        poor = not lead_off and math.isfinite(q) and q <= cfg.poor_signal.threshold
        flat = poor and is_flat_ecg(f)
        alarms = dev.alarms
        events = []
        quiet = not stale
        for name, rule, upper, technical, measure, superseders, always_fresh, flat_ok in self._table:
            st = alarms[name]
            value = None if stale and not always_fresh else measure(f, dev, cfg)
            if value is None and not st.active:
                # not measured, not active (so not clearing either): what step() and the gate would do
                st.pending_since = None
                st.suppressing = False
                continue
            superseded = False
            for s in superseders:
                a = alarms[s]
                if a.active and a.present:
                    superseded = True
                    break
            gate = None
            if not (stale or superseded or technical):
                if lead_off:
                    gate = "lead_off"
                elif poor and not (flat_ok and flat):
                    gate = "poor_signal"
            if gate is not None:
                self._count_suppression(device, dev, name, rule, st, value, gate)
                value = None
            else:
                st.suppressing = False
                if not (st.active or superseded) and not (
                    value >= rule.threshold if upper else value <= rule.threshold
                ):  # inactive, condition not met (the usual case): what step() does
                    st.value = value
                    st.pending_since = None
                    continue
            for state in st.step(rule, upper, value, now, superseded):
                events.append(self._alert(device, name, st, state, now, superseded=superseded))
            if st.active or st.pending_since is not None or st.clear_since is not None:
                quiet = False
        dev.quiet = quiet
        return events

    def _count_suppression(
        self,
        device: str,
        dev: _Device,
        name: str,
        rule: AlarmRule,
        st: _AlarmState,
        value: float | None,
        gate: str,
    ) -> None:
        """Count a run of updates where an inactive alarm's condition holds but is suppressed."""
        if value is not None and _reached(value, rule.threshold, _SPECS[name].upper) and not st.active:
            if not st.suppressing:
                self.suppressed[name] += 1
                dev.suppressed[name] += 1
                log.info("%s: %s suppressed (%s), value %.3g", device, name, gate, value)
            st.suppressing = True
        else:
            st.suppressing = False

    def _learn_baselines(self, dev: _Device, f: Features) -> None:
        """Feed EEG/EMG baselines with a fresh, clean snapshot while their alarm is quiet."""
        cfg = self.config
        if not (
            math.isfinite(f.eeg_line_length) or math.isfinite(f.emg_rms) or SEIZURE_BAND in f.eeg_band_powers
        ):
            return  # nothing a baseline takes (every ECG snapshot)
        if f.age_s > cfg.stale_after_s or quality_gate(f, cfg, "seizure") is not None:
            return
        for alarm, keys in (("seizure", ("eeg_line_length", "eeg_band")), ("emg_burst", ("emg_rms",))):
            st, rule = dev.alarms.get(alarm), getattr(cfg, alarm)
            if st is not None and (st.active or st.pending_since is not None):
                continue
            v = _MEASURES[alarm](f, dev, cfg)
            if v is not None and v >= rule.clear_level:
                continue
            for k in keys:
                dev.baselines[k].observe(f.time, _baseline_input(f, k))

    def _alert(
        self,
        device: str,
        name: str,
        st: _AlarmState,
        state: AlarmState,
        now: float,
        superseded: bool = False,
        silence_s: float = 0.0,
    ) -> Alert:
        rule, spec = self.rules[name], _SPECS[name]
        label = name.replace("_", " ")
        v = st.value
        detail = spec.detail.format(v=v, t=rule.threshold, d=rule.condition_delay_s)
        if state is AlarmState.RAISED:
            message = f"{label}: {detail}"
        elif state is AlarmState.ESCALATED:
            message = (
                f"{label}: {detail}; unacknowledged for {rule.escalation_after_s:g} s, "
                f"now {st.priority.value} priority"
            )
        elif state is AlarmState.CLEARED:
            message = f"{label} cleared" + (" (superseded)" if superseded else "")
        elif state is AlarmState.ACKNOWLEDGED:
            message = f"{label} acknowledged"
        else:
            message = f"{label} silenced for {silence_s:g} s"
        value: dict[str, Any] = {
            "value": float(v) if math.isfinite(v) else None,
            "threshold": rule.threshold,
            "unit": spec.unit,
            "technical": spec.technical,
            "latched": st.active and not st.present,
            "raised_at_s": float(st.raised_at),
        }
        if state is AlarmState.SILENCED:
            value["silenced_until_s"] = st.silenced_until
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s", device, message)
        return Alert(
            site=self.site,
            device=device,
            alarm=name,
            priority=st.priority,
            state=state,
            device_time_us=int(round(now * 1e6)),
            message=message,
            value=value,
        )
