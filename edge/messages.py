"""What the monitor publishes: topics and JSON payloads (schema version 1).

Topics are ``vigil/<site>/<device>/{alert,vitals,status}`` and, inbound, ``.../command``; they
carry device identifiers, never patient identifiers. Every payload carries ``schema``, a unique
``id`` (consumers de-duplicate on it: QoS 1 delivers at least once), the device time of the
underlying samples and the monitor's wall-clock time of publication.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from functools import lru_cache
from typing import Any

SCHEMA_ALERT = "vigil.alert/1"
SCHEMA_VITALS = "vigil.vitals/1"
SCHEMA_STATUS = "vigil.status/1"


class Priority(Enum):
    """IEC 60601-1-8 alarm priorities."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlarmState(Enum):
    """Lifecycle of one alarm condition as reported on the ``alert`` topic."""

    RAISED = "raised"
    ESCALATED = "escalated"
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"


def topic(site: str, device: str, kind: str) -> str:
    """``vigil/<site>/<device>/<kind>``; site and device must be single topic levels."""
    if type(site) is str and type(device) is str and type(kind) is str:
        return _topic(site, device, kind)
    return _topic.__wrapped__(site, device, kind)


@lru_cache(maxsize=16384)
def _topic(site: str, device: str, kind: str) -> str:
    """:func:`topic`, remembered: a monitor names the same devices' topics once a second each."""
    for name, part in (("site", site), ("device", device)):
        if not part or any(c in part for c in "/+#\x00"):
            raise ValueError(f"{name} {part!r} must be a non-empty MQTT topic level without / + # or NUL")
    if kind not in ("alert", "vitals", "status", "command"):
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"vigil/{site}/{device}/{kind}"


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


@dataclass(frozen=True)
class Alert:
    """One alarm event: an alarm condition of one device changed state."""

    site: str
    device: str
    alarm: str  # e.g. "asystole", "tachycardia", "lead_off"
    priority: Priority
    state: AlarmState
    device_time_us: int
    message: str = ""
    value: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    monitor_time: str = field(default_factory=_now_iso)

    @property
    def topic(self) -> str:
        return topic(self.site, self.device, "alert")

    def to_json(self) -> bytes:
        d = asdict(self)
        d["priority"], d["state"] = self.priority.value, self.state.value
        return json.dumps({"schema": SCHEMA_ALERT, **d}, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Alert:
        """Parse an alert payload; ``ValueError`` for anything that is not schema-1 alert JSON."""
        try:
            d = json.loads(payload)
            if d.pop("schema") != SCHEMA_ALERT:
                raise ValueError("not a vigil.alert/1 payload")
            d["priority"], d["state"] = Priority(d["priority"]), AlarmState(d["state"])
            return cls(**d)
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed alert payload: {exc}") from None


def _json_number(v: Any) -> Any:
    """NaN and infinities as null (JSON has neither); other values as they are."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_number(x) for k, x in v.items()}
    return v


_PLAIN = (str, int, bool, type(None))  # exact types _json_number returns unchanged


@dataclass(frozen=True)
class Vitals:
    """Periodic summary of one device (``vigil/<site>/<device>/vitals``); unmeasured values are null.

    ECG: ``hr_bpm`` (latest RR interval, falling while beats stop), ``rr_ms`` (latest RR),
    ``mean_rr_ms``, ``sdnn_ms``, ``rmssd_ms``, ``pnn50_pct`` and ``cosen`` over the rhythm window of
    ``n_rr`` intervals. Every kind: ``quality_score`` in [0, 1] and ``quality_flags`` (names of
    :class:`~vigil.kernels.quality.QualityFlag` bits), ``lead_off``. ``eeg`` (line length, band
    powers) and ``emg`` (rms, mav, envelope) summaries for those kinds; ``stream`` holds link
    counters (frames, gaps, samples lost, resets, frames dropped by backpressure). ``networks``: what
    the monitor's networks said of the device (:mod:`vigil.edge.networks`): ``beats`` (classified
    beats per AAMI class since the stream started), ``rhythm`` and ``af_probability`` (latest 10-s
    window), ``seizure_probability`` (latest EEG window); empty without networks.
    """

    site: str
    device: str
    kind: str  # "ecg", "eeg", "emg"
    device_time_us: int
    hr_bpm: float | None = None
    rr_ms: float | None = None
    mean_rr_ms: float | None = None
    sdnn_ms: float | None = None
    rmssd_ms: float | None = None
    pnn50_pct: float | None = None
    cosen: float | None = None
    n_rr: int = 0
    quality_score: float | None = None
    quality_flags: list[str] = field(default_factory=list)
    lead_off: bool = False
    eeg: dict[str, Any] = field(default_factory=dict)
    emg: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    networks: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    monitor_time: str = field(default_factory=_now_iso)

    @property
    def topic(self) -> str:
        return topic(self.site, self.device, "vitals")

    def to_json(self) -> bytes:
        # the fields as they are (asdict would deep-copy them first: a monitor sends one per device per
        # period); NaN and infinities become null
        d = {}
        for k in _VITALS_FIELDS:
            v = getattr(self, k)
            d[k] = v if type(v) in _PLAIN or (type(v) is float and math.isfinite(v)) else _json_number(v)
        return json.dumps({"schema": SCHEMA_VITALS, **d}, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Vitals:
        """Parse a vitals payload; ``ValueError`` for anything that is not schema-1 vitals JSON."""
        try:
            d = json.loads(payload)
            if d.pop("schema") != SCHEMA_VITALS:
                raise ValueError("not a vigil.vitals/1 payload")
            return cls(**d)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed vitals payload: {exc}") from None


_VITALS_FIELDS = tuple(f.name for f in fields(Vitals))
