"""Outbox: committed before put returns (even under SIGKILL), insertion order, ack, requeue, and the
bounded-disk drop policy (vitals, then low, then medium; never high)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vigil.edge.messages import AlarmState, Alert, Priority
from vigil.edge.outbox import ROW_OVERHEAD, Outbox


def _alert(i: int, priority: Priority = Priority.HIGH) -> Alert:
    return Alert("site1", "ecg-1", "asystole", priority, AlarmState.RAISED, i)


def _put_alert(ob: Outbox, i: int, priority: Priority = Priority.HIGH) -> int:
    a = _alert(i, priority)
    return ob.put(a.topic, a.to_json(), a.priority, "alert")


def test_pending_in_insertion_order_ack_deletes(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        ids = [_put_alert(ob, i) for i in range(10)]
        assert ids == sorted(ids)
        rows = ob.pending(100)
        assert [r.id for r in rows] == ids
        assert [Alert.from_json(r.payload).device_time_us for r in rows] == list(range(10))
        ob.mark_inflight_many([(r.id, 100 + k) for k, r in enumerate(rows[:4])])
        assert [r.id for r in ob.pending(100)] == ids[4:]  # in flight: not pending
        assert ob.inflight() == {r.id: 100 + k for k, r in enumerate(rows[:4])}
        ob.ack_many(ids[:2])
        c = ob.counts()
        assert (c.pending, c.inflight) == (6, 2)
        assert ob.requeue_inflight() == 2
        assert [r.id for r in ob.pending(100)] == ids[2:]  # original order, acked rows gone
        ob.ack(ids[5])
        assert [r.id for r in ob.pending(100)] == ids[2:5] + ids[6:]


def test_reopen_makes_everything_pending_again(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        ids = [_put_alert(ob, i) for i in range(5)]
        ob.mark_inflight_many([(i, i) for i in ids[:3]])
        ob.ack(ids[0])
    with Outbox(tmp_path / "o.db") as ob:
        assert [r.id for r in ob.pending(100)] == ids[1:]
        c = ob.counts()
        assert (c.pending, c.inflight) == (4, 0)
        assert _put_alert(ob, 99) > ids[-1]  # ids are never reused


def test_reject_sets_row_aside(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        ids = [_put_alert(ob, i) for i in range(3)]
        ob.mark_inflight(ids[0], 1)
        ob.reject(ids[0])
        ob.requeue_inflight()
        assert [r.id for r in ob.pending(10)] == ids[1:]
        assert ob.counts().rejected == 1


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from vigil.edge.messages import AlarmState, Alert, Priority
    from vigil.edge.outbox import Outbox
    ob = Outbox(sys.argv[1])
    i = 0
    while True:
        a = Alert("site1", "ecg-1", "asystole", Priority.HIGH, AlarmState.RAISED, i)
        row = ob.put(a.topic, a.to_json(), a.priority, "alert")
        sys.stdout.write(f"{row} {a.id}\\n")
        sys.stdout.flush()
        i += 1
    """
)


def test_put_is_committed_before_it_returns_sigkill(tmp_path: Path) -> None:
    """A writer is SIGKILLed mid-stream; every put that returned is in the database afterwards."""
    db = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(db)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    returned = {}
    while len(returned) < 200:
        line = proc.stdout.readline()
        assert line, "writer died"
        row, alert_id = line.split()
        returned[int(row)] = alert_id.decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Lines the writer printed but we had not read yet also count as returned.
    for line in proc.stdout.read().splitlines():
        if len(line.split()) == 2:
            row, alert_id = line.split()
            returned[int(row)] = alert_id.decode()
    with Outbox(db) as ob:
        stored = {r.id: Alert.from_json(r.payload).id for r in ob.pending(1_000_000)}
    assert set(returned) <= set(stored)
    assert all(stored[row] == alert_id for row, alert_id in returned.items())


