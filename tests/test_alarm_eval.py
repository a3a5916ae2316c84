"""bench/alarm_eval.py: interval matching on hand-built episodes, reference extraction from
annotations, and the whole evaluation end to end on the vendored record data/mitdb/208."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from vigil.edge.alarms import AlarmConfig
from vigil.edge.messages import AlarmState

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # appended: bench/ module names must not shadow installed ones
ae = importlib.import_module("alarm_eval")

CFG = AlarmConfig()


def test_merge_total_and_overlap():
    assert ae.merge([(5, 6), (0, 2), (2, 3), (1, 1.5)]) == [(0, 3), (5, 6)]
    assert ae.total([(0, 2), (1, 3), (10, 11)]) == 4
    assert ae.overlap_s([(0, 10), (20, 30)], [(5, 25)]) == 10
    assert ae.overlap_s([(0, 1)], [(2, 3)]) == 0
    assert ae.overlaps((0, 1), (1, 2)) and not ae.overlaps((0, 1), (1.1, 2))


def test_score_on_hand_built_episodes():
    episodes = [(10.0, 20.0), (100.0, 110.0), (200.0, 210.0), (400.0, 401.0)]
    raised = [
        ae.Raised("pause", 15.0, 25.0),  # inside episode 1: delay 5
        ae.Raised("pause", 90.0, 130.0),  # active at episode 2's onset: detected, no delay
        ae.Raised("pause", 213.0, 214.0),  # after episode 3 but within its end + tol: delay 13
        ae.Raised("pause", 500.0, 505.0),  # matches nothing: false
        ae.Raised("pause", 300.0, 301.0),  # matches nothing, inside an excluded (VF) span
    ]
    s, verdicts = ae.score(episodes, raised, tol=5.0, exclude=[(298.0, 299.5)])
    assert (s.episodes, s.detected, s.already_active) == (4, 3, 1)
    assert s.delays == [5.0, 13.0]
    assert verdicts == ["true", "true", "true", "false", "vf"]
    assert (s.raised, s.true, s.false, s.during_vf) == (5, 3, 1, 1)
    assert s.se == pytest.approx(0.75) and s.ppv == pytest.approx(0.75)
    assert s.delay(50) == pytest.approx(9.0)
    # durations: reference 31 s; alarm spans 10 + 40 + 1 + 1 + 5 = 57 s; overlap 5 (15-20) + 10 (100-110)
    assert s.ref_s == 31.0 and s.alarm_s == 57.0
    assert s.both_s == pytest.approx(5.0 + 10.0)
    assert s.dur_se == pytest.approx(15 / 31) and s.dur_ppv == pytest.approx(15 / 57)


def test_score_edges():
    # a raise before the onset that cleared before it is no detection, and is false beyond tol
    s, v = ae.score([(100.0, 110.0)], [ae.Raised("x", 80.0, 90.0)], tol=5.0)
    assert (s.detected, s.false, v) == (0, 1, ["false"])
    # ... but true when its span comes within tol of the episode
    s, v = ae.score([(100.0, 110.0)], [ae.Raised("x", 80.0, 96.0)], tol=5.0)
    assert (s.detected, s.true) == (0, 1)
    # a raise later than end + tol detects nothing
    s, _ = ae.score([(100.0, 110.0)], [ae.Raised("x", 115.5, 120.0)], tol=5.0)
    assert s.detected == 0 and s.false == 1
    s, v = ae.score([], [], tol=5.0)
    assert math.isnan(s.se) and math.isnan(s.ppv) and v == []
    total = ae.Score()
    total += ae.score([(0.0, 1.0)], [ae.Raised("x", 0.5, 2.0)], 1.0)[0]
    total += ae.score([(0.0, 1.0)], [], 1.0)[0]
    assert (total.episodes, total.detected, total.raised) == (2, 1, 1)


def test_alarm_spans_pair_raise_and_clear():
    R, C, A = AlarmState.RAISED, AlarmState.CLEARED, AlarmState.ACKNOWLEDGED
    events = [
        (1.0, "pause", R, 2.6),
        (2.0, "asystole", R, 4.1),
        (3.0, "pause", C, None),
        (12.0, "asystole", A, None),
        (12.0, "asystole", C, None),
        (20.0, "pause", R, 2.7),
    ]
    spans = ae.alarm_spans(events, end_s=30.0)
    assert [(r.alarm, r.t, r.end, r.cleared) for r in spans] == [
        ("pause", 1.0, 3.0, True),
        ("asystole", 2.0, 12.0, True),
        ("pause", 20.0, 30.0, False),
    ]


def test_reference_episodes_from_rr_and_rhythm():
    beats = np.array([0.0, 1.0, 2.0, 5.0, 6.0, 11.0])
    assert ae.long_rr(beats, 2.5) == [(2.0, 5.0), (6.0, 11.0)]
    # 200 bpm for 10 s, then 60 bpm: one tachycardia episode from the second fast beat
    fast = np.concatenate([np.arange(0, 10.01, 0.3), 10.2 + np.arange(1, 10)])
    (ep,) = ae.hr_episodes(fast, 150.0, True, 5.0, 30.0)
    assert ep[0] == pytest.approx(0.3) and ep[1] == pytest.approx(fast[np.argmax(np.diff(fast) > 0.4)] + 0.4)
    # a 3 s fast burst is too short; two 6 s bursts 1 s apart are one episode with a 3 s join
    burst = lambda t0, n: t0 + 0.3 * np.arange(n)  # noqa: E731
    two = np.concatenate([burst(0, 21), burst(6.0 + 1.0, 21)])
    assert len(ae.hr_episodes(two, 150.0, True, 5.0, 20.0)) == 2
    assert len(ae.hr_episodes(two, 150.0, True, 5.0, 20.0, join_s=3.0)) == 1
    assert ae.hr_episodes(burst(0, 11), 150.0, True, 5.0, 20.0) == []
    # bradycardia: 2 s RRs for 12 s (<= 40 bpm from the second beat); the falling rate while a beat is
    # awaited counts from 1.5 s after the last beat
    slow = np.array([0.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 13.8])
    assert ae.hr_episodes(slow, 40.0, False, 5.0, 13.8) == [(2.5, 13.8)]
    assert ae.hr_episodes(np.array([0.0, 0.8, 1.6]), 40.0, False, 5.0, 10.0) == [(3.1, 10.0)]
    assert ae.beat_runs(np.arange(8.0), list("NVVVNVVE"), ae.V_CLASS, 3) == [(1.0, 3.0), (5.0, 7.0)]
    assert ae.label_spans([0.0, 5.0, 9.0], ["N", "AFIB", "N"], 12.0) == {
        "N": [(0.0, 5.0), (9.0, 12.0)],
        "AFIB": [(5.0, 9.0)],
    }
    assert ae.noise_subtype_marks(1) and ae.noise_subtype_marks(-1) and ae.noise_subtype_marks(0x10)
    assert not ae.noise_subtype_marks(0) and not ae.noise_subtype_marks(2)


def test_reference_from_annotations_drops_vf_and_reads_rhythm():
    fs = 100.0
    rows = [(0, "+", "(N"), (100, "N", ""), (200, "N", ""), (300, "V", ""), (400, "V", ""), (500, "V", ""),
            (600, "N", ""), (650, "+", "(AFIB"), (700, "N", ""), (900, "+", "(N"), (1000, "N", ""),
            (1100, "[", ""), (1150, "+", "(VFL"), (1600, "]", ""), (1650, "+", "(N"), (1700, "N", ""),
            (1800, "~", ""), (1900, "N", ""), (2000, "N", "")]  # fmt: skip
    sample, symbol, aux = zip(*rows, strict=True)
    subtype = [1 if s == "~" else 0 for s in symbol]
    ref = ae.reference_from_annotations(sample, symbol, aux, subtype, fs, 25.0, CFG)
    assert ref.episodes["irregular_rhythm"] == [(6.5, 9.0)]
    assert ref.episodes["pause"] == [(7.0, 10.0)]  # the RR of 10-17 s crosses VF: dropped
    assert ref.episodes["asystole"] == [] and ref.episodes["bradycardia"] == []
    assert ref.vf == [(11.0, 16.0)]
    assert ref.info["v_runs"] == [(3.0, 5.0)] and ref.episodes["ventricular_run"] == [(3.0, 5.0)]
    assert ref.noise == [(18.0, 25.0)]
    assert ref.rhythm_at(8.0) == "AFIB" and ref.rhythms_in((5.0, 12.0)) == ["N", "AFIB", "VFL"]
    v, s = ref.ectopy((0.0, 6.0))
    assert v == pytest.approx(0.5) and s == 0.0


@pytest.fixture(scope="module")
def run_208(tmp_path_factory, data_dir) -> tuple[dict, str]:
    """The whole script on the vendored record 208: its JSON and what it printed."""
    out = tmp_path_factory.mktemp("alarm_eval") / "208.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = ae.main(["--data", str(data_dir), "--records", "208", "--per-record", "--json", str(out)])
    assert rc == 0
    return json.loads(out.read_text()), printed.getvalue()


def test_end_to_end_on_208(run_208):
    result, printed = run_208
    (rec,) = result["records"]
    assert rec["record"] == "208" and rec["duration_s"] == pytest.approx(650000 / 360)
    assert rec["dropped"] == 0 and rec["frames"] == math.ceil(650000 / 32)
    scores = rec["scores"]
    # 208 has no AFIB: whatever the AF screen raises there is scored false
    af = scores["irregular_rhythm"]
    assert af["episodes"] == 0 and af["true"] == 0 and af["false"] == af["raised"]
    # its one reference RR over 2.5 s (3.1 s) is found by the pause alarm
    assert scores["pause"]["episodes"] == 1 and scores["pause"]["detected"] == 1
    assert scores["pause"]["delays"][0] == pytest.approx(2.6, abs=0.5)
    assert scores["ventricular_run"]["raised"] == 0  # the rule-only monitor has no beat classes
    t = result["totals"]
    assert t["hours"] == pytest.approx(650000 / 360 / 3600)
    assert t["alarms"]["ventricular_run"]["needs_networks"] and t["networks"] == []
    assert all(e[1] != "lead_off" for e in rec["events"])
    assert "needs the networks (--networks)" in printed and printed.strip().splitlines()[-2].startswith(
        "summary:"
    )


def test_count_episodes():
    v = np.array([0.0, 1.0, 2.0, 100.0, 101.0, 102.0, 130.0])
    assert ae.count_episodes(v, 60.0, 3, 0.0) == [(2.0, 60.0), (102.0, 161.0)]
    assert ae.count_episodes(v, 60.0, 3, 60.0) == [(2.0, 161.0)]  # less than 60 s apart: one
    assert ae.count_episodes(v, 60.0, 4, 0.0) == [(130.0, 160.0)]
    assert ae.count_episodes(np.zeros(0), 60.0, 1, 0.0) == []


def test_compare_shows_what_the_beat_network_adds_on_208(data_dir):
    """208 (about 1 beat in 3 a PVC): the beat network raises the ectopy advisory the rule-only monitor
    cannot. 208 is an ecg-beats training record, so this checks the wiring, not the accuracy (the
    figures on records the network never saw are in the closing note and the model card)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = ae.main(["--data", str(data_dir), "--records", "208", "--compare"])
    assert rc == 0
    lines = printed.getvalue().splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("What the networks ("))
    table = {line.split()[0]: line for line in lines[start + 2 :] if "|" in line}
    assert "cannot raise" in table["ectopy"].split("|")[1]
    net = table["ectopy"].split("|")[2].split()
    assert int(net[0]) == 1 and net[1] == "1.00"  # the one reference episode (whole record) detected
    assert table["pause"].split("|")[1].split() == table["pause"].split("|")[2].split()  # rules unchanged


@pytest.mark.xfail(reason="engine finding: COSEn flags 208's frequent PVCs as AF (bench/alarm_eval.py)")
def test_no_af_alarm_on_208(run_208):
    assert run_208[0]["records"][0]["scores"]["irregular_rhythm"]["raised"] == 0


def test_rhythm_network_spares_208_the_false_af_alarm(data_dir, tmp_path):
    """The COSEn screen calls 208's frequent PVCs AF (the xfail above); the rhythm network, trained on
    CinC 2017 rhythm labels (its pretraining reads MIT-BIH DS1 beat labels, 208's among them, never a
    rhythm label), does not."""
    out = tmp_path / "208.json"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = ae.main(["--data", str(data_dir), "--records", "208", "--networks", "zoo", "--tasks",
                      "ecg-rhythm", "--json", str(out)])  # fmt: skip
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["totals"]["networks"] == ["ecg-rhythm"]
    scores = result["records"][0]["scores"]
    assert scores["irregular_rhythm"]["raised"] == 0  # stands down for the network
    assert scores["atrial_fibrillation"]["raised"] == 0
