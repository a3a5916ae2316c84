"""Alarm engine: delays, hysteresis, latching, escalation, commands, suppression, end to end."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from vigil.edge import alarms as A
from vigil.edge.alarms import (
    ALARMS,
    AlarmConfig,
    AlarmEngine,
    AlarmRule,
    Features,
    longest_run,
    quality_gate,
)
from vigil.edge.messages import AlarmState, Alert, Priority
from vigil.kernels.quality import QualityFlag

DEV = "ecg-1"
RAISED, CLEARED, ESCALATED = AlarmState.RAISED, AlarmState.CLEARED, AlarmState.ESCALATED
ACKED, SILENCED = AlarmState.ACKNOWLEDGED, AlarmState.SILENCED
NOISY = int(QualityFlag.NOISE)
FLAT_LOOK = int(QualityFlag.FLAT | QualityFlag.CLIP | QualityFlag.WANDER)  # what the kernel sees in asystole


def good(t: float, **kw) -> Features:
    """A healthy ECG device at time ``t`` (clean signal, sinus 70 bpm), with overrides."""
    base = dict(
        last_seen=t, hr_bpm=70.0, since_last_beat_s=0.5, af_cosen=-2.0, n_rr=60, quality_score=0.9,
        battery_pct=80.0,
    )  # fmt: skip
    return Features(t, **{**base, **kw})


def run(engine: AlarmEngine, frames, device: str = DEV) -> list[tuple[float, str, AlarmState]]:
    """Feed snapshots in order; ``(time, alarm, state)`` of every event."""
    out = []
    for f in frames:
        out += [(f.time, a.alarm, a.state) for a in engine.update(device, f)]
    return out


def times(dt: float, t0: float, t1: float) -> np.ndarray:
    return np.round(np.arange(t0, t1 + dt / 2, dt), 6)


# ---------------------------------------------------------------------------------------------
# Configuration


def test_default_rules_table():
    r = AlarmConfig().rules()
    assert tuple(r) == ALARMS
    a = r["asystole"]
    assert (a.priority, a.threshold, a.latching, a.condition_delay_s) == (Priority.HIGH, 4.0, True, 0.0)
    assert (r["bradycardia"].priority, r["bradycardia"].threshold) == (Priority.HIGH, 40.0)
    assert (r["tachycardia"].priority, r["tachycardia"].threshold) == (Priority.MEDIUM, 150.0)
    assert (r["pause"].priority, r["pause"].threshold) == (Priority.MEDIUM, 2.5)
    af = r["irregular_rhythm"]
    assert (af.priority, af.threshold, af.condition_delay_s) == (Priority.MEDIUM, -1.4, 30.0)
    assert r["seizure"].priority is r["emg_burst"].priority is Priority.HIGH
    assert {n for n, x in r.items() if x.latching} == {
        "asystole", "ventricular_run", "seizure", "seizure_model", "emg_burst"
    }  # fmt: skip
    assert r["device_lost"].priority is Priority.MEDIUM
    assert r["battery_low"].priority is Priority.LOW
    # superseding alarms are evaluated first
    assert ALARMS.index("asystole") < ALARMS.index("pause") < ALARMS.index("irregular_rhythm")
    assert ALARMS.index("lead_off") < ALARMS.index("poor_signal")


def test_rule_validation_and_string_priority():
    assert AlarmRule(priority="high", threshold=1.0).priority is Priority.HIGH
    assert AlarmRule(threshold=1.0).clear_level == 1.0
    bad_rules = (
        dict(threshold=math.nan),
        dict(threshold=1.0, condition_delay_s=-1),
        dict(threshold=1.0, escalation_after_s=0.0),
        dict(threshold=1.0, priority="urgent"),
    )
    for bad in bad_rules:
        with pytest.raises(ValueError):
            AlarmRule(**bad)
    with pytest.raises(ValueError):
        AlarmConfig(stale_after_s=0.0)


# ---------------------------------------------------------------------------------------------
# Each rule: raised after its condition delay, not before

BASELINE = dict(eeg_line_length=100.0, eeg_band_powers={"theta": 4.0}, emg_rms=0.01)

CASES = {
    # alarm: (features that meet the condition, condition delay, needs a learned baseline)
    "tachycardia": (dict(hr_bpm=170.0), 5.0, False),
    "bradycardia": (dict(hr_bpm=35.0), 5.0, False),
    "asystole": (dict(since_last_beat_s=5.0, hr_bpm=12.0), 0.0, False),
    "pause": (dict(since_last_beat_s=3.0, hr_bpm=50.0), 0.0, False),
    "irregular_rhythm": (dict(af_cosen=-1.0), 30.0, False),
    "ventricular_run": (dict(model={"beat_classes": ["V", "V", "V"]}), 0.0, False),
    "seizure_model": (dict(model={"seizure_probability": 0.95}), 5.0, False),
    "seizure": (dict(eeg_line_length=400.0), 10.0, True),
    "emg_burst": (dict(emg_rms=0.2), 10.0, True),
    "lead_off": (dict(lead_off=True), 5.0, False),
    "poor_signal": (dict(quality_score=0.1, quality_flags=NOISY), 10.0, False),
    "battery_low": (dict(battery_pct=15.0), 0.0, False),
}


@pytest.mark.parametrize("alarm", sorted(CASES))
def test_rule_raises_after_condition_delay(alarm):
    bad, delay, needs_baseline = CASES[alarm]
    eng = AlarmEngine(AlarmConfig(baseline_learn_s=30.0))
    dt, t0 = 0.5, 40.0
    extra = BASELINE if needs_baseline else {}
    ev = run(eng, [good(t, **extra) for t in times(dt, 0.0, t0 - dt)])
    assert ev == []
    if needs_baseline:
        assert eng.baseline(DEV, "eeg_line_length" if alarm == "seizure" else "emg_rms") > 0
    ev = run(eng, [good(t, **{**extra, **bad}) for t in times(dt, t0, t0 + delay + 5)])
    raised = [(t, a) for t, a, s in ev if s is RAISED]
    assert raised[0] == (t0 + delay, alarm)
    assert {a for _, a in raised} == {alarm}
    assert [a.alarm for a in eng.active(DEV)] == [alarm]


def test_asystole_raised_when_no_beat_for_threshold():
    eng = AlarmEngine()
    frames = [good(t, since_last_beat_s=t - 10.0) for t in times(0.25, 10.25, 16.0)]
    ev = run(eng, frames)
    assert (14.0, "asystole", RAISED) in ev
    assert all(t >= 14.0 for t, a, s in ev if a == "asystole")
    (alert,) = AlarmEngine().update(DEV, good(20.0, since_last_beat_s=4.3, hr_bpm=14.0))
    assert alert.message == "asystole: no beat for 4.3 s"
    assert alert.priority is Priority.HIGH and alert.device_time_us == 20_000_000
    assert alert.value["value"] == 4.3 and alert.value["unit"] == "s"
    assert Alert.from_json(alert.to_json()) == alert


def test_disabled_rule_never_raises():
    eng = AlarmEngine(AlarmConfig(tachycardia=AlarmRule(enabled=False, threshold=150.0)))
    assert run(eng, [good(t, hr_bpm=200.0) for t in times(1.0, 0, 60)]) == []
    assert "tachycardia" not in eng.rules


# ---------------------------------------------------------------------------------------------
# Hysteresis, latching, escalation, commands


def test_hysteresis_prevents_chatter_around_150():
    hr = 150.0 + 4.0 * np.random.default_rng(1).standard_normal(600)
    frames = [good(float(t), hr_bpm=float(h)) for t, h in enumerate(hr)]
    chatter = AlarmConfig(tachycardia=AlarmRule(threshold=150.0))  # no delays, no hysteresis
    naive = [e for e in run(AlarmEngine(chatter), frames) if e[1] == "tachycardia"]
    ev = [e for e in run(AlarmEngine(), frames) if e[1] == "tachycardia"]
    assert len(naive) > 100
    assert [s for _, _, s in ev] == [RAISED, ESCALATED]  # raised once, never cleared


def test_clear_needs_clear_threshold_and_clear_delay():
    eng = AlarmEngine()
    run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 0, 10)])
    assert run(eng, [good(t, hr_bpm=145.0) for t in times(1.0, 11, 40)]) == []  # between thresholds
    ev = run(eng, [good(t, hr_bpm=120.0) for t in times(1.0, 41, 50)])
    assert ev == [(44.0, "tachycardia", CLEARED)]  # below 140 from 41 on, for 3 s


def test_latched_alarm_stays_until_acknowledged():
    eng = AlarmEngine()
    run(eng, [good(t, since_last_beat_s=t - 10.0) for t in times(1.0, 11, 17)])
    assert run(eng, [good(t) for t in times(1.0, 18, 60)]) == []  # beats back: still latched
    (a,) = eng.active(DEV)
    assert (a.alarm, a.condition_present, a.acknowledged) == ("asystole", False, False)
    alerts = eng.command(DEV, "asystole", "acknowledge", now=61.0)
    assert [(x.state, x.alarm) for x in alerts] == [(ACKED, "asystole"), (CLEARED, "asystole")]
    assert eng.active(DEV) == []
    assert eng.command(DEV, "asystole", "ack", now=62.0) == []


def test_acknowledged_latched_alarm_clears_when_condition_ends():
    eng = AlarmEngine()
    run(eng, [good(t, since_last_beat_s=t - 10.0) for t in times(1.0, 11, 15)])
    assert [x.state for x in eng.command(DEV, "asystole", "acknowledge", 15.5)] == [ACKED]
    assert eng.active(DEV)[0].acknowledged
    assert run(eng, [good(16.0)]) == [(16.0, "asystole", CLEARED)]


def test_escalation_of_unacknowledged_medium_alarm():
    eng = AlarmEngine()
    ev = run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 0, 200)])
    assert ev == [(5.0, "tachycardia", RAISED), (125.0, "tachycardia", ESCALATED)]
    (a,) = eng.active(DEV)
    assert a.priority is Priority.HIGH and a.escalated
    # acknowledged in time: no escalation
    eng = AlarmEngine()
    run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 0, 60)])
    eng.command(DEV, "tachycardia", "acknowledge", 60.0)
    assert run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 61, 300)]) == []
    assert eng.active(DEV)[0].priority is Priority.MEDIUM


def test_silence_pauses_audio_without_acknowledging():
    eng = AlarmEngine()
    run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 0, 10)])
    (alert,) = eng.command(DEV, "tachycardia", "silence", now=10.0, duration_s=60.0)
    assert alert.state is SILENCED and alert.message == "tachycardia silenced for 60 s"
    assert alert.value["silenced_until_s"] == 70.0
    (a,) = eng.active(DEV)
    assert a.silenced(69.0) and not a.silenced(70.0) and not a.acknowledged
    # silencing is not acknowledging: it still escalates, and escalation ends the pause
    ev = run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 11, 130)])
    assert ev == [(125.0, "tachycardia", ESCALATED)]
    assert eng.active(DEV)[0].silenced_until is None
    # defaults, "*", misuse
    run(eng, [good(t, hr_bpm=170.0, battery_pct=10.0) for t in times(1.0, 131, 132)])
    alerts = eng.command(DEV, "*", "silence", now=132.0)
    assert sorted(x.alarm for x in alerts) == ["battery_low", "tachycardia"]
    assert all(x.value["silenced_until_s"] == 132.0 + AlarmConfig().silence_s for x in alerts)
    assert eng.command(DEV, "pause", "silence", 133.0) == []
    assert eng.command("unknown-device", "*", "ack", 133.0) == []
    for alarm, action in (("tachycardia", "mute"), ("nonsense", "ack")):
        with pytest.raises(ValueError):
            eng.command(DEV, alarm, action, 133.0)


def test_asystole_supersedes_pause_and_bradycardia():
    eng = AlarmEngine()
    frames = [good(t, since_last_beat_s=t - 10.0, hr_bpm=min(70.0, 60.0 / (t - 10.0)))
              for t in times(0.5, 10.5, 20.0)]  # fmt: skip
    ev = run(eng, frames)
    assert ev == [(12.5, "pause", RAISED), (14.0, "asystole", RAISED), (14.0, "pause", CLEARED)]
    assert [a.alarm for a in eng.active(DEV)] == ["asystole"]


def test_time_must_not_go_backwards():
    eng = AlarmEngine()
    eng.update(DEV, good(10.0))
    with pytest.raises(ValueError):
        eng.update(DEV, good(9.0))
    # a snapshot older than the latest tick is seen at the tick's time (and aged accordingly)
    assert [(a.alarm, a.state) for a in eng.tick(20.0)] == [("device_lost", RAISED)]
    assert eng.update(DEV, good(15.0, hr_bpm=200.0)) == []  # 5 s old at 20: still lost, stale
    assert [(a.alarm, a.state) for a in eng.update(DEV, good(21.0))] == [("device_lost", CLEARED)]


# ---------------------------------------------------------------------------------------------
# Suppression


def test_lead_off_suppresses_physiological_alarms_and_raises_technical():
    eng = AlarmEngine()
    frames = [good(t, hr_bpm=170.0, since_last_beat_s=t, lead_off=True) for t in times(1.0, 0, 30)]
    ev = run(eng, frames)
    assert ev == [(5.0, "lead_off", RAISED)]
    assert eng.suppressed == {"tachycardia": 1, "asystole": 1, "pause": 1}
    assert eng.suppressed_for(DEV) == eng.suppressed
    assert eng.suppressed_for("other") == {}
    # leads back on: the technical alarm clears, the tachycardia is raised after its own delay
    ev = run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 31, 40)])
    assert ev == [(36.0, "lead_off", CLEARED), (36.0, "tachycardia", RAISED)]


def test_gap_flag_counts_as_lead_off():
    f = good(0.0, quality_score=0.0, quality_flags=int(QualityFlag.GAP))
    cfg = AlarmConfig()
    assert quality_gate(f, cfg, "asystole") == "lead_off"
    assert quality_gate(f, cfg, "lead_off") is None  # technical alarms are never gated


def test_poor_signal_suppresses_and_is_its_own_alarm():
    eng = AlarmEngine()
    frames = [good(t, hr_bpm=170.0, quality_score=0.1, quality_flags=NOISY) for t in times(1.0, 0, 30)]
    assert run(eng, frames) == [(10.0, "poor_signal", RAISED)]
    assert eng.suppressed == {"tachycardia": 1}
    assert eng.active(DEV)[0].technical


def test_asystole_not_suppressed_with_good_quality_or_flat_trace():
    cfg = AlarmConfig()
    for kw in (dict(), dict(quality_score=0.0, quality_flags=FLAT_LOOK)):
        eng = AlarmEngine(cfg)
        ev = run(eng, [good(t, since_last_beat_s=t, **kw) for t in times(1.0, 1, 30)])
        assert (4.0, "asystole", RAISED) in ev
        assert not any(a == "poor_signal" for _, a, _ in ev)  # a flat ECG is asystole's to call
        assert eng.suppressed["asystole"] == 0
    # a noisy trace does suppress it (and says so)
    f = good(5.0, since_last_beat_s=5.0, quality_score=0.1, quality_flags=FLAT_LOOK | NOISY)
    assert quality_gate(f, cfg, "asystole") == "poor_signal"
    # the flat-trace exemption is asystole's alone
    assert quality_gate(good(5.0, quality_score=0.0, quality_flags=FLAT_LOOK), cfg, "tachycardia")


def test_suppression_keeps_active_alarms_and_counts_episodes():
    eng = AlarmEngine()
    run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 0, 10)])
    assert run(eng, [good(t, hr_bpm=60.0, lead_off=True) for t in times(1.0, 11, 20)]) == [
        (16.0, "lead_off", RAISED)
    ]  # tachycardia neither cleared nor counted while the leads are off
    assert "tachycardia" in [a.alarm for a in eng.active(DEV)]
    assert eng.suppressed["tachycardia"] == 0
    eng = AlarmEngine()
    noisy = dict(quality_score=0.1, quality_flags=NOISY)
    hr = [170, 170, 80, 170, 170, 170, 80, 80]
    run(eng, [good(float(t), hr_bpm=float(h), **noisy) for t, h in enumerate(hr)])
    assert eng.suppressed["tachycardia"] == 2


# ---------------------------------------------------------------------------------------------
# Device lost, stale data


def test_device_lost_and_recovered():
    eng = AlarmEngine()
    run(eng, [good(t, hr_bpm=170.0) for t in times(1.0, 0, 10)])
    ev = [(a.alarm, a.state, a.device_time_us / 1e6) for t in times(1.0, 11, 30) for a in eng.tick(t)]
    assert ev == [("device_lost", RAISED, 20.0)]  # no data for 10 s; tachycardia held, not escalated
    assert {a.alarm for a in eng.active(DEV)} == {"device_lost", "tachycardia"}
    ev = run(eng, [good(31.0, hr_bpm=170.0)])
    assert ev == [(31.0, "device_lost", CLEARED)]


def test_stale_data_raises_nothing_physiological():
    eng = AlarmEngine()
    eng.update(DEV, good(0.0))
    ev = run(eng, [good(t, last_seen=0.0, hr_bpm=200.0) for t in times(1.0, 4, 9)])
    assert ev == []
    assert eng.tick(3.0) == []  # earlier than the latest snapshot: ignored


# ---------------------------------------------------------------------------------------------
# Model hook


def test_longest_run():
    assert longest_run(["N", "V", "V", "N", "V"], 0) == (2, 1)
    assert longest_run(["V", "N"], 2) == (3, 0)
    assert longest_run([], 2) == (2, 2)


def test_ventricular_run_only_via_model_hook():
    eng = AlarmEngine()
    assert run(eng, [good(t, hr_bpm=170.0, since_last_beat_s=0.3) for t in times(1.0, 0, 3)]) == []
    seq = [["N", "V"], ["V", "N"], ["N", "V", "V"], ["N"], ["V", "V"], ["V", "N"]]
    frames = [good(10.0 + i, model={"beat_classes": c}) for i, c in enumerate(seq)]
    ev = run(eng, frames)
    assert ev == [(15.0, "ventricular_run", RAISED)]  # V V | V: a run across two updates
    eng = AlarmEngine()
    assert run(eng, [good(10.0 + i, model={"beat_classes": c}) for i, c in enumerate(seq[:4])]) == []
    # snapshots without beat classes between two deliveries do not break the run (the beat network
    # reports once a second, the kernels every 0.2 s)
    eng = AlarmEngine()
    frames = [good(10.0, model={"beat_classes": ["N", "V", "V"]}), good(10.2), good(10.4),
              good(11.0, model={"beat_classes": ["V", "N"]})]  # fmt: skip
    assert run(eng, frames) == [(11.0, "ventricular_run", RAISED)]


def test_seizure_baseline_is_the_devices_own():
    cfg = AlarmConfig(baseline_learn_s=20.0)
    eng = AlarmEngine(cfg)
    for dev, ll in (("eeg-a", 50.0), ("eeg-b", 500.0)):
        run(eng, [good(t, eeg_line_length=ll) for t in times(1.0, 0, 30)], device=dev)
    assert eng.baseline("eeg-a", "eeg_line_length") == 50.0
    ev_a = run(eng, [good(t, eeg_line_length=400.0) for t in times(1.0, 31, 60)], device="eeg-a")
    ev_b = run(eng, [good(t, eeg_line_length=400.0) for t in times(1.0, 31, 60)], device="eeg-b")
    assert ev_a == [(41.0, "seizure", RAISED)] and ev_b == []
    # theta power counts as an amplitude: x9 power is x3 amplitude
    eng = AlarmEngine(cfg)
    run(eng, [good(t, eeg_band_powers={"theta": 2.0}) for t in times(1.0, 0, 30)])
    assert run(eng, [good(t, eeg_band_powers={"theta": 17.0}) for t in times(1.0, 31, 45)]) == []
    assert run(eng, [good(t, eeg_band_powers={"theta": 19.0}) for t in times(1.0, 46, 60)])[0] == (
        56.0, "seizure", RAISED
    )  # fmt: skip


def test_deterministic():
    rng = np.random.default_rng(3)
    hr, since = rng.uniform(20, 200, 300), rng.uniform(0, 6, 300)
    frames = [good(float(t), hr_bpm=float(hr[t]), since_last_beat_s=float(since[t])) for t in range(300)]

    def events():
        eng = AlarmEngine()
        out = []
        for f in frames:
            alerts = eng.update(DEV, f)
            out += [(a.alarm, a.state, a.priority, a.device_time_us, a.message, a.value) for a in alerts]
            if f.time % 50 == 0:
                out += [(a.alarm, a.state, a.message) for a in eng.command(DEV, "*", "ack", f.time)]
        return out

    first = events()
    assert len(first) > 10 and first == events()


# ---------------------------------------------------------------------------------------------
# End to end: simulator -> kernels -> features -> alarms


def simulated_monitor(spec, duration_s: float, on_second=None) -> tuple[AlarmEngine, list]:
    """Simulate ``spec``, run the real kernels on 1 s chunks and the engine on their features.

    ``lead_off`` is set from the chunk itself (non-finite samples), as the monitor will; the
    quality score and flags are those of the latest completed 5 s quality window.
    """
    from vigil.firmware_bridge.simulator import simulate
    from vigil.kernels.qrs import QRSDetector
    from vigil.kernels.quality import SignalQuality
    from vigil.kernels.rhythm import RhythmTracker

    fs = spec.fs
    x, _ = simulate(spec, duration_s)
    det, rhythm, quality = QRSDetector(fs), RhythmTracker(fs), SignalQuality(fs, 1)
    eng = AlarmEngine(site="test")
    score, flags, events = math.nan, 0, []
    step = int(fs)
    for i in range(0, len(x), step):
        chunk = x[i : i + step, 0]
        n = i + len(chunk)
        summary = rhythm.update(det.process(chunk), n - 1)
        windows = quality.process(chunk)
        if len(windows):
            score, flags = float(windows.score[-1, 0]), int(windows.flags[-1, 0])
        t = n / fs
        f = Features.from_rhythm(
            t, summary, last_seen=t, quality_score=score, quality_flags=flags,
            lead_off=not np.isfinite(chunk).all(), battery_pct=90.0,
        )  # fmt: skip
        events += [(t, a) for a in eng.update("sim", f)]
        if on_second is not None:
            events += [(t, a) for a in on_second(eng, t)]
    return eng, events


def test_end_to_end_simulated_ecg():
    from vigil.firmware_bridge.simulator import DeviceSpec, Episode

    asys, tachy = (60.0, 70.0), (110.0, 160.0)
    spec = DeviceSpec(
        fs=250.0, seed=11, heart_rate=72.0,
        episodes=(Episode("asystole", asys[0], asys[1] - asys[0]),
                  Episode("tachy", tachy[0], tachy[1] - tachy[0], rate_bpm=175.0)),
    )  # fmt: skip

    def ack_at_100(eng, t):
        return eng.command("sim", "asystole", "acknowledge", t) if t == 100.0 else []

    eng, events = simulated_monitor(spec, 200.0, ack_at_100)
    raised = [(t, a.alarm) for t, a in events if a.state is RAISED]
    t_asys = [t for t, a in raised if a == "asystole"]
    assert len(t_asys) == 1 and asys[0] + 4.0 <= t_asys[0] <= asys[0] + 4.0 + 1.5
    t_tachy = [t for t, a in raised if a == "tachycardia"]
    assert len(t_tachy) == 1 and tachy[0] + 5.0 <= t_tachy[0] <= tachy[0] + 5.0 + 3.0
    # nothing else, except a pause on the way into the asystole
    for t, a in raised:
        if a == "pause":
            assert asys[0] + 2.5 <= t < t_asys[0]
        else:
            assert a in ("asystole", "tachycardia"), (t, a)
    # latched until acknowledged at 100 s; the tachycardia clears after the episode
    states = [(t, a.alarm, a.state) for t, a in events if a.alarm in ("asystole", "tachycardia")]
    assert (100.0, "asystole", CLEARED) in states
    assert any(a == "tachycardia" and s is CLEARED and tachy[1] < t < tachy[1] + 8 for t, a, s in states)
    assert eng.active("sim") == []
    assert sum(eng.suppressed.values()) == 0


def test_end_to_end_lead_off_is_told_not_mistaken_for_asystole():
    from vigil.firmware_bridge.simulator import DeviceSpec, Episode

    off = (30.3, 42.3)
    spec = DeviceSpec(fs=250.0, seed=5, episodes=(Episode("lead_off", off[0], off[1] - off[0]),))
    eng, events = simulated_monitor(spec, 70.0)
    ev = [(t, a.alarm, a.state) for t, a in events]
    assert [e[1:] for e in ev] == [("lead_off", RAISED), ("lead_off", CLEARED)]
    assert off[0] + 5.0 <= ev[0][0] <= off[0] + 6.0
    assert eng.suppressed["asystole"] == 1  # no beats while the lead was off: withheld, counted


def test_from_rhythm_caps_the_rate_while_beats_stop():
    class Window:
        cosen, n_rr = -1.9, 30

    class Summary:
        hr_bpm, rr_s, since_last_beat_s, in_pause, window = 75.0, 0.8, 3.0, True, Window()

    f = Features.from_rhythm(12.0, Summary(), quality_score=0.8)
    assert f.hr_bpm == pytest.approx(24.0) and f.since_last_beat_s == 3.0 and f.in_pause  # 60 / (3 - 0.5)
    assert (f.af_cosen, f.n_rr, f.quality_score) == (-1.9, 30, 0.8)
    s = Summary()
    s.since_last_beat_s = 1.2  # the next beat may have happened and not be reported yet
    assert Features.from_rhythm(1.0, s).hr_bpm == 75.0
    assert Features.from_rhythm(1.0, s, report_delay_s=0.0).hr_bpm == pytest.approx(50.0)


def test_features_validation():
    with pytest.raises(ValueError):
        Features(math.nan)
    assert replace(good(5.0), last_seen=2.0).age_s == 3.0
    assert Features(1.0).age_s == 0.0


# -- the engine's fast paths against the plain evaluation ------------------------------------


class PlainEngine(AlarmEngine):
    """Every rule through quality_gate and _AlarmState.step, every device at every tick: the
    evaluation the engine's shortcuts (quiet devices skipped by tick, inactive rules not stepped,
    ECG snapshots not offered to the baselines) must reproduce exactly."""

    def tick(self, now: float) -> list[Alert]:
        events = []
        for name, dev in self._devices.items():
            if dev.features is None or now < dev.now:
                continue
            dev.now = now
            events += self._evaluate(name, dev, A._at(dev.features, now))
        return events

    def _evaluate(self, device, dev, f):
        now, cfg = f.time, self.config
        stale = f.age_s > cfg.stale_after_s
        events = []
        for name, rule in self.rules.items():
            st = dev.alarms[name]
            value = None if stale and name not in A._ALWAYS_FRESH else A._MEASURES[name](f, dev, cfg)
            superseded = any(
                dev.alarms[s].active and dev.alarms[s].present
                for s, sub in A.SUPERSEDES.items()
                if name in sub and s in dev.alarms
            )
            gate = None if stale or superseded else quality_gate(f, cfg, name)
            if gate is not None:
                self._count_suppression(device, dev, name, rule, st, value, gate)
                value = None
            else:
                st.suppressing = False
            for state in st.step(rule, A._SPECS[name].upper, value, now, superseded):
                events.append(self._alert(device, name, st, state, now, superseded=superseded))
        return events

    def _learn_baselines(self, dev, f):
        cfg = self.config
        if f.age_s > cfg.stale_after_s or quality_gate(f, cfg, "seizure") is not None:
            return
        for alarm, keys in (("seizure", ("eeg_line_length", "eeg_band")), ("emg_burst", ("emg_rms",))):
            st, rule = dev.alarms.get(alarm), getattr(cfg, alarm)
            if st is not None and (st.active or st.pending_since is not None):
                continue
            v = A._MEASURES[alarm](f, dev, cfg)
            if v is not None and v >= rule.clear_level:
                continue
            for k in keys:
                dev.baselines[k].observe(f.time, A._baseline_input(f, k))


def _random_snapshot(rng: np.random.Generator, t: float) -> Features:
    kw: dict = dict(last_seen=t - float(rng.choice([0.0, 0.0, 0.5, 4.0])))
    if rng.random() < 0.9:  # ECG-like, values around every limit
        kw.update(
            hr_bpm=float(rng.choice([np.nan, 35.0, 40.0, 42.0, 70.0, 145.0, 150.0, 170.0])),
            since_last_beat_s=float(rng.choice([np.nan, 0.4, 2.0, 2.6, 4.5, 8.0])),
            af_cosen=float(rng.choice([np.nan, -2.0, -1.5, -1.0])),
            n_rr=int(rng.choice([0, 20, 60])),
        )
    if rng.random() < 0.2:  # EEG or EMG features too
        kw.update(
            eeg_line_length=float(rng.uniform(1, 10)), eeg_band_powers={"theta": float(rng.uniform(1, 30))}
        )
        kw.update(emg_rms=float(rng.uniform(0.01, 0.2)))
    kw.update(
        quality_score=float(rng.choice([np.nan, 0.1, 0.3, 0.45, 0.9])),
        quality_flags=int(rng.integers(0, 32)) if rng.random() < 0.3 else 0,
        lead_off=bool(rng.random() < 0.05),
        battery_pct=float(rng.choice([np.nan, 15.0, 22.0, 80.0])),
    )
    if rng.random() < 0.1:
        kw["model"] = {
            "seizure_probability": float(rng.random()),
            "beat_classes": list(rng.choice(["N", "V"], 3)),
        }
    return Features(t, **kw)


def _event_key(a: Alert) -> tuple:
    return (
        a.device,
        a.alarm,
        a.priority,
        a.state,
        a.device_time_us,
        a.message,
        tuple(sorted(a.value.items())),
    )


@pytest.mark.parametrize("seed", range(12))
def test_fast_paths_match_the_plain_evaluation(seed):
    rng = np.random.default_rng(seed)
    fast, plain = AlarmEngine(), PlainEngine()
    t = {d: 0.0 for d in ("a", "b", "c")}
    now = 0.0
    for _ in range(600):
        r = rng.random()
        if r < 0.55:  # a snapshot of one device, usually a repeat of its last (a steady patient)
            d = str(rng.choice(list(t)))
            t[d] = max(t[d], now) + float(rng.choice([0.2, 0.2, 0.2, 1.0, 12.0]))
            prev = fast._devices.get(d)
            if prev is not None and prev.features is not None and rng.random() < 0.6:
                f = replace(prev.features, time=t[d], last_seen=t[d])
            else:
                f = _random_snapshot(rng, t[d])
            got, want = fast.update(d, f), plain.update(d, f)
        elif r < 0.95:  # a tick, sometimes far ahead (stale data, lost devices, escalation)
            now = max([now, *t.values()]) + float(rng.choice([0.1, 0.1, 0.5, 3.5, 11.0, 130.0]))
            got, want = fast.tick(now), plain.tick(now)
        else:  # a nurse acknowledges or silences
            d, action = str(rng.choice(list(t))), str(rng.choice(["acknowledge", "silence"]))
            alarm = str(rng.choice(["*", "asystole", "tachycardia", "device_lost"]))
            got, want = fast.command(d, alarm, action, now), plain.command(d, alarm, action, now)
        assert [_event_key(a) for a in got] == [_event_key(a) for a in want]
    for d in t:
        assert fast.active(d) == plain.active(d)
        assert fast.suppressed_for(d) == plain.suppressed_for(d)
        for b in ("eeg_line_length", "eeg_band", "emg_rms"):
            assert fast.baseline(d, b) == plain.baseline(d, b) or (
                math.isnan(fast.baseline(d, b)) and math.isnan(plain.baseline(d, b))
            )
    assert fast.suppressed == plain.suppressed
