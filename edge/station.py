"""The nurse station: a live view of every alarm of one site, and the acknowledge/silence commands.

:class:`AlarmBoard` is the state, with no network: it takes :class:`~vigil.edge.messages.Alert`
events (de-duplicated by ``id``: QoS 1 delivers at least once) and keeps, per device and alarm
type, the current entry of the alarm's episode (raised, escalated, acknowledged, silenced or
cleared), plus the presence lines of the retained ``status`` topic. Events are applied in arrival
order, which MQTT keeps per topic for one publisher. A cleared entry stays on the board for
``keep_cleared_s`` (station clock) so the nurse sees that it ended; a new RAISED starts a new
episode.

:class:`Station` is the MQTT client (paho 2.x, MQTT 5): it subscribes with QoS 1 to
``vigil/<site>/+/alert`` and ``vigil/<site>/+/status`` on every connect, with a persistent session
(``clean_start=False``, a session expiry interval, a stable client id), so alerts published while
the station was away are delivered when it comes back. It sends :class:`~vigil.edge.commands.Command`
payloads with QoS 1 on ``vigil/<site>/<device>/command``; :meth:`Station.send` waits for the PUBACK
and reports a refusal (an ACL denial is PUBACK reason code 0x87 under MQTT 5). A station that only
sends commands (``listen=False``) uses a fresh client id and a clean session, so it never takes over
a running view's session or consumes its queued alerts.

:func:`watch` runs the view: a rich live table (priority colours, newest first) on a terminal, plain
lines (one per change, then the current list at the end) otherwise.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from vigil.edge.commands import Command, SeenIds
from vigil.edge.messages import AlarmState, Alert, Priority, topic
from vigil.edge.publisher import TLSConfig, configure_auth

log = logging.getLogger(__name__)

_RANK = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class AlarmEntry:
    """The latest state of one alarm episode of one device.

    ``raised_time``/``monitor_time``: the monitor's wall-clock time (ISO 8601) of the episode's first
    event and of the latest one. ``received_at`` and ``silenced_until``: station clock (seconds).
    ``seq`` orders entries by the station's receipt of their latest event (larger is newer).
    """

    site: str
    device: str
    alarm: str
    priority: Priority
    state: AlarmState
    message: str
    alert_id: str
    raised_time: str
    monitor_time: str
    received_at: float
    acknowledged: bool
    silenced_until: float | None
    events: int
    seq: int

    @property
    def active(self) -> bool:
        return self.state is not AlarmState.CLEARED

    def silenced(self, now: float) -> bool:
        return self.silenced_until is not None and now < self.silenced_until


@dataclass(frozen=True)
class Presence:
    """The retained ``status`` of one topic level (a monitor, or a device that reports its own)."""

    name: str
    state: str
    monitor_time: str
    received_at: float


@dataclass(frozen=True)
class LinkChange:
    """The station's broker connection changed."""

    connected: bool
    detail: str


StationEvent = AlarmEntry | Presence | LinkChange


