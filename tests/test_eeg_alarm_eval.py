"""bench/eeg_alarm_eval.py: stream building and alarm scoring on hand-built events, and the replay
wiring end to end on the vendored Bonn segments (data/bonn_eeg) with the SHIPPED eeg-seizure network.

The shipped network was trained on every Bonn segment, these included, so the end-to-end test checks
the wiring (streams -> monitor -> alarms -> scores), not accuracy: the bench's figures come from
fold networks that never saw the segments they are scored on."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from vigil.edge.config import Config
from vigil.edge.messages import AlarmState
from vigil.models import seizure as sz

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # appended: bench/ module names must not shadow installed ones
ev = importlib.import_module("eeg_alarm_eval")

SEG_S = 4097 / sz.FS_BONN  # one Bonn segment, 23.6 s
R, C, A = AlarmState.RAISED, AlarmState.CLEARED, AlarmState.ACKNOWLEDGED


def _seg(set_: str, number: int) -> sz.Segment:
    return sz.Segment(set_, number, np.zeros(4097))


def test_lead_in_prefers_the_same_number_f_then_near_f_then_n():
    test = [_seg(s, n) for s in "ZONFS" for n in (10, 11, 12, 13)]
    assert [t.id for t in ev.lead_in(_seg("S", 12), test)] == ["F011", "F013", "F012"]
    assert [t.id for t in ev.lead_in(_seg("S", 10), test)] == ["F011", "F012", "F010"]
    few = [_seg("F", 10), _seg("N", 10), _seg("Z", 11), _seg("O", 10), _seg("S", 10)]
    assert [t.id for t in ev.lead_in(_seg("S", 10), few)] == ["N010", "O010", "F010"]
    assert [t.id for t in ev.lead_in(_seg("S", 10), few, 1)] == ["F010"]


def test_build_streams_one_quiet_stream_per_set_and_one_per_seizure_segment():
    test = [_seg(s, n) for s in "ZONFS" for n in (3, 1, 2)]
    streams = ev.build_streams(test)
    quiet = [(st.label, st.ids) for st in streams if st.kind == "quiet"]
    assert quiet == [(s, [f"{s}001", f"{s}002", f"{s}003"]) for s in "ZONF"]
    seiz = [st for st in streams if st.kind == "seizure"]
    assert [st.label for st in seiz] == ["S001", "S002", "S003"]
    assert all(st.parts[-1].set == "S" and len(st.parts) == 4 for st in seiz)
    assert seiz[0].onset_s == pytest.approx(3 * SEG_S) and seiz[0].duration_s == pytest.approx(4 * SEG_S)
    rec = seiz[0].recording()
    assert rec.fs == sz.FS_BONN and rec.signal.shape == (4 * 4097, 1) and rec.name == "F002+F003+F001+S001"


def test_scoring_detection_false_alarms_and_either():
    st = ev.Stream("seizure", "S001", [_seg("F", 2), _seg("F", 3), _seg("F", 1), _seg("S", 1)])
    onset = st.onset_s  # 70.8 s
    events = [
        (10.0, "seizure_model", R, 0.9),  # false, before the rule's baseline (60 s)
        (20.0, "seizure_model", C, None),
        (onset + 9.0, "seizure", R, 3.5),
        (onset + 4.0, "seizure_model", R, 0.95),
        (onset + 14.0, "seizure_model", A, None),
    ]
    events.sort(key=lambda e: e[0])
    rule = ev.score_stream(st, events, "seizure", 60.0)
    assert (rule.outcome, rule.false) == ("detected", 0) and rule.delay_s == pytest.approx(9.0)
    net = ev.score_stream(st, events, "seizure_model", 60.0)
    assert (net.outcome, net.false, net.false_before_baseline) == ("detected", 1, 1)
    assert net.delay_s == pytest.approx(4.0)
    assert net.hours == pytest.approx(onset / 3600) and net.hours_with_baseline == pytest.approx(
        (onset - 60) / 3600
    )
    both = ev.raises(events, "either", st.duration_s)
    assert [r.t for r in both] == [10.0, onset + 4.0]  # the rule's raise falls in the network's episode
    either = ev.score_stream(st, events, "either", 60.0)
    assert (either.outcome, either.false) == ("detected", 1) and either.delay_s == pytest.approx(4.0)
    # an alarm raised on the lead-in and still active at the onset; one that cleared before it
    active = [(onset - 5.0, "seizure", R, 3.1)]
    assert ev.score_stream(st, active, "seizure", 60.0).outcome == "active"
    cleared = [(onset - 8.0, "seizure", R, 3.1), (onset - 2.0, "seizure", C, None)]
    sc = ev.score_stream(st, cleared, "seizure", 60.0)
    assert (sc.outcome, sc.false, sc.false_before_baseline) == ("missed", 1, 0) and math.isnan(sc.delay_s)


def test_summarise_rates_per_set_and_after_the_baseline():
    quiet = ev.Stream("quiet", "F", [_seg("F", n) for n in range(1, 11)])  # 236 s
    other = ev.Stream("quiet", "Z", [_seg("Z", n) for n in range(1, 11)])
    seiz = ev.Stream("seizure", "S001", [_seg("F", 1), _seg("F", 2), _seg("F", 3), _seg("S", 1)])
    scores = [
        ev.score_stream(quiet, [(30.0, "seizure", R, 3.0), (100.0, "seizure", R, 3.0)], "seizure", 60.0),
        ev.score_stream(other, [], "seizure", 60.0),
        ev.score_stream(seiz, [], "seizure", 60.0),
    ]
    s = ev.summarise(scores)
    fa = s["false_alarms"]
    hours = 20 * SEG_S / 3600
    assert fa["false"] == 2 and fa["per_hour"] == pytest.approx(2 / hours, rel=1e-3)
    assert fa["by_set"]["F"]["per_hour"] == pytest.approx(4 / hours, rel=1e-3)
    assert fa["by_set"]["Z"]["false"] == 0 and set(fa["by_set"]) == {"Z", "F"}
    assert fa["false_with_baseline"] == 1
    assert fa["per_hour_with_baseline"] == pytest.approx(1 / (hours - 120 / 3600), rel=1e-3)
    assert (s["detected"], s["missed"], s["missed_ids"], s["delay_median_s"]) == (0, 1, ["S001"], None)


def test_replay_wiring_on_vendored_segments_with_the_shipped_network(data_dir: Path):
    """Wiring, not accuracy: the shipped network was trained on these very segments."""
    segs = sz.load_vendored(data_dir / "bonn_eeg", sz.VENDORED_ALL)
    streams = ev.build_streams(segs)
    assert [st.ids for st in streams if st.kind == "seizure"] == [
        ["N001", "F002", "F001", "S001"],
        ["F001", "N001", "F002", "S002"],
    ]
    runs = ev.evaluate_streams(streams, Config(), 10.0, ev.SHIPPED)
    scores = ev.score_runs(runs, Config().alarms.baseline_learn_s)
    rule, net = scores["rule-only"], scores["network"]
    assert set(rule) - {"other_alarms", "windows_classified", "frames_dropped"} == {"seizure"}
    assert rule["windows_classified"] == 0 and not any(
        e[1] == "seizure_model" for _, r in runs["rule-only"] for e in r.events
    )
    # one window a second once the first 4 s are in: about duration - 4 windows per stream
    expect = sum(int(st.duration_s) - 4 for st in streams)
    assert expect - len(streams) <= net["windows_classified"] <= expect + len(streams)
    assert net["frames_dropped"] == 0 and rule["frames_dropped"] == 0
    # the rule alarm is the same with and without the network beside it
    for (_, a), (_, b) in zip(runs["rule-only"], runs["network"], strict=True):
        assert [e for e in a.events if e[1] == "seizure"] == [e for e in b.events if e[1] == "seizure"]
    # the quiet streams are shorter than the rule's 60-s baseline: it cannot raise there
    assert rule["seizure"]["false_alarms"]["false"] == 0
    assert rule["seizure"]["false_alarms"]["hours_with_baseline"] == 0.0
    # each seizure stream: a raise inside the S segment, after its 70.8 s lead-in (the rule's
    # 10-s condition delay and the network's 5-s one on top of their windows)
    for name, lo in (("seizure", 10.0), ("seizure_model", 5.0)):
        s = net[name]
        assert (s["detected"], s["missed"], s["false_alarms_lead_in"]["false"]) == (2, 0, 0), name
        assert lo <= s["delay_min_s"] <= s["delay_max_s"] < SEG_S, name
    assert net["either"]["delay_max_s"] == pytest.approx(
        min(net["seizure"]["delay_max_s"], net["seizure_model"]["delay_max_s"]), abs=0.01
    )
    rows = ev.per_stream(runs, 60.0)
    assert [r["segments"] for r in rows] == [st.ids for st in streams]
    assert rows[-1]["network:seizure_model"]["outcome"] == "detected"
