"""``vigil demo``: the ward, its scripts, the headless run with and without a broker, the live view."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import threading
from pathlib import Path

from broker import Broker, Collector

from vigil.edge.demo import (
    DemoDevice,
    bonn_recording,
    myo_recording,
    recorded_ward,
    render,
    run_demo,
    simulated_ward,
)
from vigil.edge.outbox import Outbox


def test_script_labels_and_loops():
    d = DemoDevice(1, "x", "ecg", "simulated", ((10.0, 20.0, "af"),), "sinus rhythm", period_s=30.0)
    assert [d.happening(t) for t in (0, 10, 19.9, 20, 40, 55)] == ["sinus rhythm", "af", "af", "sinus rhythm",
                                                                  "af", "sinus rhythm"]  # fmt: skip
    once = DemoDevice(1, "x", "ecg", "simulated", ((10.0, 20.0, "af"),), "sinus rhythm")
    assert once.happening(40) == "sinus rhythm" and math.isinf(once.period_s)


def test_ward_is_twelve_named_devices_with_real_scripts(data_dir: Path):
    specs, sim = simulated_ward()
    transports, rec = recorded_ward(speed=1.0, data=data_dir)
    ward = sim + rec
    assert len(ward) == 12 and len({d.device_id for d in ward}) == 12 and len({d.name for d in ward}) == 12
    assert [s.device_id for s in specs] == [d.device_id for d in sim]
    assert {d.kind for d in ward} == {"ecg", "eeg", "emg"}
    assert all(t.loop for t in transports)
    by_name = {d.name: d for d in ward}
    # MIT-BIH 208's rhythm annotations: normal sinus, with bigeminy / trigeminy stretches
    labels = {what for _, _, what in by_name["mitdb-208"].script}
    assert "normal sinus" in labels and labels & {"ventricular bigeminy", "ventricular trigeminy"}
    assert by_name["patch-af"].happening(30.0) == "atrial fibrillation 115 bpm"
    rec_eeg, script = bonn_recording(data_dir)
    assert script[-1][2].startswith("seizure") and math.isclose(script[-1][1], rec_eeg.duration_s)
    rec_emg, script = myo_recording(data_dir)
    assert rec_emg.signal.shape[1] == 8 and {w for _, _, w in script} >= {"rest", "fist"}
    assert 0.01 < float(abs(rec_emg.signal).max()) < 10.0  # mV


def _alerts_in(path: Path) -> list[dict]:
    with Outbox(path) as box:
        return [json.loads(r.payload) for r in box.pending(10_000) if r.kind == "alert"]


def test_headless_without_broker_keeps_alarms_in_the_outbox(tmp_path: Path):
    out = io.StringIO()
    outbox = tmp_path / "outbox"
    assert run_demo(seconds=16.0, speed=12.0, broker=None, outbox=str(outbox), out=out) == 0
    text = out.getvalue()
    assert "mqtt off (alarms stay in the outbox)" in text
    assert "dropped by backpressure 0" in text
    alerts = _alerts_in(outbox)
    raised = {(a["device"], a["alarm"]) for a in alerts if a["state"] == "raised"}
    # up to 192 s of signal (less on a loaded machine): pause, lead off (30 s), brady (40 s), VT (60 s)
    assert {("patch-pause", "pause"), ("patch-leads", "lead_off"), ("patch-brady", "bradycardia"),
            ("patch-vt", "tachycardia")} <= raised  # fmt: skip
    # the quiet ones stay quiet (device lost would only say this machine could not keep up)
    assert not {d for d, a in raised if a != "device_lost"} & {"patch-sinus", "mitdb-100"}
    for a in alerts:  # one printed line per alarm event
        assert f"{a['device']}  {a['priority']}  {a['state']}" in text


def test_headless_with_broker_delivers_every_alarm(tmp_path: Path):
    with Broker(tmp_path / "broker") as broker:
        collector = Collector(broker, "vigil/demo/#")
        try:
            url = f"mqtt://127.0.0.1:{broker.port}"
            cmd = [sys.executable, "-m", "vigil.edge.cli", "demo", "--seconds", "10", "--speed", "12",
                   "--broker", url, "--outbox", str(tmp_path / "outbox")]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            assert f"mqtt {url}" in done.stdout
            assert "0 pending" in done.stdout  # every alarm acknowledged by the broker before exit
            printed = [ln for ln in done.stdout.splitlines() if "  raised  " in ln or "  cleared  " in ln]
            ids = set(collector.alert_ids())
            assert len(ids) == len(printed) >= 5
            with collector._lock:
                topics = {m.topic for m in collector.messages}
            assert "vigil/demo/mitdb-100/vitals" in topics and "vigil/demo/headband/vitals" in topics
        finally:
            collector.close()


def test_unreachable_broker_is_reported_and_the_demo_still_runs(tmp_path: Path):
    from broker import free_port

    out = io.StringIO()
    url = f"mqtt://127.0.0.1:{free_port()}"
    assert run_demo(seconds=2.0, speed=4.0, broker=url, outbox=str(tmp_path / "outbox"), out=out) == 0
    assert "not reachable now (alarms wait in the outbox" in out.getvalue()


def test_live_view_renders(tmp_path: Path):
    from rich.console import Console

    out = io.StringIO()
    result: list[int] = []
    runner = threading.Thread(
        target=lambda: result.append(
            run_demo(seconds=3.0, speed=8.0, broker=None, outbox=str(tmp_path / "o"), live=True, out=out)
        )
    )
    runner.start()
    runner.join(60)
    assert result == [0]
    text = out.getvalue()
    assert "Vigil demo" in text and "patch-af" in text and "latest alarm events" in text

    from vigil.edge.demo import DemoMonitor, DemoSink, Status, demo_config

    config = demo_config(None, str(tmp_path / "o2"))
    _, sim = simulated_ward()
    with Outbox(tmp_path / "o2") as box:
        sink = DemoSink(box, None, lambda a: None)
        monitor = DemoMonitor(config, sink, commands=None, ward=sim)
        console = Console(record=True, width=200, file=io.StringIO())
        console.print(render(monitor.take_snapshot(), monitor, Status(4.0, "off", tmp_path / "o2"), sink))
        shown = console.export_text()
    assert "waiting for data" in shown and "patch-sinus" in shown