class AlarmBoard:
    """Current alarms per device from a stream of alerts; not thread-safe (:class:`Station` locks)."""

    def __init__(self, keep_cleared_s: float = 300.0, max_ids: int = 100_000) -> None:
        self.keep_cleared_s = keep_cleared_s
        self._seen = SeenIds(max_ids)
        self._alarms: dict[tuple[str, str], AlarmEntry] = {}
        self._presence: dict[str, Presence] = {}
        self._seq = 0
        self.applied = 0
        self.duplicates = 0
        self.malformed = 0

    def apply(self, alert: Alert, received_at: float) -> AlarmEntry | None:
        """Apply one alert; returns the updated entry, or None for a duplicate ``id``."""
        if not self._seen.add(alert.id):
            self.duplicates += 1
            return None
        key = (alert.device, alert.alarm)
        prev = self._alarms.get(key)
        new_episode = prev is None or (not prev.active and alert.state is not AlarmState.CLEARED)
        self._seq += 1
        self.applied += 1
        if new_episode or prev is None:
            acknowledged, silenced_until, raised_time, events = False, None, alert.monitor_time, 0
        else:
            acknowledged, silenced_until = prev.acknowledged, prev.silenced_until
            raised_time, events = prev.raised_time, prev.events
        if alert.state is AlarmState.ACKNOWLEDGED:
            acknowledged = True
        elif alert.state is AlarmState.SILENCED:
            silenced_until = received_at + _silence_s(alert)
        elif alert.state in (AlarmState.ESCALATED, AlarmState.CLEARED):
            silenced_until = None  # escalation ends an audio pause
        entry = AlarmEntry(
            site=alert.site,
            device=alert.device,
            alarm=alert.alarm,
            priority=alert.priority,
            state=alert.state,
            message=alert.message,
            alert_id=alert.id,
            raised_time=raised_time,
            monitor_time=alert.monitor_time,
            received_at=received_at,
            acknowledged=acknowledged,
            silenced_until=silenced_until,
            events=events + 1,
            seq=self._seq,
        )
        self._alarms[key] = entry
        return entry

    def apply_status(self, name: str, payload: bytes, received_at: float) -> Presence | None:
        """Record the status of ``name``: a ``vigil.status/1`` JSON object (its ``state``) or a short
        plain-text state. An empty payload (a cleared retained message) forgets ``name``: None."""
        if not payload:
            self._presence.pop(name, None)
            return None
        try:
            d = json.loads(payload)
            if isinstance(d, dict):
                state, when = str(d.get("state", "?")), str(d.get("monitor_time", ""))
            else:
                state, when = str(d), ""
        except (json.JSONDecodeError, UnicodeDecodeError):
            state, when = payload[:32].decode("utf-8", "replace"), ""
        p = Presence(name, state[:32], when, received_at)
        self._presence[name] = p
        return p

    def prune(self, now: float) -> int:
        """Forget cleared entries received more than ``keep_cleared_s`` before ``now``; how many."""
        old = [
            k for k, e in self._alarms.items() if not e.active and now - e.received_at > self.keep_cleared_s
        ]
        for k in old:
            del self._alarms[k]
        return len(old)

    def entries(self, include_cleared: bool = True) -> list[AlarmEntry]:
        """Every entry, newest first."""
        out = [e for e in self._alarms.values() if include_cleared or e.active]
        return sorted(out, key=lambda e: -e.seq)

    def active(self) -> list[AlarmEntry]:
        """Active entries, highest priority first, then newest first."""
        return sorted(self.entries(include_cleared=False), key=lambda e: (_RANK[e.priority], -e.seq))

    def device(self, device: str) -> dict[str, AlarmEntry]:
        """``device``'s entries by alarm type."""
        return {a: e for (d, a), e in self._alarms.items() if d == device}

    def devices(self) -> list[str]:
        return sorted({d for d, _ in self._alarms})

    def presence(self) -> list[Presence]:
        return sorted(self._presence.values(), key=lambda p: p.name)


def _silence_s(alert: Alert) -> float:
    """Audio pause of a SILENCED alert: the engine reports its end in device seconds."""
    until = alert.value.get("silenced_until_s") if isinstance(alert.value, dict) else None
    if isinstance(until, int | float) and not isinstance(until, bool):
        return max(0.0, float(until) - alert.device_time_us / 1e6)
    return 0.0


# ---------------------------------------------------------------------------------------------
# MQTT


