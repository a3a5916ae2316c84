"""A private Mosquitto broker for tests: own config, own free loopback port, stop and restart at will.

Tests import it (``from broker import Broker, require_mosquitto``). The broker listens on 127.0.0.1
only. Persistence is on (in the broker's temporary directory) so that a stopped and restarted broker
keeps persistent sessions and the messages queued for them, like a production broker does; ``stop``
sends SIGTERM so Mosquitto writes its database, ``kill`` sends SIGKILL and loses what it held.

Without a ``mosquitto`` binary the tests skip with the reason, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "mosquitto"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def require_mosquitto() -> str:
    """Path of the mosquitto binary; skips the test (fails under CI=true) when there is none."""
    path = mosquitto_binary()
    if path is None:
        _missing("mosquitto broker binary not found (apt-get install mosquitto)")
    return path  # type: ignore[return-value]


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        _missing(f"{name} not found")
    return path  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One mosquitto process on ``127.0.0.1:port``.

    ``conf`` lines go after the listener line, so they may configure it (``cafile``/``certfile``/
    ``keyfile`` for TLS) or the broker (``password_file``, ``acl_file``); ``anonymous=False`` requires
    a password.
    """

    def __init__(
        self, workdir: Path, conf: str = "", port: int | None = None, anonymous: bool = True
    ) -> None:
        self.binary = require_mosquitto()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log = self.dir / "mosquitto.log"
        self.conf_path = self.dir / "mosquitto.conf"
        lines = [
            "per_listener_settings false",
            f"persistence true\npersistence_location {self.dir}/",
            f"log_dest file {self.log}",
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information",
            "connection_messages true",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if anonymous else 'false'}",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # otherwise mosquitto drops to 'mosquitto' and cannot use tmp files
        self.conf_path.write_text("\n".join(lines) + "\n" + conf + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        if self.running:
            return self
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on {self.port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: mosquitto closes connections and saves sessions and queued messages."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash; whatever the broker held in memory is gone."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self) -> Broker:
        self.stop()
        return self.start()

    def _end(self, sig: int, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file for ``users`` made by deploy/mosquitto/make-passwd.sh (hashed)."""
    tool_dir = str(Path(require_tool("mosquitto_passwd")).parent)
    subprocess.run(
        ["sh", str(DEPLOY / "make-passwd.sh"), str(path)],
        input="".join(f"{u}:{p}\n" for u, p in users.items()).encode(),
        check=True,
        capture_output=True,
        env={**os.environ, "PATH": os.environ.get("PATH", "") + ":" + tool_dir},
    )
    return path


def make_certs(workdir: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl).

    Skips (fails under CI=true) when openssl is missing. Keys are written to ``workdir`` only.
    """
    openssl = require_tool("openssl")
    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=vigil-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn, ext in (("server", "localhost", ["-extfile", "server.ext"]), ("client", "monitor", [])):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.crt",
            *ext,
        )
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return {n: d / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


class Collector:
    """A subscriber with a persistent session (so it misses nothing across a broker restart) that
    records every message; alerts are de-duplicated by their ``id``."""

    def __init__(
        self,
        broker: Broker,
        topic_filter: str = "vigil/#",
        client_id: str = "test-collector",
        username: str | None = None,
        password: str | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.messages: list = []  # paho MQTTMessage objects, in arrival order
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        if username is not None:
            c.username_pw_set(username, password)
        if tls_ca is not None:
            c.tls_set(ca_certs=str(tls_ca))
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic_filter, qos=1)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self._subscribed.set()
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        c.connect_async(broker.host, broker.port, clean_start=False, properties=props)
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(10):
            raise RuntimeError("collector did not subscribe")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._lock:
            self.messages.append(msg)

    def alert_ids(self) -> list[str]:
        """Alert ids in arrival order, duplicates included."""
        import json

        with self._lock:
            return [json.loads(m.payload)["id"] for m in self.messages if m.topic.endswith("/alert")]

    def wait_for(self, ids: set[str], timeout: float) -> set[str]:
        """Wait until every id in ``ids`` has arrived; returns the ids still missing."""
        deadline = time.monotonic() + timeout
        while True:
            missing = ids - set(self.alert_ids())
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