def test_budget_drops_vitals_then_low_then_medium_never_high(tmp_path: Path, caplog) -> None:
    topic = "vigil/site1/ecg-1/vitals"
    payload = b"x" * 100
    row_size = len(topic) + len(payload) + ROW_OVERHEAD
    with Outbox(tmp_path / "o.db", max_bytes=10 * row_size) as ob:
        for _ in range(3):
            ob.put(topic, payload, None, "vitals")
        low = [ob.put(topic.replace("vitals", "alert"), payload, Priority.LOW, "alert") for _ in range(2)]
        med = [ob.put(topic.replace("vitals", "alert"), payload, "medium", "alert") for _ in range(2)]
        high = [ob.put(topic.replace("vitals", "alert"), payload, Priority.HIGH, "alert") for _ in range(3)]
        assert ob.counts().dropped_total == 0  # exactly at budget

        def stored() -> list[int]:
            return [r.id for r in ob.pending(1000)]

        extra = [ob.put(topic.replace("vitals", "alert"), payload, Priority.HIGH, "alert") for _ in range(4)]
        # four more rows: the three vitals go first (oldest first), then the oldest low alert
        assert stored() == low[1:] + med + high + extra
        assert ob.counts().dropped == {"vitals": 3, "low": 1, "medium": 0}
        extra += [ob.put(topic.replace("vitals", "alert"), payload, Priority.HIGH, "alert") for _ in range(3)]
        assert stored() == high + extra
        assert ob.counts().dropped == {"vitals": 3, "low": 2, "medium": 2}
        assert not ob.counts().over_budget
        # only high alerts left: accepted, over budget, nothing dropped
        more = [ob.put(topic.replace("vitals", "alert"), payload, Priority.HIGH, "alert") for _ in range(5)]
        assert stored() == high + extra + more
        c = ob.counts()
        assert c.over_budget and c.dropped_total == 7
        # a vitals sample into an outbox full of high alerts drops itself
        ob.put(topic, payload, None, "vitals")
        assert stored() == high + extra + more
        assert ob.counts().dropped["vitals"] == 4
        assert "dropped" in caplog.text and "over budget" in caplog.text
    with Outbox(tmp_path / "o.db", max_bytes=10 * row_size) as ob:  # totals survive a reopen
        assert ob.counts().bytes == 15 * (row_size - 1)  # "alert" is one byte shorter than "vitals"
        assert all(r.priority == "high" for r in ob.pending(1000))


def test_high_alerts_never_dropped_under_pressure(tmp_path: Path) -> None:
    """Random mix far over budget: every high alert is still there, in order."""
    import random

    rng = random.Random(7)
    with Outbox(tmp_path / "o.db", max_bytes=20_000) as ob:
        high = []
        for i in range(600):
            kind = rng.choice(["vitals", "low", "medium", "high"])
            if kind == "vitals":
                ob.put("vigil/s/d/vitals", os.urandom(rng.randrange(10, 300)), None, "vitals")
            else:
                row = _put_alert(ob, i, Priority(kind))
                if kind == "high":
                    high.append(row)
        rows = ob.pending(10_000)
        assert [r.id for r in rows if r.priority == "high"] == high
        c = ob.counts()
        assert c.dropped_total > 0
        assert c.bytes <= 20_000 or all(r.priority == "high" for r in rows)


def test_put_many_is_one_transaction_and_validates(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as ob:
        alerts = [_alert(i) for i in range(50)]
        ids = ob.put_many([(a.topic, a.to_json(), a.priority, "alert") for a in alerts])
        assert [r.id for r in ob.pending(100)] == ids
        with pytest.raises(ValueError):
            ob.put_many(
                [
                    ("vigil/s/d/alert", b"{}", Priority.HIGH, "alert"),
                    ("vigil/s/d/alert", b"{}", None, "alert"),
                ]
            )
        assert len(ob) == 50  # nothing of the failed batch was stored
