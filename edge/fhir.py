"""Optional HL7 FHIR R4 (4.0.1) payloads: an alert as a ``DetectedIssue``, vitals as ``Observation``\\ s.

Plain JSON dicts (FHIR JSON rules: no null, empty string, empty list or empty object anywhere;
decimals as JSON numbers), for systems that take FHIR instead of the ``vigil.*/1`` schemas. Topics
carry device ids, never patient ids, so no resource has a ``patient``/``subject``: the receiving
system, which knows which patient wears which device, adds it. Devices are *logical* references
(``Reference.identifier``, system :data:`DEVICE_SYSTEM`, value ``<site>/<device>``), never a literal
``Device/<id>`` that would claim a resource on some server.

Identifiers: ``urn:uuid`` values in system ``urn:ietf:rfc:3986``, derived from the Vigil payload id
(the alert id itself when it is a UUID, else a UUIDv5 of it), so a redelivered payload maps to the
same identifier and the receiver can de-duplicate.

**DetectedIssue** (R4 required: ``status``; everything else optional):

* ``status`` (ObservationStatus): ``preliminary`` while the alarm is active (raised, escalated,
  acknowledged, silenced: it may still change), ``final`` once cleared.
* ``severity`` (DetectedIssueSeverity ``http://hl7.org/fhir/detectedissue-severity``): priority
  high -> ``high``, medium -> ``moderate``, low -> ``low``.
* ``code``: ``text`` is the alarm ("asystole", "lead off"); one coding in the *local* system
  :data:`ALARM_SYSTEM` with the Vigil alarm type (no standard terminology code is asserted: IEEE
  11073-10101 alert codes would fit, but the mapping is not done here).
* ``identifiedDateTime``: the monitor's wall-clock time of the event; ``author``: the device
  (logical reference); ``detail``: the alert message and state; ``mitigation``: one entry for an
  acknowledge (``action.text`` "acknowledged") or a silence ("audio paused"), dated.

**Observation** (R4 required: ``status``, ``code``). Every vital is ``status`` ``final``, category
``vital-signs`` (``http://terminology.hl7.org/CodeSystem/observation-category``),
``effectiveDateTime``, ``device`` (logical reference) and a ``valueQuantity`` in UCUM
(``http://unitsofmeasure.org``):

============  ===========================================  ===========
vital         code                                         UCUM unit
============  ===========================================  ===========
heart rate    LOINC 8867-4 "Heart rate"                    ``/min``
RR interval   text only: "R-R interval (latest)"           ``ms``
HRV SDNN      LOINC 80404-7 "R-R interval.standard         ``ms``
              deviation (Heart rate variability)"
HRV RMSSD     text only: "HRV RMSSD ..."                   ``ms``
signal        text only: "ECG signal quality score"        ``1``
quality
============  ===========================================  ===========

RR interval, RMSSD and the signal quality score have **no LOINC code** that we assert: their
``code`` is ``text`` only (allowed in R4: a CodeableConcept may be text alone). A receiver that maps
them to a terminology (MDC, a local code system) may add codings. The heart-rate observation is
shaped like the FHIR vital-signs profile (LOINC code, category, UCUM ``/min``) but does not claim
the profile, which requires a Patient ``subject``. Signal quality also lists its quality flags in
``note``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from vigil.edge.messages import AlarmState, Alert, Priority, Vitals

FHIR_VERSION = "4.0.1"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
URI = "urn:ietf:rfc:3986"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
#: Local (non-standard) code system of Vigil alarm types, and of device identifiers.
ALARM_SYSTEM = "urn:vigil:alarm"
DEVICE_SYSTEM = "urn:vigil:device"

SEVERITY: dict[Priority, str] = {Priority.HIGH: "high", Priority.MEDIUM: "moderate", Priority.LOW: "low"}

_NS = uuid.UUID("6f1c2a43-58d1-4b7e-9a43-1d3f0c6b5e21")  # UUIDv5 namespace of Vigil payload ids

#: name -> (LOINC code or None, display/text, UCUM code, human unit)
VITALS: dict[str, tuple[str | None, str, str, str]] = {
    "hr_bpm": ("8867-4", "Heart rate", "/min", "beats/minute"),
    "rr_ms": (None, "R-R interval (latest)", "ms", "ms"),
    "sdnn_ms": ("80404-7", "R-R interval.standard deviation (Heart rate variability)", "ms", "ms"),
    "rmssd_ms": (None, "HRV RMSSD (root mean square of successive R-R differences)", "ms", "ms"),
    "quality": (None, "ECG signal quality score (Vigil, 0 = unusable .. 1 = clean)", "1", "score"),
}


def urn_uuid(payload_id: str, suffix: str = "") -> str:
    """``urn:uuid:...`` for a Vigil payload id (+ ``suffix`` for one of several resources)."""
    if not suffix:
        try:
            return uuid.UUID(payload_id).urn
        except ValueError:
            pass
    return uuid.uuid5(_NS, f"{payload_id}/{suffix}").urn


def device_reference(site: str, device: str) -> dict[str, Any]:
    """Logical Reference to a device: no server id is assumed."""
    return {
        "type": "Device",
        "identifier": {"system": DEVICE_SYSTEM, "value": f"{site}/{device}"},
        "display": device,
    }


def detected_issue(alert: Alert) -> dict[str, Any]:
    """An :class:`~vigil.edge.messages.Alert` as a FHIR R4 ``DetectedIssue``."""
    label = alert.alarm.replace("_", " ")
    detail = f"{alert.message or label} [{alert.state.value}, {alert.priority.value} priority]"
    issue: dict[str, Any] = {
        "resourceType": "DetectedIssue",
        "identifier": [{"system": URI, "value": urn_uuid(alert.id)}],
        "status": "final" if alert.state is AlarmState.CLEARED else "preliminary",
        "code": {"coding": [{"system": ALARM_SYSTEM, "code": alert.alarm, "display": label}], "text": label},
        "severity": SEVERITY[alert.priority],
        "identifiedDateTime": alert.monitor_time,
        "author": device_reference(alert.site, alert.device),
        "detail": detail,
    }
    if alert.state in (AlarmState.ACKNOWLEDGED, AlarmState.SILENCED):
        action = "acknowledged" if alert.state is AlarmState.ACKNOWLEDGED else "audio paused (silenced)"
        issue["mitigation"] = [{"action": {"text": action}, "date": alert.monitor_time}]
    return issue


def observation(
    name: str,
    value: float,
    *,
    site: str,
    device: str,
    effective: str,
    payload_id: str,
    note: str = "",
) -> dict[str, Any]:
    """One vital (a key of :data:`VITALS`) as a FHIR R4 ``Observation``; ``effective`` is ISO 8601
    with a time zone, ``payload_id`` the id of the vitals payload it came from."""
    if name not in VITALS:
        raise ValueError(f"unknown vital {name!r}; one of {sorted(VITALS)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    loinc, text, ucum, unit = VITALS[name]
    code: dict[str, Any] = {"text": text}
    if loinc is not None:
        code = {"coding": [{"system": LOINC, "code": loinc, "display": text}], "text": text}
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": URI, "value": urn_uuid(payload_id, name)}],
        "status": "final",
        "category": [
            {
                "coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}],
                "text": "Vital Signs",
            }
        ],
        "code": code,
        "effectiveDateTime": effective,
        "device": device_reference(site, device),
        "valueQuantity": {"value": _decimal(value), "unit": unit, "system": UCUM, "code": ucum},
    }
    if note:
        obs["note"] = [{"text": note}]
    return obs


def vitals_observations(
    *,
    site: str,
    device: str,
    effective: str,
    payload_id: str,
    hr_bpm: float | None = None,
    rr_ms: float | None = None,
    sdnn_ms: float | None = None,
    rmssd_ms: float | None = None,
    quality: float | None = None,
    quality_flags: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The measured vitals as Observations; None or NaN values (not measured) are left out."""
    values = {"hr_bpm": hr_bpm, "rr_ms": rr_ms, "sdnn_ms": sdnn_ms, "rmssd_ms": rmssd_ms, "quality": quality}
    flags = ", ".join(quality_flags)
    out = []
    for name, v in values.items():
        if v is None or not math.isfinite(v):
            continue
        note = f"quality flags: {flags}" if name == "quality" and flags else ""
        out.append(
            observation(
                name,
                float(v),
                site=site,
                device=device,
                effective=effective,
                payload_id=payload_id,
                note=note,
            )
        )
    return out


