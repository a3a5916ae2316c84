"""FHIR R4 payloads (edge/fhir.py) checked against the R4 resource structure: allowed and required
elements, value sets, data type shapes (CodeableConcept, Coding, Quantity, Reference, Identifier,
Annotation, dateTime), code systems, UCUM units and the FHIR JSON rules (no null or empty values)."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace
from typing import Any

import pytest

from vigil.edge import fhir
from vigil.edge.messages import AlarmState, Alert, Priority

# -- the R4 structure the payloads must follow (hl7.org/fhir/R4) ------------------------------

_RESOURCE = {
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
}
ALLOWED = {
    "DetectedIssue": _RESOURCE
    | {
        "identifier",
        "status",
        "code",
        "severity",
        "patient",
        "identifiedDateTime",
        "identifiedPeriod",
        "author",
        "implicated",
        "evidence",
        "detail",
        "reference",
        "mitigation",
    },
    "Observation": _RESOURCE
    | {
        "identifier",
        "basedOn",
        "partOf",
        "status",
        "category",
        "code",
        "subject",
        "focus",
        "encounter",
        "effectiveDateTime",
        "effectivePeriod",
        "effectiveTiming",
        "effectiveInstant",
        "issued",
        "performer",
        "valueQuantity",
        "valueString",
        "dataAbsentReason",
        "interpretation",
        "note",
        "bodySite",
        "method",
        "specimen",
        "device",
        "referenceRange",
        "hasMember",
        "derivedFrom",
        "component",
    },
    "Bundle": {
        "resourceType",
        "id",
        "meta",
        "implicitRules",
        "language",
        "identifier",
        "type",
        "timestamp",
        "total",
        "link",
        "entry",
        "signature",
    },
}
REQUIRED = {"DetectedIssue": {"status"}, "Observation": {"status", "code"}, "Bundle": {"type"}}
OBSERVATION_STATUS = {
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
}
SEVERITY = {"high", "moderate", "low"}
LISTS = {"identifier", "category", "note", "mitigation", "coding", "entry"}
DATETIME = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
)
URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*:\S+$")
LOINC_CODE = re.compile(r"^\d{1,7}-\d$")
UCUM_UNITS = {"/min", "ms", "1"}
KNOWN_SYSTEMS = {fhir.LOINC, fhir.ALARM_SYSTEM, fhir.OBSERVATION_CATEGORY}


def check_json_rules(v: Any, path: str = "$") -> None:
    """FHIR JSON: no null, no empty string/array/object, finite numbers only."""
    assert v is not None, f"{path}: null"
    if isinstance(v, str):
        assert v.strip(), f"{path}: empty string"
    elif isinstance(v, list):
        assert v, f"{path}: empty array"
        for i, x in enumerate(v):
            check_json_rules(x, f"{path}[{i}]")
    elif isinstance(v, dict):
        assert v, f"{path}: empty object"
        for k, x in v.items():
            check_json_rules(x, f"{path}.{k}")
    elif isinstance(v, float):
        assert math.isfinite(v), f"{path}: {v}"


def check_coding(c: dict, path: str) -> None:
    assert set(c) <= {"system", "version", "code", "display", "userSelected"}, path
    assert URI_RE.match(c["system"]) and c["system"] in KNOWN_SYSTEMS, f"{path}: system {c['system']}"
    assert isinstance(c["code"], str) and not c["code"].startswith(" "), path
    if c["system"] == fhir.LOINC:
        assert LOINC_CODE.match(c["code"]), f"{path}: LOINC code {c['code']}"


def check_codeable_concept(cc: dict, path: str) -> None:
    assert set(cc) <= {"coding", "text"} and cc, path
    for i, c in enumerate(cc.get("coding", [])):
        check_coding(c, f"{path}.coding[{i}]")


def check_reference(r: dict, path: str) -> None:
    assert set(r) <= {"reference", "type", "identifier", "display"}, path
    assert "reference" in r or "identifier" in r, f"{path}: neither literal nor logical"
    if "identifier" in r:
        check_identifier(r["identifier"], f"{path}.identifier")
    if "type" in r:
        assert r["type"] == "Device", path


def check_identifier(i: dict, path: str) -> None:
    assert set(i) <= {"use", "type", "system", "value", "period", "assigner"}, path
    assert URI_RE.match(i["system"]) and isinstance(i["value"], str), path
    if i["system"] == fhir.URI:
        assert re.fullmatch(
            r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", i["value"]
        )


def check_quantity(q: dict, path: str) -> None:
    assert set(q) <= {"value", "comparator", "unit", "system", "code"}, path
    assert isinstance(q["value"], int | float) and not isinstance(q["value"], bool), path
    assert q["system"] == fhir.UCUM and q["code"] in UCUM_UNITS, f"{path}: {q}"


def check_resource(r: dict) -> None:
    """Shape of a DetectedIssue, Observation or Bundle (and its entries) as R4 defines it."""
    check_json_rules(r)
    json.dumps(r, allow_nan=False)
    rt = r["resourceType"]
    assert set(r) <= ALLOWED[rt], f"{rt}: unknown elements {set(r) - ALLOWED[rt]}"
    assert REQUIRED[rt] <= set(r), f"{rt}: missing {REQUIRED[rt] - set(r)}"
    for k in LISTS & set(r):
        assert isinstance(r[k], list), f"{rt}.{k} must be an array"
    for i, ident in enumerate(r.get("identifier", [])):
        check_identifier(ident, f"{rt}.identifier[{i}]")
    if rt == "DetectedIssue":
        assert r["status"] in OBSERVATION_STATUS and r.get("severity", "high") in SEVERITY
        check_codeable_concept(r["code"], "DetectedIssue.code")
        assert DATETIME.fullmatch(r["identifiedDateTime"])
        check_reference(r["author"], "DetectedIssue.author")
        assert isinstance(r["detail"], str)
        for m in r.get("mitigation", []):
            assert set(m) <= {"action", "date", "author"} and "action" in m  # action is 1..1
            check_codeable_concept(m["action"], "DetectedIssue.mitigation.action")
            assert DATETIME.fullmatch(m["date"])
    elif rt == "Observation":
        assert r["status"] in OBSERVATION_STATUS
        check_codeable_concept(r["code"], "Observation.code")
        for c in r["category"]:
            check_codeable_concept(c, "Observation.category")
        assert DATETIME.fullmatch(r["effectiveDateTime"])
        check_reference(r["device"], "Observation.device")
        check_quantity(r["valueQuantity"], "Observation.valueQuantity")
        for n in r.get("note", []):
            assert set(n) <= {"authorString", "time", "text"} and isinstance(n["text"], str)
    else:
        assert r["type"] in {
            "document",
            "message",
            "transaction",
            "transaction-response",
            "batch",
            "batch-response",
            "history",
            "searchset",
            "collection",
        }
        for e in r.get("entry", []):
            assert set(e) <= {"link", "fullUrl", "resource", "search", "request", "response"}
            check_resource(e["resource"])


# -- tests -------------------------------------------------------------------------------------


def _alert(state: AlarmState, priority: Priority = Priority.HIGH, **kw: Any) -> Alert:
    return Alert(
        "ward3", "ecg-1", "asystole", priority, state, 12_000_000, message="asystole: no beat for 4.2 s", **kw
    )


@pytest.mark.parametrize("state", list(AlarmState))
@pytest.mark.parametrize("priority", list(Priority))
def test_detected_issue_shape(state: AlarmState, priority: Priority) -> None:
    r = fhir.detected_issue(_alert(state, priority))
    check_resource(r)
    assert r["resourceType"] == "DetectedIssue"
    assert (
        r["severity"] == {Priority.HIGH: "high", Priority.MEDIUM: "moderate", Priority.LOW: "low"}[priority]
    )
    assert r["status"] == ("final" if state is AlarmState.CLEARED else "preliminary")
    assert r["code"]["text"] == "asystole" and r["code"]["coding"][0] == {
        "system": "urn:vigil:alarm",
        "code": "asystole",
        "display": "asystole",
    }
    assert r["author"]["identifier"] == {"system": fhir.DEVICE_SYSTEM, "value": "ward3/ecg-1"}
    assert "no beat for 4.2 s" in r["detail"] and state.value in r["detail"]
    assert ("mitigation" in r) == (state in (AlarmState.ACKNOWLEDGED, AlarmState.SILENCED))


def test_detected_issue_identifier_follows_the_alert_id() -> None:
    a = _alert(AlarmState.RAISED)
    r = fhir.detected_issue(a)
    assert (
        r["identifier"][0]["value"]
        == f"urn:uuid:{a.id[:8]}-{a.id[8:12]}-{a.id[12:16]}-{a.id[16:20]}-{a.id[20:]}"
    )
    assert fhir.detected_issue(a) == r  # a redelivered alert maps to the same resource
    other = fhir.detected_issue(_alert(AlarmState.RAISED, id="not-a-uuid"))
    check_resource(other)
    assert other["identifier"][0]["value"] != r["identifier"][0]["value"]


def test_vital_observations_codes_and_units() -> None:
    obs = fhir.vitals_observations(
        site="ward3",
        device="ecg-1",
        effective="2025-03-01T10:00:00.250Z",
        payload_id="abc",
        hr_bpm=72.0,
        rr_ms=833.3,
        sdnn_ms=41.5,
        rmssd_ms=28.25,
        quality=0.93,
        quality_flags=["noise"],
    )
    for o in obs:
        check_resource(o)
        assert o["status"] == "final" and o["category"][0]["coding"][0]["code"] == "vital-signs"
        assert o["device"]["identifier"]["value"] == "ward3/ecg-1" and "subject" not in o
    by_text = {o["code"]["text"]: o for o in obs}
    assert len(by_text) == 5
    hr = by_text["Heart rate"]
    assert hr["code"]["coding"] == [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
    assert hr["valueQuantity"] == {"value": 72, "unit": "beats/minute", "system": fhir.UCUM, "code": "/min"}
    sdnn = next(o for o in obs if "standard deviation" in o["code"]["text"])
    assert sdnn["code"]["coding"][0]["code"] == "80404-7" and sdnn["valueQuantity"]["code"] == "ms"
    text_only = [o for o in obs if "coding" not in o["code"]]  # no LOINC code asserted for these
    assert sorted(o["valueQuantity"]["code"] for o in text_only) == ["1", "ms", "ms"]
    assert any("RMSSD" in o["code"]["text"] for o in text_only)
    q = next(o for o in text_only if o["valueQuantity"]["code"] == "1")
    assert q["valueQuantity"]["value"] == 0.93 and q["note"] == [{"text": "quality flags: noise"}]
    assert len({o["identifier"][0]["value"] for o in obs}) == 5


def test_unmeasured_vitals_are_left_out_and_bundle() -> None:
    obs = fhir.vitals_observations(
        site="s",
        device="d",
        effective="2025-03-01T10:00:00Z",
        payload_id="p",
        hr_bpm=math.nan,
        sdnn_ms=None,
        rmssd_ms=30.0,
    )
    assert [o["valueQuantity"]["value"] for o in obs] == [30]
    with pytest.raises(ValueError):
        fhir.observation("spo2", 97.0, site="s", device="d", effective="2025-03-01T10:00:00Z", payload_id="p")
    b = fhir.bundle([*obs, fhir.detected_issue(_alert(AlarmState.RAISED))], timestamp="2025-03-01T10:00:00Z")
    check_resource(b)
    assert [e["fullUrl"] for e in b["entry"]] == [e["resource"]["identifier"][0]["value"] for e in b["entry"]]
    check_resource(fhir.bundle([]))


def test_observations_from_a_vitals_payload() -> None:
    v = SimpleNamespace(
        site="ward3",
        device="ecg-1",
        id="v1",
        monitor_time="2025-03-01T10:00:00.000Z",
        hr_bpm=61.0,
        rr_ms=None,
        sdnn_ms=12.0,
        quality_score=0.4,
        quality_flags=["wander"],
    )
    obs = fhir.observations_from(v)
    for o in obs:
        check_resource(o)
    assert [o["valueQuantity"]["code"] for o in obs] == ["/min", "ms", "1"]


def test_validator_catches_bad_shapes() -> None:
    good = fhir.detected_issue(_alert(AlarmState.RAISED))
    for bad in (
        {**good, "status": "active"},
        {**good, "severity": "medium"},
        {**good, "detail": ""},
        {**good, "patientId": "x"},
        {k: v for k, v in good.items() if k != "status"},
        {**good, "identifiedDateTime": "2025-03-01 10:00"},
    ):
        with pytest.raises(AssertionError):
            check_resource(bad)


class _Inner:
    def __init__(self, batched: bool) -> None:
        self.items: list = []
        if batched:
            self.publish_many = lambda items: [self.items.extend(items), list(range(len(items)))][1]
        self.outbox = "the wrapped sink's outbox"

    def publish(self, topic, payload, priority, kind):
        self.items.append((topic, payload, priority, kind))
        return len(self.items)


@pytest.mark.parametrize("batched", [True, False])
def test_fhir_sink_mirrors_alerts_and_vitals_in_the_same_batch(batched: bool):
    from vigil.edge.messages import Vitals

    inner = _Inner(batched)
    sink = fhir.FHIRSink(inner)
    alert = Alert(
        "ward", "bed-3", "asystole", Priority.HIGH, AlarmState.RAISED, 5_000_000, "asystole: no beat"
    )
    vit = Vitals("ward", "bed-3", "ecg", 6_000_000, hr_bpm=71.0, sdnn_ms=40.0, quality_score=0.9)
    status = ("vigil/ward/mon/status", b"{}", None, "status")
    empty = Vitals("ward", "eeg-1", "eeg", 6_000_000)  # no FHIR vital in it: no FHIR copy
    sink.publish_many([(alert.topic, alert.to_json(), alert.priority, "alert"),
                       (vit.topic, vit.to_json(), None, "vitals"), status,
                       (empty.topic, empty.to_json(), None, "vitals")])  # fmt: skip
    topics = [t for t, *_ in inner.items]
    bed = "vigil/ward/bed-3"
    assert topics == [f"{bed}/alert", f"{bed}/alert/fhir", f"{bed}/vitals", f"{bed}/vitals/fhir",
                      "vigil/ward/mon/status", "vigil/ward/eeg-1/vitals"]  # fmt: skip
    issue = json.loads(inner.items[1][1])
    assert issue["resourceType"] == "DetectedIssue" and issue["severity"] == "high"
    assert inner.items[1][2] == Priority.HIGH and inner.items[1][3] == "alert"  # kept like the alert
    obs = json.loads(inner.items[3][1])
    assert obs["resourceType"] == "Bundle"
    codes = [e["resource"]["code"].get("coding", [{}])[0].get("code") for e in obs["entry"]]
    assert "8867-4" in codes
    inner.items.clear()
    sink.publish_alert(alert)
    assert len(inner.items) == 2
    assert sink.outbox == "the wrapped sink's outbox"
