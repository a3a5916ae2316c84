"""``vigil run``: the configured monitor end to end (sources, outbox, MQTT, commands)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from broker import Broker, Collector

from vigil.edge.commands import Command
from vigil.edge.config import DeviceConfig, load_config
from vigil.edge.messages import SCHEMA_VITALS
from vigil.edge.run import CommandStats, Namer, group_sources, run_monitor


def _dev(id_: str, source: str) -> DeviceConfig:
    return DeviceConfig(id=id_, source=source)


def test_device_names_per_source():
    sources = group_sources(
        [
            _dev("ecg", "sim://?devices=4&kind=ecg"),
            _dev("eeg", "sim://?devices=1&kind=ecg"),
            _dev("patch", "udp://127.0.0.1:9000"),
            _dev("left", "tcp://127.0.0.1:9100"),
            _dev("a", "serial:///dev/ttyACM0"),
            _dev("b", "serial:///dev/ttyACM0"),
        ]
    )
    assert [len(s.entries) for s in sources] == [1, 1, 1, 1, 2]
    names = Namer(sources)
    span = 2**32
    assert [names(n, 0) for n in (1, 4)] == ["ecg-1", "ecg-4"]
    assert names(span + 1, 0) == "eeg"
    assert names(2 * span + 77, 0) == "patch" and names(2 * span + 77, 2) == "patch-s2"
    assert names(3 * span + 5, 0) == "left-5"
    assert [names(4 * span + n, 0) for n in (1, 2, 3)] == ["a", "b", "a-3"]


def test_run_defaults_exits_0_and_leaves_an_outbox(tmp_path: Path):
    outbox = tmp_path / "state" / "outbox"
    r = subprocess.run(
        [sys.executable, "-m", "vigil.edge.cli", "run", "--seconds", "3", "--every", "1",
         "--set", f"storage.outbox_path={outbox}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert outbox.is_file()
    assert "sim://?devices=4&kind=ecg" in r.stdout and "frames" in r.stdout


def test_run_bad_config_exits_2(tmp_path: Path):
    r = subprocess.run(
        [sys.executable, "-m", "vigil.edge.cli", "run", "--set", "mqtt.keepalive_s=1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "keepalive_s" in r.stderr


def _replay_config(tmp_path: Path, data_dir: Path, port: int) -> Path:
    path = tmp_path / "vigil.toml"
    path.write_text(
        f"""
[monitor]
site = "ward"
id = "mon-test"

[[devices]]
id = "mitdb-100"
source = "replay://{data_dir / "mitdb" / "100"}?speed=0"
kind = "ecg"
fs = 360.0

[mqtt]
enabled = true
url = "mqtt://127.0.0.1:{port}"
vitals_period_s = 10.0

[storage]
outbox_path = "{tmp_path / "outbox"}"
"""
    )
    return path


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_replay_with_mqtt_publishes_vitals_and_applies_commands(tmp_path: Path, data_dir: Path):
    with Broker(tmp_path / "broker") as broker:
        collector = Collector(broker, "vigil/ward/#")
        try:
            config = load_config(_replay_config(tmp_path, data_dir, broker.port))
            out = io.StringIO()
            result: list[CommandStats] = []
            runner = threading.Thread(
                target=lambda: result.append(run_monitor(config, seconds=12.0, report_s=1.0, out=out))
            )
            runner.start()

            def vitals() -> list[dict]:
                with collector._lock:
                    msgs = list(collector.messages)
                return [json.loads(m.payload) for m in msgs if m.topic == "vigil/ward/mitdb-100/vitals"]

            assert _wait(lambda: vitals(), 10.0), out.getvalue()
            v = vitals()[0]
            assert v["schema"] == SCHEMA_VITALS and v["device"] == "mitdb-100" and v["kind"] == "ecg"

            topic = "vigil/ward/mitdb-100/command"
            ack = Command.acknowledge("*").to_json()
            for payload in (ack, ack, b"not json", Command.acknowledge("no_such_alarm").to_json()):
                collector.client.publish(topic, payload, qos=1).wait_for_publish(5)
            runner.join(30)
            assert not runner.is_alive()
        finally:
            collector.close()
    stats = result[0]
    assert (stats.received, stats.applied, stats.duplicate, stats.malformed) == (4, 1, 1, 2)
    assert "commands 1 (dup 1 malformed 2)" in out.getvalue()
    assert "mqtt connected" in out.getvalue()


def test_sigterm_stops_cleanly(tmp_path: Path, data_dir: Path):
    """systemd/docker stop: SIGTERM ends the run like Ctrl-C, with the final statistics and exit 0."""
    import signal

    config = _replay_config(tmp_path, data_dir, 1)
    text = config.read_text().replace("speed=0", "speed=1").replace("enabled = true", "enabled = false")
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil.edge.cli", "run", "--config", str(config), "--every", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        while "frames" not in proc.stdout.readline():  # a statistics line: the monitor is running
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "processed" in out.splitlines()[-1]  # the closing statistics line
    assert (tmp_path / "outbox").is_file()


def test_fhir_copies_go_to_their_own_topics(tmp_path: Path, data_dir: Path):
    with Broker(tmp_path / "broker") as broker:
        collector = Collector(broker, "vigil/ward/+/vitals/fhir")
        try:
            path = _replay_config(tmp_path, data_dir, broker.port)
            text = path.read_text().replace("vitals_period_s = 10.0", "vitals_period_s = 1.0\nfhir = true")
            path.write_text(text)
            run_monitor(load_config(path), seconds=4.0, report_s=10.0, out=io.StringIO())
            assert _wait(lambda: len(collector.messages) >= 2, 10.0)
            with collector._lock:
                msg = collector.messages[0]
        finally:
            collector.close()
    assert msg.topic == "vigil/ward/mitdb-100/vitals/fhir"
    bundle = json.loads(msg.payload)
    assert bundle["resourceType"] == "Bundle" and bundle["entry"]
