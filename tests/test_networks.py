"""The shipped networks inside the monitor (edge/networks.py): batched inference per tick, beat classes
equal to the offline path, skipped windows counted, refused models leaving the running one in place,
and the network-driven alarms (ventricular run, ectopy, seizure) on real vendored records."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vigil.edge.alarms import MODEL_BEAT_CLASSES, AlarmEngine, Features
from vigil.edge.beat_classes import BeatClassifier, classify_signal
from vigil.edge.config import config_from_dict
from vigil.edge.messages import AlarmState, Alert, Vitals
from vigil.edge.networks import Networks, load_networks, zoo_dir
from vigil.edge.pipeline import Monitor
from vigil.edge.run import CommandInbox, RunMonitor
from vigil.firmware_bridge.protocol import ChannelKind, SampleFormat
from vigil.firmware_bridge.replay import Recording, ReplayTransport, read_wfdb
from vigil.firmware_bridge.transport import Received, Transport

ZOO = zoo_dir()


def _raised(out: list, alarm: str | None = None) -> list[tuple[str, float]]:
    return [
        (a.alarm, a.device_time_us * 1e-6)
        for a in out
        if isinstance(a, Alert) and a.state is AlarmState.RAISED and (alarm is None or a.alarm == alarm)
    ]


class Tap(Networks):
    """Networks that also keep every beat label it hands a session, per device."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.labels: dict[str, list[str]] = {}

    def deliver(self, session, out) -> None:
        self.labels.setdefault(session.name, []).extend(out.get(MODEL_BEAT_CLASSES, []))
        super().deliver(session, out)


def _beats_networks(cls=Networks) -> Networks:
    nets = cls()
    assert nets.load("ecg-beats", ZOO / "ecg-beats")
    return nets


def _replay(monitor: Monitor, *transports: Transport) -> None:
    asyncio.run(monitor.run(list(transports), lossless=True))


def test_monitor_beat_classes_equal_the_offline_path_and_are_batched_across_devices(data_dir: Path):
    rec = read_wfdb(data_dir / "mitdb" / "208", channels=[0]).segment(0, 180)
    nets = _beats_networks(Tap)
    out: list = []
    mon = Monitor(config_from_dict({}), out.append, networks=nets)
    _replay(mon, ReplayTransport(rec, device_id=1, speed=0), ReplayTransport(rec, device_id=2, speed=0))
    clf = BeatClassifier(ZOO / "ecg-beats")
    _, cls, _ = classify_signal(rec.signal[:, 0], rec.fs, clf)
    offline = [clf.classes[c] for c in cls if c >= 0]
    for dev in ("1", "2"):
        mine = nets.labels[dev]
        # the monitor has not seen the end of the stream (the last beat waits for its successor)
        assert len(offline) - 2 <= len(mine) <= len(offline)
        assert mine == offline[: len(mine)]
        assert Counter(mine)["V"] > 50  # 208: ~1 beat in 3 is a PVC
    st = nets.stats["ecg-beats"]
    assert st.rows == sum(len(v) for v in nets.labels.values()) and st.errors == 0
    assert st.largest_batch >= 2 and st.calls < st.rows  # both devices' beats in one call per tick
    assert _raised(out, "ectopy")  # ~30 PVCs a minute
    # the vitals carry the class counts: what the network said so far (the latest vitals lag a little)
    vitals = [v for v in out if isinstance(v, Vitals) and v.device == "1"]
    beats = vitals[-1].networks["beats"]
    assert 0 < sum(beats.values()) <= len(nets.labels["1"])
    assert beats == dict(Counter(nets.labels["1"][: sum(beats.values())]))
    assert Vitals.from_json(vitals[-1].to_json()) == vitals[-1]


def test_windows_over_gaps_and_poor_signal_are_counted_not_classified(data_dir: Path):
    rec = read_wfdb(data_dir / "mitdb" / "100", channels=[0]).segment(0, 120)

    class DropSome(Transport):
        """Every 300th frame lost (27 s): a sequence gap the session NaN-fills."""

        def __init__(self, inner: Transport) -> None:
            super().__init__()
            self.inner, self.k = inner, 0

        async def items(self):
            async for it in self.inner:
                self.k += 1
                if not (isinstance(it, Received) and self.k % 300 == 0):
                    yield it

        async def close(self) -> None:
            await self.inner.close()

    nets = _beats_networks()
    mon = Monitor(config_from_dict({}), None, networks=nets)
    _replay(mon, DropSome(ReplayTransport(rec, speed=0)))
    assert nets.skipped[("ecg-beats", "bad_samples")] >= 3
    assert nets.stats["ecg-beats"].rows > 100

    # a flat, noisy trace: the quality gate closes and nothing is classified
    noisy = Recording(
        "noise", 360.0, np.random.default_rng(0).normal(0, 2.0, (360 * 60, 1)), ("MLII",), ("mV",)
    )
    nets = _beats_networks()
    mon = Monitor(config_from_dict({}), None, networks=nets)
    _replay(mon, ReplayTransport(noisy, speed=0, sample_format=SampleFormat.FLOAT32))
    assert mon.session(1).quality_score <= 0.3
    assert nets.stats["ecg-beats"].rows <= 10  # only before the first quality window closed the gate
    assert nets.skipped[("ecg-beats", "poor_signal")] > 20