class Station:
    """Subscribes to one site's alerts and status, keeps an :class:`AlarmBoard`, sends commands."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        site: str,
        station_id: str | None = None,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        listen: bool = True,
        keepalive_s: int = 30,
        session_expiry_s: int = 24 * 3600,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        board: AlarmBoard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        topic(site, "x", "alert")  # validates site
        self.host, self.port, self.site = host, port, site
        self.listen = listen
        self.alert_filter = f"vigil/{site}/+/alert"
        self.status_filter = f"vigil/{site}/+/status"
        station_id = station_id or socket.gethostname() or "station"
        if client_id is None:
            client_id = f"vigil-station-{site}-{station_id}"
            if not listen:
                client_id += f"-cmd-{uuid.uuid4().hex[:8]}"
        self.client_id = client_id
        self.board = board or AlarmBoard()
        self._clock = clock
        self._keepalive = keepalive_s
        self._session_expiry = session_expiry_s if listen else 0

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.suppress_exceptions = True
        c.enable_logger(log.getChild("paho"))
        c.reconnect_delay_set(backoff_s[0], backoff_s[1])  # type: ignore[arg-type]  # floats work
        configure_auth(c, username, password, tls)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.message_callback_add(self.alert_filter, self._on_alert)
        c.message_callback_add(self.status_filter, self._on_status)
        self._client = c

        self._lock = threading.Condition()
        self._events: queue.Queue[StationEvent] = queue.Queue()
        self._connected = False
        self._subscribed = False
        self._started = False
        self._pubacks: dict[int, ReasonCode] = {}
        self.connects = 0
        self.last_error: str | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> Station:
        """Connect in the background (retrying with backoff); subscribe on every connect."""
        if self._started:
            raise RuntimeError("station already started")
        self._started = True
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
        self._client.connect_async(
            self.host, self.port, keepalive=self._keepalive, clean_start=not self.listen, properties=props
        )
        self._client.loop_start()
        return self

    def stop(self) -> None:
        """Disconnect; a listening station's session (and alerts queued for it) stays on the broker."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._connected = self._subscribed = False

    def __enter__(self) -> Station:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_connected(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._connected, timeout)

    def wait_ready(self, timeout: float) -> bool:
        """Connected and (when listening) subscribed to both filters."""
        with self._lock:
            return self._lock.wait_for(
                lambda: self._connected and (self._subscribed or not self.listen), timeout
            )

    # -- state -----------------------------------------------------------------------------------

    def entries(self, include_cleared: bool = True) -> list[AlarmEntry]:
        with self._lock:
            return self.board.entries(include_cleared)

    def active(self) -> list[AlarmEntry]:
        with self._lock:
            return self.board.active()

    def presence(self) -> list[Presence]:
        with self._lock:
            return self.board.presence()

    def prune(self) -> int:
        with self._lock:
            return self.board.prune(self._clock())

    def events(self, timeout: float = 0.0) -> list[StationEvent]:
        """Changes since the last call (waits up to ``timeout`` for the first one)."""
        out: list[StationEvent] = []
        try:
            out.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return out

    # -- commands --------------------------------------------------------------------------------

    def send(self, device: str, command: Command, timeout: float = 10.0) -> bool:
        """Publish ``command`` for ``device`` with QoS 1; True once the broker acknowledged it with a
        success reason code within ``timeout`` (waiting for the connection too)."""
        deadline = time.monotonic() + timeout
        if not self.wait_connected(timeout):
            self.last_error = self.last_error or "not connected"
            return False
        info = self._client.publish(topic(self.site, device, "command"), command.to_json(), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.last_error = f"publish failed: {mqtt.error_string(info.rc)}"
            return False
        with self._lock:
            got = self._lock.wait_for(
                lambda: info.mid in self._pubacks, max(0.0, deadline - time.monotonic())
            )
            rc = self._pubacks.pop(info.mid, None)
        if not got or rc is None:
            self.last_error = "no PUBACK within the timeout"
            return False
        if rc.is_failure:
            self.last_error = f"broker refused the command: {rc}"
            return False
        log.info("sent %s %s to %s (id %s)", command.action, command.alarm, device, command.id)
        return True

    def acknowledge(self, device: str, alarm: str, timeout: float = 10.0) -> Command | None:
        """Send an acknowledge command; the command, or None when the broker did not take it."""
        cmd = Command.acknowledge(alarm)
        return cmd if self.send(device, cmd, timeout) else None

    def silence(
        self, device: str, alarm: str, duration_s: float | None = None, timeout: float = 10.0
    ) -> Command | None:
        """Send a silence command (``duration_s`` None: the monitor's default pause)."""
        cmd = Command.silence(alarm, duration_s)
        return cmd if self.send(device, cmd, timeout) else None

    # -- paho network thread ---------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            self.last_error = f"connect refused: {rc}"
            self._events.put(LinkChange(False, self.last_error))
            return
        if self.listen:
            client.subscribe([(self.alert_filter, 1), (self.status_filter, 1)])
        with self._lock:
            self._connected = True
            self.connects += 1
            self.last_error = None
            self._lock.notify_all()
        detail = f"connected to {self.host}:{self.port} (session present: {flags.session_present})"
        self._events.put(LinkChange(True, detail))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            was = self._connected
            self._connected = self._subscribed = False
            self._lock.notify_all()
        if was and self._started:
            self.last_error = f"disconnected: {rc}"
            self._events.put(LinkChange(False, f"connection lost ({rc}); reconnecting"))

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        refused = [str(r) for r in rcs if r.is_failure]
        if refused:
            self.last_error = f"subscription refused: {', '.join(refused)}"
            log.error("%s", self.last_error)
            self._events.put(LinkChange(self._connected, self.last_error))
        with self._lock:
            self._subscribed = not refused
            self._lock.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with self._lock:
            self._pubacks[mid] = rc
            self._lock.notify_all()

    def _on_alert(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            alert = Alert.from_json(msg.payload)
        except ValueError as exc:
            with self._lock:
                self.board.malformed += 1
            log.warning("ignored a malformed alert on %s: %s", msg.topic, exc)
            return
        device = msg.topic.split("/")[2]
        if alert.device != device or alert.site != self.site:
            alert = replace(alert, site=self.site, device=device)  # the topic (the ACL) is authoritative
        with self._lock:
            entry = self.board.apply(alert, self._clock())
        if entry is not None:
            self._events.put(entry)

    def _on_status(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            p = self.board.apply_status(msg.topic.split("/")[2], msg.payload, self._clock())
        if p is not None:
            self._events.put(p)


# ---------------------------------------------------------------------------------------------
# View

_PRIORITY_STYLE = {Priority.HIGH: "bold red", Priority.MEDIUM: "yellow", Priority.LOW: "cyan"}


def state_label(entry: AlarmEntry, now: float) -> str:
    """The entry's state with its standing flags, e.g. ``raised, silenced`` or ``escalated, acked``."""
    parts = [entry.state.value]
    if entry.active and entry.acknowledged and entry.state is not AlarmState.ACKNOWLEDGED:
        parts.append("acked")
    if entry.active and entry.state is not AlarmState.SILENCED and entry.silenced(now):
        parts.append("silenced")
    return ", ".join(parts)


def format_event(event: StationEvent, now: float) -> str:
    """One plain line for a change."""
    if isinstance(event, AlarmEntry):
        return (
            f"{event.monitor_time}  {event.priority.value.upper():6}  {event.device}  {event.alarm}  "
            f"{state_label(event, now)}  {event.message}".rstrip()
        )
    if isinstance(event, Presence):
        return f"{event.monitor_time or '-'}  status  {event.name}  {event.state}"
    return f"-  link  {'up' if event.connected else 'down'}  {event.detail}"


def render_table(station: Station, now: float | None = None) -> Any:
    """The live view: one rich Table, every entry newest first, rows coloured by priority."""
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    entries = station.entries()
    presence = station.presence()
    n_active = sum(e.active for e in entries)
    link = "[green]connected[/]" if station.connected else f"[red]{station.last_error or 'connecting'}[/]"
    online = ", ".join(f"{p.name} {p.state}" for p in presence) or "no status yet"
    table = Table(
        title=f"Vigil alarms, site {station.site}: {n_active} active",
        caption=Text.from_markup(f"{link}  ·  {online}"),
        expand=True,
    )
    for name, kw in (
        ("time", {"no_wrap": True}),
        ("priority", {"no_wrap": True}),
        ("device", {"no_wrap": True}),
        ("alarm", {"no_wrap": True}),
        ("state", {"no_wrap": True}),
        ("message", {"ratio": 1}),
    ):
        table.add_column(name, **kw)  # type: ignore[arg-type]
    for e in entries:
        style = _PRIORITY_STYLE[e.priority] if e.active else "dim"
        if e.active and (e.acknowledged or e.silenced(now)):
            style += " italic"
        hhmmss = e.monitor_time[11:19] or e.monitor_time
        table.add_row(
            hhmmss, e.priority.value, e.device, e.alarm, state_label(e, now), e.message, style=style
        )
    return table


def watch(
    station: Station,
    *,
    seconds: float | None = None,
    out: TextIO | None = None,
    live: bool | None = None,
    prune_every_s: float = 5.0,
) -> int:
    """Show the station until ``seconds`` pass (None: until Ctrl-C): a rich live table when ``live``
    (default: ``out`` is a terminal), else one plain line per change and the active list at the end."""
    out = sys.stdout if out is None else out
    live = out.isatty() if live is None else live
    deadline = None if seconds is None else time.monotonic() + seconds
    next_prune = time.monotonic() + prune_every_s

    def remaining() -> float:
        return 0.25 if deadline is None else min(0.25, deadline - time.monotonic())

    def step() -> list[StationEvent]:
        nonlocal next_prune
        events = station.events(timeout=max(0.0, remaining()))
        if time.monotonic() >= next_prune:
            station.prune()
            next_prune = time.monotonic() + prune_every_s
        return events

    if live:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=out)
        with Live(get_renderable=lambda: render_table(station), console=console, refresh_per_second=4):
            while remaining() > 0:
                step()
        return 0

    while remaining() > 0:
        for ev in step():
            out.write(format_event(ev, time.time()) + "\n")
        out.flush()
    active = station.active()
    now = time.time()
    out.write(f"-  summary  {len(active)} active alarm{'s' if len(active) != 1 else ''}\n")
    for e in active:
        out.write(f"-  active  {format_event(e, now)}\n")
    out.flush()
    return 0