def observations_from(vitals: Any) -> list[dict[str, Any]]:
    """:func:`vitals_observations` of a vitals payload object (duck-typed: ``site``, ``device``,
    ``id``, ``monitor_time``, and any of ``hr_bpm``, ``rr_ms``, ``sdnn_ms``, ``rmssd_ms``,
    ``quality_score``, ``quality_flags``)."""
    return vitals_observations(
        site=vitals.site,
        device=vitals.device,
        effective=vitals.monitor_time,
        payload_id=vitals.id,
        hr_bpm=getattr(vitals, "hr_bpm", None),
        rr_ms=getattr(vitals, "rr_ms", None),
        sdnn_ms=getattr(vitals, "sdnn_ms", None),
        rmssd_ms=getattr(vitals, "rmssd_ms", None),
        quality=getattr(vitals, "quality_score", None),
        quality_flags=getattr(vitals, "quality_flags", None) or (),
    )


def bundle(resources: Iterable[Mapping[str, Any]], timestamp: str | None = None) -> dict[str, Any]:
    """A ``collection`` Bundle of ``resources`` (each entry's ``fullUrl`` its first identifier)."""
    entries = []
    for r in resources:
        entry: dict[str, Any] = {"resource": dict(r)}
        ids = r.get("identifier") or []
        if ids and ids[0].get("system") == URI:
            entry["fullUrl"] = ids[0]["value"]
        entries.append(entry)
    b: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
    if timestamp:
        b["timestamp"] = timestamp
    if entries:
        b["entry"] = entries
    return b