def test_a_refused_model_keeps_the_running_one(tmp_path: Path):
    nets = _beats_networks()
    running = nets.nets["ecg-beats"]
    bad = tmp_path / "zoo"
    shutil.copytree(ZOO, bad, ignore=shutil.ignore_patterns("*.pt"))
    data = (bad / "ecg-beats.int8.onnx").read_bytes()
    (bad / "ecg-beats.int8.onnx").write_bytes(data[: len(data) // 2])  # truncated
    assert not nets.load("ecg-beats", bad / "ecg-beats")
    assert not nets.load("ecg-beats", bad / "eeg-seizure")  # another task's model
    assert not nets.load("ecg-beats", bad / "nothing-here")
    assert nets.nets["ecg-beats"] is running and nets.stats["ecg-beats"].refused == 3
    assert nets.load("ecg-beats", ZOO / "ecg-beats", precision="fp32")  # a good one is swapped in
    assert nets.nets["ecg-beats"] is not running and nets.stats["ecg-beats"].swaps == 1


def test_run_monitor_reload_refuses_a_corrupt_zoo_and_keeps_classifying(tmp_path: Path, data_dir: Path):
    zoo = tmp_path / "zoo"
    shutil.copytree(ZOO, zoo, ignore=shutil.ignore_patterns("*.pt"))
    cfg = config_from_dict({"models": {"dir": str(zoo), "ecg_rhythm": False, "eeg_seizure": False}})
    mon = RunMonitor(cfg, None, commands=CommandInbox())
    assert list(mon.networks.nets) == ["ecg-beats"]
    running = mon.networks.nets["ecg-beats"]
    card = zoo / "ecg-beats.card.json"
    card.write_text(card.read_text().replace('"samples": 96', '"samples": 90'))  # card disagrees with the net
    mon.request_reload()
    rec = read_wfdb(data_dir / "mitdb" / "100", channels=[0]).segment(0, 60)
    _replay(mon, ReplayTransport(rec, speed=0))
    assert mon.networks.nets["ecg-beats"] is running and mon.networks.stats["ecg-beats"].refused == 1
    assert mon.networks.stats["ecg-beats"].rows > 50
    off = RunMonitor(config_from_dict({"models": {"enabled": False}}), None, commands=CommandInbox())
    assert off.networks is None


def test_seizure_network_raises_the_seizure_alarm_on_ictal_eeg_only(data_dir: Path):
    def bonn(*names: str) -> Recording:
        x = np.concatenate([np.loadtxt(data_dir / "bonn_eeg" / f"{n}.txt") for n in names])
        return Recording("bonn", 173.61, x[:, None], ("EEG",), ("uV",))

    nets = Networks()
    assert nets.load("eeg-seizure", ZOO / "eeg-seizure")
    out: list = []
    mon = Monitor(config_from_dict({}), out.append, networks=nets)
    rec = bonn("Z001", "O001", "S001")  # 23.6 s each: healthy eyes open, eyes closed, ictal
    kw = dict(kinds=(ChannelKind.EEG,), sample_format=SampleFormat.INT24)
    _replay(mon, ReplayTransport(rec, speed=0, **kw))
    raised = _raised(out, "seizure_model")
    anchor = mon.session(1).anchor
    assert len(raised) == 1 and raised[0][1] - anchor > 2 * 23.6  # during S001, not before
    assert nets.stats["eeg-seizure"].rows >= 60


def test_engine_ectopy_and_held_probabilities():
    eng = AlarmEngine()
    ok = dict(quality_score=0.9, hr_bpm=75.0, since_last_beat_s=0.5)
    events = []
    for k in range(130):  # one update a second, a PVC every 4 beats (15/min)
        labels = ["N", "N", "N", "V"] if k % 3 == 0 else ["N"]
        events += eng.update("d", Features(float(k), model={MODEL_BEAT_CLASSES: labels}, **ok))
    ectopy = [e for e in events if e.alarm == "ectopy" and e.state is AlarmState.RAISED]
    assert len(ectopy) == 1 and ectopy[0].device_time_us * 1e-6 == pytest.approx(60.0)  # measured after 60 s
    # the AF probability is reported every 5 s and held in between; the COSEn screen stands down
    eng = AlarmEngine()
    events = []
    for k in range(60):
        model = {"af_probability": 0.9} if k % 5 == 0 else {}
        events += eng.update("d", Features(float(k), af_cosen=0.0, n_rr=40, model=model, **ok))
    raised = [(e.alarm, e.device_time_us * 1e-6) for e in events if e.state is AlarmState.RAISED]
    assert raised == [("atrial_fibrillation", 30.0)]


def test_load_networks_leaves_out_what_is_missing(tmp_path: Path):
    shutil.copytree(ZOO, tmp_path / "zoo", ignore=shutil.ignore_patterns("*.pt", "eeg-seizure*"))
    nets = load_networks(tmp_path / "zoo", {"ecg-beats": {}, "eeg-seizure": {}})
    assert "ecg-beats" in nets.nets and "eeg-seizure" not in nets.nets
    assert nets.stats["eeg-seizure"].refused == 1
    with pytest.raises(ValueError, match="unknown network task"):
        nets.load("ecg-everything", ZOO / "ecg-beats")


def test_rhythm_ring_keeps_the_newest_samples_in_order():
    from vigil.edge.networks import _RhythmState

    rng = np.random.default_rng(1)
    st, seen = _RhythmState(100.0, np.zeros(50)), np.zeros(0)
    for n in rng.integers(0, 80, 40):
        x = rng.standard_normal(n)
        st.write(x)
        seen = np.concatenate([seen, x])
        assert st.filled == min(50, len(seen))
        if st.filled == 50:
            np.testing.assert_array_equal(st.window(), seen[-50:])


def test_rhythm_network_drives_the_af_alarm_and_the_cosen_screen_stands_down(data_dir: Path):
    """A 60-s AF strip and a normal one (CinC 2017, vendored; training strips of ecg-rhythm, so this
    checks the wiring: the figures on unseen records are in the model card and bench/alarm_eval.py)."""

    def run(name: str) -> tuple[list, Networks]:
        nets = Networks()
        assert nets.load("ecg-rhythm", ZOO / "ecg-rhythm")
        out: list = []
        mon = Monitor(config_from_dict({}), out.append, networks=nets)
        rec = read_wfdb(data_dir / "cinc2017" / name, channels=[0], annotator=None)
        # a minute of signal: the strip once, or looped when it is shorter
        transport = ReplayTransport(rec, speed=0, loop=rec.duration_s < 60)
        _replay(mon, _Take(transport, 60.0 * rec.fs / 32))
        return out, nets

    out, nets = run("A00005")  # AF, 60 s
    raised = _raised(out)
    assert [a for a, _ in raised] == ["atrial_fibrillation"]
    assert nets.stats["ecg-rhythm"].rows >= 4  # a window every 10 s once 12 s are buffered
    vitals = [v for v in out if isinstance(v, Vitals)]
    assert vitals[-1].networks["rhythm"] == "A" and vitals[-1].networks["af_probability"] > 0.6
    out, _ = run("A00001")  # normal sinus rhythm, 30 s looped
    assert not [a for a, _ in _raised(out) if a in ("atrial_fibrillation", "irregular_rhythm")]


class _Take(Transport):
    """The first ``n`` frames of a transport."""

    def __init__(self, inner: Transport, n: float) -> None:
        super().__init__()
        self.inner, self.n = inner, int(n)

    async def items(self):
        k = 0
        async for it in self.inner:
            yield it
            k += isinstance(it, Received)
            if k >= self.n:
                return

    async def close(self) -> None:
        await self.inner.close()


def test_paced_devices_get_no_beat_classes(data_dir: Path):
    rec = read_wfdb(data_dir / "mitdb" / "208", channels=[0]).segment(0, 60)
    cfg = config_from_dict({"devices": [
        {"id": "bed1", "source": "udp://127.0.0.1:9000", "paced": True},
        {"id": "bed2", "source": "udp://127.0.0.1:9001"},
    ], "models": {"ecg_rhythm": False, "eeg_seizure": False}})  # fmt: skip
    mon = RunMonitor(
        cfg, None, names=lambda dev, stream: {1: "bed1", 2: "bed2-1"}[dev], commands=CommandInbox()
    )
    assert mon.networks.paced == ("bed1",)
    assert not mon.networks.is_paced("bed2-1") and mon.networks.is_paced("bed1-3")
    _replay(mon, ReplayTransport(rec, device_id=1, speed=0), ReplayTransport(rec, device_id=2, speed=0))
    assert (
        "beats" not in mon.session(1).net_summary and sum(mon.session(2).net_summary["beats"].values()) > 50
    )
    assert mon.networks.skipped[("ecg-beats", "paced")] > 50
