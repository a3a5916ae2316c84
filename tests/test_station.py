"""The nurse station against a private Mosquitto: alerts de-duplicated by id into the alarm board,
retained status, acknowledge/silence commands on the command topic (and through the monitor's
command hook), and ``vigil alarms`` headless. Plus the board and the command schema without a broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker import Broker, Collector
from paho.mqtt.enums import CallbackAPIVersion

from vigil.edge.commands import SCHEMA_COMMAND, Command, SeenIds
from vigil.edge.messages import AlarmState, Alert, Priority
from vigil.edge.outbox import Outbox
from vigil.edge.publisher import MQTTPublisher
from vigil.edge.station import AlarmBoard, AlarmEntry, LinkChange, Presence, Station, format_event, watch

SITE = "ward3"


def _alert(
    alarm: str, state: AlarmState, priority: Priority = Priority.HIGH, device: str = "ecg-1", **kw
) -> Alert:
    return Alert(
        SITE,
        device,
        alarm,
        priority,
        state,
        kw.pop("t_us", 1_000_000),
        message=f"{alarm} {state.value}",
        **kw,
    )


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def _client(broker: Broker, client_id: str = "test-sender") -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


# -- the board, no broker ----------------------------------------------------------------------


def test_board_episode_life_cycle_and_duplicates() -> None:
    b = AlarmBoard(keep_cleared_s=10.0)
    raised = _alert("tachycardia", AlarmState.RAISED, Priority.MEDIUM)
    e = b.apply(raised, 100.0)
    assert e is not None and e.active and e.state is AlarmState.RAISED and not e.acknowledged
    assert b.apply(raised, 100.5) is None and b.duplicates == 1  # redelivered: same id
    silenced = _alert(
        "tachycardia", AlarmState.SILENCED, Priority.MEDIUM, t_us=2_000_000, value={"silenced_until_s": 62.0}
    )
    e = b.apply(silenced, 101.0)
    assert e.silenced_until == pytest.approx(161.0) and e.silenced(150.0) and not e.silenced(162.0)
    e = b.apply(_alert("tachycardia", AlarmState.ESCALATED), 102.0)
    assert e.priority is Priority.HIGH and e.silenced_until is None  # escalation ends the pause
    e = b.apply(_alert("tachycardia", AlarmState.ACKNOWLEDGED), 103.0)
    assert e.acknowledged and e.raised_time == raised.monitor_time and e.events == 4
    b.apply(_alert("asystole", AlarmState.RAISED), 104.0)
    assert [x.alarm for x in b.entries()] == ["asystole", "tachycardia"]  # newest first
    cleared = b.apply(_alert("tachycardia", AlarmState.CLEARED), 105.0)
    assert not cleared.active and cleared.acknowledged
    assert [x.alarm for x in b.active()] == ["asystole"]
    again = b.apply(_alert("tachycardia", AlarmState.RAISED), 106.0)  # a new episode
    assert again.active and not again.acknowledged and again.events == 1
    b.apply(_alert("tachycardia", AlarmState.CLEARED), 107.0)
    assert b.prune(117.5) == 1 and b.entries()[0].alarm == "asystole"
    assert b.applied == 8 and set(b.device("ecg-1")) == {"asystole"}


def test_board_status_and_format() -> None:
    b = AlarmBoard()
    body = {
        "schema": "vigil.status/1",
        "id": "x",
        "state": "online",
        "monitor_time": "2025-01-01T00:00:00.000Z",
    }
    p = b.apply_status("mon-1", json.dumps(body).encode(), 1.0)
    assert p == Presence("mon-1", "online", "2025-01-01T00:00:00.000Z", 1.0)
    assert b.apply_status("band-7", b"offline", 2.0).state == "offline"
    assert b.apply_status("band-7", b"", 3.0) is None and [x.name for x in b.presence()] == ["mon-1"]
    e = b.apply(_alert("asystole", AlarmState.RAISED), 5.0)
    line = format_event(e, 5.0)
    assert "HIGH" in line and "ecg-1" in line and "asystole" in line and "raised" in line
    assert "mon-1" in format_event(p, 5.0) and "down" in format_event(LinkChange(False, "x"), 5.0)


def test_command_schema_round_trip_and_rejects() -> None:
    c = Command.silence("tachycardia", 60)
    d = json.loads(c.to_json())
    assert d == {
        "schema": SCHEMA_COMMAND,
        "id": c.id,
        "action": "silence",
        "alarm": "tachycardia",
        "duration_s": 60.0,
    }
    assert Command.from_json(c.to_json()) == c
    assert Command.from_json(Command.acknowledge("*").to_json()).duration_s is None
    bad = [
        b"not json",
        b"[]",
        json.dumps({**d, "schema": "vigil.command/2"}),
        json.dumps({**d, "action": "reset"}),
        json.dumps({**d, "duration_s": -1}),
        json.dumps({**d, "duration_s": True}),
        json.dumps({**d, "action": "acknowledge"}),  # a duration with acknowledge
        json.dumps({**d, "alarm": ""}),
        json.dumps({**d, "extra": 1}),
        json.dumps({k: v for k, v in d.items() if k != "id"}),
    ]
    for payload in bad:
        with pytest.raises(ValueError):
            Command.from_json(payload)
    seen = SeenIds(capacity=2)
    assert seen.add("a") and not seen.add("a") and seen.add("b") and seen.add("c") and "a" not in seen


def test_command_applies_to_the_alarm_engine() -> None:
    from vigil.edge.alarms import AlarmEngine, Features

    eng = AlarmEngine(site=SITE)
    events = []
    for t in range(0, 8):
        events += eng.update("ecg-1", Features(time=float(t), hr_bpm=60.0, since_last_beat_s=float(t)))
    assert any(a.alarm == "asystole" and a.state is AlarmState.RAISED for a in events)
    acked = Command.from_json(Command.acknowledge("asystole").to_json()).apply(eng, "ecg-1", 8.0)
    assert [a.state for a in acked] == [AlarmState.ACKNOWLEDGED]


# -- against a broker --------------------------------------------------------------------------


def test_station_deduplicates_alerts_and_tracks_status(broker: Broker) -> None:
    with Station(broker.host, broker.port, site=SITE, station_id="t1", backoff_s=(0.1, 0.5)) as st:
        assert st.wait_ready(10)
        sender = _client(broker)
        try:
            raised = _alert("asystole", AlarmState.RAISED)
            status = json.dumps(
                {"schema": "vigil.status/1", "id": "s1", "state": "online", "monitor": "mon-1"}
            )
            sender.publish(f"vigil/{SITE}/mon-1/status", status, qos=1, retain=True).wait_for_publish(5)
            for a in (
                raised,
                raised,
                _alert("tachycardia", AlarmState.RAISED, Priority.MEDIUM, device="ecg-2"),
            ):
                sender.publish(a.topic, a.to_json(), qos=1).wait_for_publish(5)
            sender.publish(f"vigil/{SITE}/ecg-1/alert", b"{bad json", qos=1).wait_for_publish(5)
            sender.publish("vigil/other-site/ecg-1/alert", raised.to_json(), qos=1).wait_for_publish(5)
            acked = _alert("asystole", AlarmState.ACKNOWLEDGED)
            sender.publish(acked.topic, acked.to_json(), qos=1).wait_for_publish(5)
            sender.publish(acked.topic, acked.to_json(), qos=1).wait_for_publish(5)
            assert _wait(
                lambda: st.board.applied == 3 and st.board.duplicates == 2 and st.board.malformed == 1
            )
        finally:
            sender.disconnect()
            sender.loop_stop()
        entries = st.entries()
        assert [(e.device, e.alarm, e.state) for e in entries] == [
            ("ecg-1", "asystole", AlarmState.ACKNOWLEDGED),
            ("ecg-2", "tachycardia", AlarmState.RAISED),
        ]
        assert entries[0].events == 2 and entries[0].acknowledged
        assert [(p.name, p.state) for p in st.presence()] == [("mon-1", "online")]
        events = st.events()
        assert sum(isinstance(e, AlarmEntry) for e in events) == 3  # one per distinct id
        assert any(isinstance(e, LinkChange) and e.connected for e in events)


def test_station_session_keeps_alerts_sent_while_away(broker: Broker) -> None:
    kw = {"site": SITE, "station_id": "t2", "backoff_s": (0.1, 0.5)}
    with Station(broker.host, broker.port, **kw) as st:
        assert st.wait_ready(10)
    sender = _client(broker)
    a = _alert("asystole", AlarmState.RAISED)
    sender.publish(a.topic, a.to_json(), qos=1).wait_for_publish(5)
    sender.disconnect()
    sender.loop_stop()
    with Station(broker.host, broker.port, **kw) as st:
        assert _wait(lambda: [e.alert_id for e in st.entries()] == [a.id])


def test_station_sends_acknowledge_and_silence(broker: Broker) -> None:
    col = Collector(broker, topic_filter=f"vigil/{SITE}/+/command", client_id="test-commands")
    try:
        with Station(broker.host, broker.port, site=SITE, listen=False, backoff_s=(0.1, 0.5)) as st:
            ack = st.acknowledge("ecg-1", "asystole", timeout=10)
            sil = st.silence("ecg-2", "tachycardia", 90, timeout=10)
            assert ack is not None and sil is not None
        assert _wait(lambda: len(col.messages) == 2)
        got = {m.topic: json.loads(m.payload) for m in col.messages}
        assert got[f"vigil/{SITE}/ecg-1/command"] == {
            "schema": SCHEMA_COMMAND,
            "id": ack.id,
            "action": "acknowledge",
            "alarm": "asystole",
            "duration_s": None,
        }
        assert Command.from_json(col.messages[1].payload) == sil and sil.duration_s == 90.0
    finally:
        col.close()


def test_monitor_command_hook_receives_station_commands(tmp_path: Path, broker: Broker) -> None:
    got: list[tuple[str, Command]] = []
    with Outbox(tmp_path / "o.db") as ob:
        pub = MQTTPublisher(ob, broker.host, broker.port, site=SITE, monitor_id="mon-1", backoff_s=(0.1, 0.5))
        pub.on_command(lambda device, payload: got.append((device, Command.from_json(payload))))
        with pub:
            assert pub.wait_connected(10)
            with Station(broker.host, broker.port, site=SITE, station_id="t3", backoff_s=(0.1, 0.5)) as st:
                assert st.wait_ready(10)
                cmd = st.acknowledge("ecg-9", "*")
                assert cmd is not None
                assert _wait(lambda: got == [("ecg-9", cmd)])
                # the monitor's retained online status reaches the station
                assert _wait(lambda: [(p.name, p.state) for p in st.presence()] == [("mon-1", "online")])


def test_send_fails_without_a_broker() -> None:
    from broker import free_port

    with Station("127.0.0.1", free_port(), site=SITE, listen=False, backoff_s=(0.1, 0.2)) as st:
        assert st.acknowledge("ecg-1", "asystole", timeout=0.5) is None
        assert st.last_error


def test_watch_plain_lines(broker: Broker) -> None:
    import io

    with Station(broker.host, broker.port, site=SITE, station_id="t4", backoff_s=(0.1, 0.5)) as st:
        assert st.wait_ready(10)
        sender = _client(broker)
        a = _alert("asystole", AlarmState.RAISED)
        sender.publish(a.topic, a.to_json(), qos=1).wait_for_publish(5)
        sender.disconnect()
        sender.loop_stop()
        assert _wait(lambda: st.board.applied == 1)
        out = io.StringIO()
        assert watch(st, seconds=0.3, out=out) == 0
    text = out.getvalue()
    assert "asystole" in text and "1 active alarm" in text and "link  up" in text


def test_render_table_has_rows(broker: Broker) -> None:
    from rich.console import Console

    from vigil.edge.station import render_table

    st = Station(broker.host, broker.port, site=SITE, station_id="t5")
    st.board.apply(_alert("asystole", AlarmState.RAISED), time.time())
    st.board.apply(_alert("battery_low", AlarmState.CLEARED, Priority.LOW), time.time())
    console = Console(record=True, width=140, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render_table(st))
    text = console.export_text()
    assert "1 active" in text and "asystole" in text and "battery_low" in text


def test_cli_alarms_headless(broker: Broker, tmp_path: Path) -> None:
    url = f"mqtt://{broker.host}:{broker.port}"
    cmd = [sys.executable, "-m", "vigil.edge.cli", "alarms", "--broker", url, "--site", SITE]
    r = subprocess.run(
        [*cmd, "--seconds", "1", "--station", "cli"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    assert "link  up" in r.stdout and "0 active alarms" in r.stdout
    col = Collector(broker, topic_filter=f"vigil/{SITE}/+/command", client_id="test-cli-commands")
    try:
        r = subprocess.run([*cmd, "--ack", "ecg-1", "asystole"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "sent acknowledge asystole to ecg-1" in r.stdout
        assert _wait(lambda: len(col.messages) == 1)
        assert Command.from_json(col.messages[0].payload).action == "acknowledge"
    finally:
        col.close()
    r = subprocess.run([*cmd, "--duration", "5"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--duration goes with --silence" in r.stderr


def test_cli_alarms_tls_password_and_acl(tmp_path: Path) -> None:
    """``vigil alarms`` over TLS with a password file, under the shipped ACL: the station may command,
    the monitor may not (the broker answers 0x87 and the command is reported as not sent, exit 1)."""
    from broker import DEPLOY, make_certs, make_password_file

    certs = make_certs(tmp_path / "certs")
    passwd = make_password_file(
        tmp_path / "passwd", {"vigil-monitor": "s3cret-monitor", "vigil-station": "s3cret-station"}
    )
    conf = (
        f"cafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\nkeyfile {certs['server.key']}\n"
        f"password_file {passwd}\nacl_file {DEPLOY / 'acl'}\n"
    )
    with Broker(tmp_path / "broker", conf=conf, anonymous=False) as b:
        base = [sys.executable, "-m", "vigil.edge.cli", "alarms", "--broker", f"mqtts://127.0.0.1:{b.port}"]
        base += ["--site", SITE, "--tls-ca", str(certs["ca.crt"]), "--timeout", "5"]
        for user, secret in (("vigil-station", "s3cret-station"), ("vigil-monitor", "s3cret-monitor")):
            (tmp_path / user).write_text(secret + "\n")
        station = ["--user", "vigil-station", "--password-file", str(tmp_path / "vigil-station")]
        monitor = ["--user", "vigil-monitor", "--password-file", str(tmp_path / "vigil-monitor")]
        r = subprocess.run(
            [*base, *station, "--silence", "ecg-1", "tachycardia", "--duration", "30"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0 and "sent silence tachycardia to ecg-1" in r.stdout, r.stderr
        r = subprocess.run(
            [*base, *monitor, "--ack", "ecg-1", "asystole"], capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 1 and "not sent" in r.stderr and "authori" in r.stderr.lower(), r.stderr
        r = subprocess.run([*base, *station, "--seconds", "0.5"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "link  up" in r.stdout, r.stderr
