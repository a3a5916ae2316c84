"""MQTT publisher: drains the durable outbox to a broker with QoS 1 over MQTT 5, in order.

Flow: ``publish``/``publish_alert`` only commit the message to the :class:`~vigil.edge.outbox.Outbox`
and wake the sender thread, so the monitor never waits on the network. The sender thread takes pending
rows oldest first, hands at most ``window`` of them to paho at a time (the in-flight window, clamped to
the broker's Receive Maximum, because paho does not enforce it and a broker may disconnect a client that
exceeds it; paho's own in-flight limit is off so it never queues behind our back), and records each row's
packet id. The paho network thread only queues PUBACKs; the sender deletes a row on a PUBACK with a
success reason code and sets it aside (never resent) on a failure code. It wakes for PUBACKs once a
quarter of the window is back (or nothing else is in flight), so the outbox work is one commit per batch.

Disconnects: paho keeps the unacknowledged PUBLISH packets of its session and, on reconnect, resends
them with their original packet ids and DUP set, as MQTT 5 section 4.4 requires for a resumed session
(``clean_start=False`` plus a session expiry interval, stable client id). Their rows stay in flight and
are counted as resent; new rows wait until the connection is back. When the client itself is gone (stop
or a process restart) its session state is gone too, so ``start`` and ``stop`` requeue in-flight rows
and they are sent again in their original order. Either way delivery is at least once: consumers
de-duplicate on the payload ``id``.

Presence: a retained ``vigil/<site>/<monitor>/status`` message, ``online`` on every connect and
``offline`` as the last will (and on a clean stop).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from vigil.edge.messages import SCHEMA_STATUS, Alert, Priority, topic
from vigil.edge.outbox import Outbox

log = logging.getLogger(__name__)

CommandCallback = Callable[[str, bytes], None]
"""``callback(device, payload)`` for a message on ``vigil/<site>/<device>/command``."""


class ConnectionState(Enum):
    """The publisher's view of its broker connection."""

    NEW = "new"  # constructed, not started
    CONNECTING = "connecting"  # first connection attempt under way
    CONNECTED = "connected"  # CONNACK success received; sending
    RECONNECTING = "reconnecting"  # lost or refused; paho retries with exponential backoff
    STOPPED = "stopped"


@dataclass(frozen=True)
class TLSConfig:
    """Server verification against ``ca_certs`` (None or "": the system trust store);
    ``certfile``/``keyfile`` for client-certificate auth."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


def configure_auth(
    client: mqtt.Client, username: str | None, password: str | None, tls: TLSConfig | None
) -> None:
    """Username/password and TLS (server certificate always verified) on a paho client; shared by
    the publisher and the nurse station so both connect the same way."""
    if username is not None:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set(
            ca_certs=tls.ca_certs or None,
            certfile=tls.certfile,
            keyfile=tls.keyfile,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )


@dataclass(frozen=True)
class PublisherStats:
    """Counters since start. ``queued`` counts ``publish`` calls; ``pending`` and ``dropped`` are
    the outbox's (pending rows now, rows dropped by the disk budget since it was opened)."""

    state: ConnectionState
    queued: int
    pending: int
    inflight: int
    acked: int
    resent: int
    rejected: int
    dropped: int
    connects: int
    window: int
    last_error: str | None


def _quiet_reconnect_noise(record: logging.LogRecord) -> bool:
    """paho logs "Client is not connected" at ERROR on every loop pass without a socket (while it
    waits to reconnect, and once at stop); our own connection-state log lines already say that."""
    return not record.getMessage().startswith("Client is not connected")


