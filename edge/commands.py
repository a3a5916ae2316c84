"""Inbound commands (``vigil/<site>/<device>/command``): acknowledge or silence an alarm, schema 1.

Payload (JSON object, UTF-8)::

    {"schema": "vigil.command/1", "id": "<unique>", "action": "acknowledge" | "silence",
     "alarm": "<alarm type>" | "*", "duration_s": <seconds> | null}

``id`` is unique per command (QoS 1 delivers at least once: a monitor applies each id once).
``alarm`` is an alarm type of :data:`vigil.edge.alarms.ALARMS` or ``"*"`` (every active alarm of the
device). ``duration_s`` is the audio pause of ``silence`` (null: the monitor's default,
``AlarmConfig.silence_s``); it is always null for ``acknowledge``. The device is the topic level, not
a payload field, so the broker's ACL decides who may command which device.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigil.edge.alarms import AlarmEngine
    from vigil.edge.messages import Alert

SCHEMA_COMMAND = "vigil.command/1"
ACTIONS = ("acknowledge", "silence")
_FIELDS = {"schema", "id", "action", "alarm", "duration_s"}


@dataclass(frozen=True)
class Command:
    """One acknowledge/silence command for one alarm (or ``"*"``) of the device named by the topic."""

    action: str
    alarm: str
    duration_s: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        if not isinstance(self.alarm, str) or not self.alarm or any(c in self.alarm for c in "/+#\x00"):
            raise ValueError(f"alarm must be an alarm type or '*', got {self.alarm!r}")
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("id must be a non-empty string")
        d = self.duration_s
        if d is not None:
            if self.action != "silence":
                raise ValueError("duration_s is only for silence")
            if isinstance(d, bool) or not isinstance(d, int | float) or not (math.isfinite(d) and d > 0):
                raise ValueError(f"duration_s must be a number > 0 or null, got {d!r}")
            object.__setattr__(self, "duration_s", float(d))

    @classmethod
    def acknowledge(cls, alarm: str) -> Command:
        return cls("acknowledge", alarm)

    @classmethod
    def silence(cls, alarm: str, duration_s: float | None = None) -> Command:
        return cls("silence", alarm, duration_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_COMMAND,
            "id": self.id,
            "action": self.action,
            "alarm": self.alarm,
            "duration_s": self.duration_s,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Command:
        """Parse a command payload; ``ValueError`` for anything that is not schema-1 command JSON
        (unknown fields included, so a newer schema is never half-applied)."""
        try:
            d = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed command payload: {exc}") from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA_COMMAND:
            raise ValueError("not a vigil.command/1 payload")
        if set(d) != _FIELDS:
            raise ValueError(f"command fields must be {sorted(_FIELDS)}, got {sorted(d)}")
        return cls(action=d["action"], alarm=d["alarm"], duration_s=d["duration_s"], id=d["id"])

    def apply(self, engine: AlarmEngine, device: str, now: float) -> list[Alert]:
        """Apply to ``engine`` at device time ``now``: the events the engine answers with."""
        return engine.command(device, self.alarm, self.action, now, self.duration_s)


class SeenIds:
    """The most recent ``capacity`` ids, oldest forgotten first: de-duplication of at-least-once
    deliveries (alerts, commands) in bounded memory."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, id_: str) -> bool:
        """Remember ``id_``; False if it was already there (a duplicate)."""
        if id_ in self._ids:
            return False
        self._ids[id_] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, id_: object) -> bool:
        return id_ in self._ids

    def __len__(self) -> int:
        return len(self._ids)