def _decimal(v: float) -> int | float:
    """JSON number for a FHIR decimal: integral values without a fraction."""
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else round(float(v), 6)


# -- publishing ----------------------------------------------------------------------------------

#: What a monitor sink takes: (topic, payload, priority, kind).
OutItem = tuple[str, bytes, Any, str]


def fhir_topic(topic: str) -> str:
    """``vigil/<site>/<device>/alert`` -> ``vigil/<site>/<device>/alert/fhir`` (likewise vitals): a
    subscriber to ``.../+/alert`` never sees the FHIR copy, one to ``.../+/alert/fhir`` sees only it."""
    return f"{topic}/fhir"


def _dumps(resource: Mapping[str, Any]) -> bytes:
    return json.dumps(resource, separators=(",", ":"), sort_keys=True).encode()


class FHIRSink:
    """Wraps a monitor sink (``publish_alert``, ``publish``, optional ``publish_many``) and also
    publishes every alert as a ``DetectedIssue`` and every vitals payload as a ``Bundle`` of
    ``Observation``\\ s (when it holds any) on the ``/fhir`` sub-topic (``mqtt.fhir = true``). The
    FHIR copy of an alert travels in the same outbox batch as the alert, with the alert's priority,
    so it is kept and resent exactly like it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # outbox, state, flush, stop ... of the wrapped sink
        return getattr(self.inner, name)

    def _mirror(self, topic: str, payload: bytes, priority: Any, kind: str) -> list[OutItem]:
        item = (topic, payload, priority, kind)
        if kind == "alert":
            resource = detected_issue(Alert.from_json(payload))
        elif kind == "vitals":
            v = Vitals.from_json(payload)
            observations = observations_from(v)
            if not observations:  # nothing measured yet, or a kind with no FHIR vital (EEG, EMG)
                return [item]
            resource = bundle(observations, timestamp=v.monitor_time)
        else:
            return [item]
        return [item, (fhir_topic(topic), _dumps(resource), priority, kind)]

    def publish_many(self, items: Iterable[OutItem]) -> list[int]:
        out = [m for it in items for m in self._mirror(*it)]
        if hasattr(self.inner, "publish_many"):
            return self.inner.publish_many(out)
        return [self.inner.publish(*it) for it in out]

    def publish_alert(self, alert: Alert) -> int:
        return self.publish_many([(alert.topic, alert.to_json(), alert.priority, "alert")])[0]

    def publish(self, topic: str, payload: bytes, priority: Any, kind: str) -> int:
        return self.publish_many([(topic, payload, priority, kind)])[0]