def _check_topic(name: str) -> None:
    if not name or any(ch in name for ch in "+#\x00"):
        raise ValueError(f"invalid topic {name!r}")


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class MQTTPublisher:
    """Publishes outbox rows to one broker; one instance per monitor (``site``/``monitor_id``)."""

    def __init__(
        self,
        outbox: Outbox,
        host: str,
        port: int = 1883,
        *,
        site: str,
        monitor_id: str,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        window: int = 100,
        keepalive_s: int = 30,
        session_expiry_s: int = 24 * 3600,
        backoff_s: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.outbox = outbox
        self.host, self.port = host, port
        self.site, self.monitor_id = site, monitor_id
        self.status_topic = topic(site, monitor_id, "status")  # validates site and monitor id
        self.command_filter = f"vigil/{site}/+/command"
        self.client_id = client_id or f"vigil-monitor-{site}-{monitor_id}"
        self._keepalive = keepalive_s
        self._session_expiry = session_expiry_s
        self._window_max = window
        self._window = window
        self._refill = max(1, window // 4)

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(0)  # no paho queue: the window below is ours (see _send)
        c.suppress_exceptions = True  # a callback error is logged, it must not end the network thread
        paho_log = log.getChild("paho")
        paho_log.addFilter(_quiet_reconnect_noise)
        c.enable_logger(paho_log)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(backoff_s[0], backoff_s[1])  # type: ignore[arg-type]  # floats work
        configure_auth(c, username, password, tls)
        c.will_set(self.status_topic, self._status_payload("offline"), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c

        self._cond = threading.Condition()
        self._acks: deque[tuple[int, bool]] = deque()  # (mid, success) from the network thread
        self._dirty = True  # the outbox may hold rows not yet handed to paho
        self._stopping = False
        self._inflight: dict[int, int] = {}  # mid -> row id; sender thread only
        self._commands: list[CommandCallback] = []
        self._sender: threading.Thread | None = None

        self._state = ConnectionState.NEW
        self._queued = self._acked = self._resent = self._rejected = self._connects = 0
        self._last_error: str | None = None

    # -- public API ------------------------------------------------------------------------------

    def start(self) -> MQTTPublisher:
        """Connect in the background (retrying with backoff) and start sending."""
        if self._state is not ConnectionState.NEW:
            raise RuntimeError(f"publisher already {self._state.value}")
        requeued = self.outbox.requeue_inflight()  # left in flight by a previous process
        if requeued:
            log.info("outbox: %d rows in flight before restart are pending again", requeued)
            self._resent += requeued
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
        self._set_state(ConnectionState.CONNECTING)
        self._client.connect_async(
            self.host, self.port, keepalive=self._keepalive, clean_start=False, properties=props
        )
        self._client.loop_start()
        self._sender = threading.Thread(
            target=self._run, name=f"vigil-publisher-{self.monitor_id}", daemon=True
        )
        self._sender.start()
        return self

    def publish(self, topic: str, payload: bytes, priority: Priority | str | None, kind: str) -> int:
        """Commit one message to the outbox and wake the sender; returns the row id. Never waits on
        the network (only on the outbox commit)."""
        _check_topic(topic)
        row_id = self.outbox.put(topic, payload, priority, kind)
        with self._cond:
            self._queued += 1
            self._dirty = True
            self._cond.notify()
        return row_id

    def publish_many(self, items: Sequence[tuple[str, bytes, Priority | str | None, str]]) -> list[int]:
        """``publish`` for several ``(topic, payload, priority, kind)`` in one outbox transaction (one
        fsync); all are committed before any is sent."""
        for t, *_ in items:
            _check_topic(t)
        row_ids = self.outbox.put_many(items)
        with self._cond:
            self._queued += len(row_ids)
            self._dirty = True
            self._cond.notify()
        return row_ids

    def publish_alert(self, alert: Alert) -> int:
        return self.publish(alert.topic, alert.to_json(), alert.priority, "alert")

    def on_command(self, callback: CommandCallback) -> None:
        """Call ``callback(device, payload)`` for every message on ``vigil/<site>/+/command``
        (acknowledge, silence). Subscribed with QoS 1 on every connect."""
        first = not self._commands
        self._commands.append(callback)
        if first:
            self._client.message_callback_add(self.command_filter, self._on_command_message)
            if self._state is ConnectionState.CONNECTED:
                self._client.subscribe(self.command_filter, qos=1)

    @property
    def state(self) -> ConnectionState:
        return self._state

    def stats(self) -> PublisherStats:
        counts = self.outbox.counts()
        with self._cond:
            return PublisherStats(
                state=self._state,
                queued=self._queued,
                pending=counts.pending,
                inflight=len(self._inflight),
                acked=self._acked,
                resent=self._resent,
                rejected=self._rejected,
                dropped=counts.dropped_total,
                connects=self._connects,
                window=self._window,
                last_error=self._last_error,
            )

    def wait_connected(self, timeout: float) -> bool:
        return self._wait(lambda: self._state is ConnectionState.CONNECTED, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until every row is acknowledged (or set aside); True if so within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.outbox.counts()
            if c.pending == 0 and c.inflight == 0:
                return True
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Announce ``offline`` (retained), disconnect cleanly and stop both threads. Rows still in
        flight go back to pending: they are sent again by the next ``start``."""
        if self._state in (ConnectionState.NEW, ConnectionState.STOPPED):
            self._set_state(ConnectionState.STOPPED)
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join(timeout)
        if self._state is ConnectionState.CONNECTED:
            info = self._client.publish(
                self.status_topic, self._status_payload("offline"), qos=1, retain=True
            )
            try:
                info.wait_for_publish(min(timeout, 2.0))
            except (RuntimeError, ValueError):
                pass
        self._set_state(ConnectionState.STOPPED)
        self._client.disconnect()
        self._client.loop_stop()
        self._handle_acks()  # PUBACKs that arrived after the sender stopped
        requeued = self.outbox.requeue_inflight()
        if requeued:
            log.info("outbox: %d rows still in flight at stop are pending again", requeued)
        self._inflight.clear()

    def __enter__(self) -> MQTTPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sender thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._acks_due() or (self._dirty and self._can_send())):
                    self._cond.wait(0.5)
                if self._stopping:
                    return
                self._dirty = False
            try:
                self._handle_acks()
                if self._can_send():
                    self._send()
            except Exception:  # keep the sender alive; the row stays in the outbox
                log.exception("publisher sender error")
                with self._cond:
                    self._dirty = True
                time.sleep(0.5)

    def _can_send(self) -> bool:
        return self._state is ConnectionState.CONNECTED and len(self._inflight) < self._window

    def _acks_due(self) -> bool:
        """Wake for PUBACKs once a quarter of the window is back, or when nothing else is in flight:
        refilling in small batches costs one outbox commit per batch instead of per message."""
        n = len(self._acks)
        return n > 0 and (n >= self._refill or n >= len(self._inflight))

    def _send(self) -> None:
        free = self._window - len(self._inflight)
        rows = self.outbox.pending(free)
        marked = []
        for row in rows:
            info = self._client.publish(row.topic, row.payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho holds it
                log.warning("paho refused row %d: %s", row.id, mqtt.error_string(info.rc))
                break
            self._inflight[info.mid] = row.id
            marked.append((row.id, info.mid))
        self.outbox.mark_inflight_many(marked)
        if len(rows) == free and marked:
            with self._cond:
                self._dirty = True  # the window filled up: more rows may be waiting

    def _handle_acks(self) -> None:
        done, failed = [], []
        with self._cond:
            acks = list(self._acks)
            self._acks.clear()
        for mid, ok in acks:
            row_id = self._inflight.pop(mid, None)
            if row_id is None:
                continue  # a status message, not an outbox row
            (done if ok else failed).append(row_id)
        if done:
            self.outbox.ack_many(done)
        for row_id in failed:
            log.error("broker rejected outbox row %d; kept in the outbox, not resent", row_id)
            self.outbox.reject(row_id)
        if acks:
            with self._cond:
                self._acked += len(done)
                self._rejected += len(failed)
                self._dirty = True

    # -- paho network thread ---------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            self._last_error = f"connect refused: {rc}"
            log.warning("MQTT %s:%d refused the connection: %s", self.host, self.port, rc)
            self._set_state(ConnectionState.RECONNECTING)
            return
        receive_max = getattr(props, "ReceiveMaximum", None)
        window = min(self._window_max, receive_max) if receive_max else self._window_max
        client.publish(self.status_topic, self._status_payload("online"), qos=1, retain=True)
        if self._commands:
            client.subscribe(self.command_filter, qos=1)
        with self._cond:
            if self._connects:
                self._resent += len(self._inflight)  # paho resends these with their packet ids
            self._connects += 1
            self._window = window
            self._refill = max(1, window // 4)
            self._last_error = None
            self._dirty = True
        log.info(
            "MQTT connected to %s:%d (session present: %s, window %d)",
            self.host,
            self.port,
            flags.session_present,
            window,
        )
        self._set_state(ConnectionState.CONNECTED)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        if self._state in (ConnectionState.STOPPED, ConnectionState.RECONNECTING):
            return  # stopping, or the close that follows a refused CONNACK (keep that reason)
        self._last_error = f"disconnected: {rc}"
        log.warning("MQTT connection to %s:%d lost (%s); reconnecting with backoff", self.host, self.port, rc)
        self._set_state(ConnectionState.RECONNECTING)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with self._cond:
            self._acks.append((mid, not rc.is_failure))
            if self._acks_due():
                self._cond.notify()

    def _on_command_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[2]
        for callback in list(self._commands):
            try:
                callback(device, msg.payload)
            except Exception:  # a faulty handler must not kill the network thread
                log.exception("command callback failed for %s", msg.topic)

    # -- helpers ---------------------------------------------------------------------------------

    def _set_state(self, state: ConnectionState) -> None:
        with self._cond:
            self._state = state
            self._cond.notify_all()

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def _status_payload(self, state: str) -> bytes:
        body = {
            "schema": SCHEMA_STATUS,
            "id": uuid.uuid4().hex,
            "state": state,
            "monitor": self.monitor_id,
            "site": self.site,
            "client_id": self.client_id,
            "monitor_time": _now_iso(),
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
