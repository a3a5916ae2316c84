"""deploy/mosquitto's ACL, as shipped, with a password file made by deploy/mosquitto/make-passwd.sh: a
device may publish only below its own device level; the monitor writes alerts/vitals/status, not
commands. A refused publish must never reach a subscriber."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from broker import DEPLOY, Broker, Collector, make_password_file
from paho.mqtt.enums import CallbackAPIVersion

USERS = {
    "ecg-1": "pw-ecg-1",
    "ecg-2": "pw-ecg-2",
    "vigil-monitor": "pw-monitor",
    "vigil-station": "pw-station",
}


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Broker]:
    passwd = make_password_file(tmp_path / "passwd", USERS)
    assert "pw-ecg-1" not in passwd.read_text()  # hashed, not plain
    b = Broker(
        tmp_path / "broker", conf=f"password_file {passwd}\nacl_file {DEPLOY / 'acl'}\n", anonymous=False
    )
    b.start()
    yield b
    b.stop()


class _Client:
    """A connected MQTT 5 client that records the reason code of every PUBACK."""

    def __init__(self, broker: Broker, user: str) -> None:
        self.acks: dict[int, object] = {}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=mqtt.MQTTv5)
        c.username_pw_set(user, USERS[user])
        c.on_publish = lambda cl, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.client = c

    def publish(self, topic: str, payload: bytes) -> object:
        """Publish with QoS 1; the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _payloads(coll: Collector) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in coll.messages]


def test_device_writes_only_its_own_topics(acl_broker: Broker) -> None:
    station = Collector(acl_broker, client_id="station", username="vigil-station", password="pw-station")
    dev = _Client(acl_broker, "ecg-1")
    try:
        denied = dev.publish("vigil/site1/ecg-2/vitals", b"spoofed")
        denied_alert = dev.publish("vigil/site1/ecg-2/alert", b"spoofed alert")
        allowed = dev.publish("vigil/site1/ecg-1/vitals", b"own")
        assert denied.is_failure and denied.getName() == "Not authorized"
        assert denied_alert.is_failure
        assert not allowed.is_failure
        # Same connection, in order: once "own" has arrived, the refused messages would have too.
        deadline = time.monotonic() + 5
        while ("vigil/site1/ecg-1/vitals", b"own") not in _payloads(station) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert _payloads(station) == [("vigil/site1/ecg-1/vitals", b"own")]
    finally:
        dev.close()
        station.close()


def test_monitor_writes_alerts_vitals_status_but_not_commands(acl_broker: Broker) -> None:
    station = Collector(acl_broker, client_id="station", username="vigil-station", password="pw-station")
    mon = _Client(acl_broker, "vigil-monitor")
    try:
        for kind in ("alert", "vitals", "status"):
            assert not mon.publish(f"vigil/site1/ecg-1/{kind}", kind.encode()).is_failure
        assert mon.publish("vigil/site1/ecg-1/command", b"forged").is_failure
        assert mon.publish("elsewhere/topic", b"x").is_failure
        deadline = time.monotonic() + 5
        while len(station.messages) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert sorted(t for t, _ in _payloads(station)) == [
            f"vigil/site1/ecg-1/{k}" for k in ("alert", "status", "vitals")
        ]
    finally:
        mon.close()
        station.close()


def test_anonymous_and_wrong_password_refused(acl_broker: Broker) -> None:
    for user, password in ((None, None), ("ecg-1", "wrong")):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder", protocol=mqtt.MQTTv5)
        result: list[object] = []
        c.on_connect = lambda cl, u, f, rc, p: result.append(rc)  # noqa: B023
        if user is not None:
            c.username_pw_set(user, password)
        c.connect(acl_broker.host, acl_broker.port)
        c.loop_start()
        deadline = time.monotonic() + 5
        while not result and time.monotonic() < deadline:
            time.sleep(0.02)
        c.disconnect()
        c.loop_stop()
        assert result and result[0].is_failure


def test_deploy_config_as_shipped_serves_tls(tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto.conf with only paths and ports swapped: it parses, the TLS listener
    verifies against the CA, and the monitor user can publish an alert through it."""
    from broker import free_port, make_certs, require_mosquitto

    from vigil.edge.messages import AlarmState, Alert, Priority
    from vigil.edge.outbox import Outbox
    from vigil.edge.publisher import MQTTPublisher, TLSConfig

    certs = make_certs(tmp_path / "certs")
    passwd = make_password_file(
        tmp_path / "passwd", {"vigil-monitor": "pw-monitor", "vigil-station": "pw-station"}
    )
    tls_port, plain_port = free_port(), free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text()
    for old, new in {
        "/etc/mosquitto/vigil.passwd": str(passwd),
        "/etc/mosquitto/vigil.acl": str(DEPLOY / "acl"),
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "/etc/mosquitto/certs/": f"{tmp_path / 'certs'}/",
        "log_dest syslog": f"log_dest file {tmp_path / 'mosquitto.log'}",
        "listener 8883": f"listener {tls_port} 127.0.0.1",
        "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1",
    }.items():
        assert old in conf
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        conf = "user root\n" + conf
    (tmp_path / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(
        [require_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")], stderr=subprocess.PIPE
    )
    try:
        b = SimpleNamespace(host="127.0.0.1", port=tls_port)  # all Collector needs of a Broker
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "mosquitto exited"
            try:
                socket.create_connection(("127.0.0.1", tls_port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        station = Collector(
            b,  # type: ignore[arg-type]
            client_id="station",
            username="vigil-station",
            password="pw-station",
            tls_ca=certs["ca.crt"],
        )
        try:
            with Outbox(tmp_path / "o.db") as ob:
                pub = MQTTPublisher(
                    ob,
                    "127.0.0.1",
                    tls_port,
                    site="site1",
                    monitor_id="mon-1",
                    username="vigil-monitor",
                    password="pw-monitor",
                    tls=TLSConfig(str(certs["ca.crt"])),
                )
                with pub:
                    assert pub.wait_connected(10)
                    assert pub.stats().window == 100  # the shipped Receive Maximum
                    a = Alert("site1", "ecg-1", "asystole", Priority.HIGH, AlarmState.RAISED, 0)
                    pub.publish_alert(a)
                    assert pub.flush(10)
                    assert not station.wait_for({a.id}, 10)
        finally:
            station.close()
    finally:
        proc.terminate()
        proc.wait(10)
