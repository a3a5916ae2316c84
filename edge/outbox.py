"""Durable outbox: every alert and vitals message is committed to SQLite before it is published.

Why SQLite in WAL mode: one file, atomic commits, readers never block the writer, and a process killed
at any instant leaves either the whole row or none of it.

Durability (``synchronous``): ``put`` commits with ``synchronous=FULL`` by default, so the WAL is fsynced
before ``put`` returns and an alert survives a power cut, not only a crash. The cost is one fsync per
commit (``put_many`` shares one fsync between many rows). ``NORMAL`` in WAL mode survives a killed
process but may lose the last commits on power loss; that is an acceptable trade only for bookkeeping,
so ``ack``/``reject`` always commit with ``NORMAL``: losing one of those to a power cut means a message
is sent again, which consumers already de-duplicate by ``id``.

In flight is a property of a live MQTT session, not of the stored message: ``mark_inflight`` records it
in memory only (no disk write per publish), and a reopened outbox has every stored row pending again,
in insertion order. ``requeue_inflight`` does the same for a live outbox whose client lost its session.

Bounded disk use: stored bytes (topic + payload + a fixed per-row overhead) are kept under
``max_bytes``. When a put goes over, rows are dropped oldest first within each class, classes in this
order: vitals (and any non-alert kind), then low, then medium alerts. High-priority alerts are never
dropped; if only they remain the put is accepted and the outbox reports itself over budget. A put may
drop its own row (a vitals sample into an outbox full of alerts). Every drop is counted per class and
logged. The database file follows the stored bytes (freed pages are reused); the WAL is checkpointed
and truncated to ``journal_size_limit``.

Threads: one connection shared under a lock (``check_same_thread=False``). SQLite serialises writers
anyway, and a Python lock hands over faster than SQLite's busy-wait, so a writer thread (``put``), a
sender thread and the MQTT network thread may all call in.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from vigil.edge.messages import Priority

log = logging.getLogger(__name__)

ROW_OVERHEAD = 64
"""Bytes charged per row on top of topic and payload (SQLite record, index entries)."""


class RowState(IntEnum):
    """Stored state of a row: pending (in flight is kept in memory), or set aside. Acked rows are deleted."""

    PENDING = 0
    REJECTED = 2  # the broker answered with a failure reason code; kept for inspection, not resent


class DropClass(IntEnum):
    """Drop order when over budget: lowest first; ``HIGH`` is never dropped."""

    VITALS = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3


_PRIORITY_CLASS = {
    Priority.LOW: DropClass.LOW,
    Priority.MEDIUM: DropClass.MEDIUM,
    Priority.HIGH: DropClass.HIGH,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a stale ack cannot hit a newer row
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    kind TEXT NOT NULL,
    priority TEXT,
    class INTEGER NOT NULL,
    size INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, id);
CREATE INDEX IF NOT EXISTS outbox_drop ON outbox (class, id) WHERE class < 3;
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One stored message."""

    id: int
    topic: str
    payload: bytes
    kind: str
    priority: str | None


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    """Rows per state, stored bytes against the budget, and drops per class since open."""

    pending: int
    inflight: int
    rejected: int
    bytes: int
    max_bytes: int
    dropped: dict[str, int]

    @property
    def over_budget(self) -> bool:
        return self.bytes > self.max_bytes

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def drop_class(kind: str, priority: Priority | str | None) -> DropClass:
    """Class of a message for the drop policy; alerts must carry a priority."""
    if kind != "alert":
        return DropClass.VITALS
    if priority is None:
        raise ValueError("an alert needs a priority")
    return _PRIORITY_CLASS[Priority(priority)]


class Outbox:
    """SQLite-backed FIFO of messages awaiting a PUBACK."""

    def __init__(
        self, path: str | Path, max_bytes: int = 64 * 1024 * 1024, synchronous: str = "FULL"
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._put_sync = synchronous.upper()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA journal_size_limit={4 * 1024 * 1024}")
        self._db.execute("PRAGMA busy_timeout=5000")  # other processes (tools) opening the file
        self._db.executescript(_SCHEMA)
        self._sync = ""
        self._set_sync(self._put_sync)
        # Totals live in memory (read once here) so counts() never scans the table.
        self._bytes = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()[0]
        states = dict(self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall())
        self._n = {RowState.PENDING: states.get(0, 0), RowState.REJECTED: states.get(2, 0)}
        self._dropped = {c.name.lower(): 0 for c in DropClass if c is not DropClass.HIGH}
        self._inflight: dict[int, int] = {}  # row id -> MQTT packet id
        self._cursor = 0  # highest row id handed out since open or requeue
        self._closed = False

    # -- writing ---------------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, priority: Priority | str | None, kind: str) -> int:
        """Store one message; committed (fsynced with ``FULL``) before the row id is returned."""
        return self.put_many([(topic, payload, priority, kind)])[0]

    def put_many(self, items: Iterable[tuple[str, bytes, Priority | str | None, str]]) -> list[int]:
        """Store several messages in one transaction (one fsync); all are committed on return."""
        now = time.time()
        rows = []
        for topic, payload, priority, kind in items:
            cls = drop_class(kind, priority)
            pri = None if priority is None else Priority(priority).value
            size = len(topic.encode()) + len(payload) + ROW_OVERHEAD
            rows.append((topic, bytes(payload), kind, pri, int(cls), size, now))
        with self._lock:
            self._check_open()
            self._set_sync(self._put_sync)
            ids = []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    cur = self._db.execute(
                        "INSERT INTO outbox (topic, payload, kind, priority, class, size, created)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    ids.append(cur.lastrowid)
                added = sum(r[5] for r in rows)
                dropped = self._enforce_budget(self._bytes + added)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += added - sum(d[2] for d in dropped)
            self._n[RowState.PENDING] += len(rows)
            for d in dropped:
                self._n[RowState(d[3])] -= 1
            self._log_drops(dropped)
            return ids

    def _enforce_budget(self, total: int) -> list[tuple[int, int, int, int]]:
        """Delete rows in drop order until ``total`` fits; returns (id, class, size, state) of each drop."""
        dropped: list[tuple[int, int, int, int]] = []
        while total > self.max_bytes:
            batch = self._db.execute(
                "SELECT id, class, size, state FROM outbox WHERE class < 3 ORDER BY class, id LIMIT 256"
            ).fetchall()
            if not batch:
                break  # only high-priority alerts left: accept, report over budget
            victims = []
            for row in batch:
                if total <= self.max_bytes:
                    break
                victims.append(row)
                total -= row[2]
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(v[0],) for v in victims])
            for v in victims:
                self._inflight.pop(v[0], None)  # an in-flight row may be dropped; its PUBACK is a no-op
            dropped.extend(victims)
        return dropped

    def _log_drops(self, dropped: Sequence[tuple[int, int, int, int]]) -> None:
        if not dropped:
            if self._bytes > self.max_bytes:
                log.warning(
                    "outbox over budget with high-priority alerts only: %d > %d bytes",
                    self._bytes,
                    self.max_bytes,
                )
            return
        per_class: dict[str, int] = {}
        for _, cls, _, _ in dropped:
            name = DropClass(cls).name.lower()
            per_class[name] = per_class.get(name, 0) + 1
            self._dropped[name] += 1
        log.warning(
            "outbox over budget (%d bytes): dropped %s (row ids %d..%d)",
            self.max_bytes,
            ", ".join(f"{n} {c}" for c, n in per_class.items()),
            min(d[0] for d in dropped),
            max(d[0] for d in dropped),
        )

    # -- delivery bookkeeping ----------------------------------------------------------------------

    def pending(self, limit: int = 100) -> list[OutboxRow]:
        """Up to ``limit`` rows not yet in flight, oldest first (insertion order)."""
        with self._lock:
            self._check_open()
            # Rows are handed out in id order, so every row at or below the cursor is in flight,
            # acked or set aside; the cursor goes back to 0 on requeue.
            cur = self._db.execute(
                "SELECT id, topic, payload, kind, priority FROM outbox"
                " WHERE state = 0 AND id > ? ORDER BY id LIMIT ?",
                (self._cursor, limit),
            )
            return [OutboxRow(*r) for r in cur.fetchall()]

    def mark_inflight(self, row_id: int, mid: int) -> None:
        """Record (in memory) that ``row_id`` was handed to the MQTT client as packet ``mid``; it is
        no longer returned by ``pending`` until acked, rejected or requeued."""
        self.mark_inflight_many([(row_id, mid)])

    def mark_inflight_many(self, pairs: Sequence[tuple[int, int]]) -> None:
        with self._lock:
            for row_id, mid in pairs:
                self._inflight[row_id] = mid
                self._cursor = max(self._cursor, row_id)

    def inflight(self) -> dict[int, int]:
        """Row id -> packet id of the rows in flight."""
        with self._lock:
            return dict(self._inflight)

    def ack(self, row_id: int) -> None:
        """PUBACK with a success code: the broker owns the message now, delete the row."""
        self.ack_many([row_id])

    def ack_many(self, row_ids: Sequence[int]) -> None:
        if not row_ids:
            return
        with self._lock:
            self._check_open()
            self._set_sync("NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            freed = deleted = 0
            for i in range(0, len(row_ids), 500):
                chunk = list(row_ids[i : i + 500])
                marks = ",".join("?" * len(chunk))
                # Rows already gone were dropped by the budget while in flight; state 0 only.
                n, size = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
                    f" WHERE state = 0 AND id IN ({marks})",
                    chunk,
                ).fetchone()
                self._db.execute(f"DELETE FROM outbox WHERE state = 0 AND id IN ({marks})", chunk)
                freed += size
                deleted += n
            self._db.execute("COMMIT")
            for row_id in row_ids:
                self._inflight.pop(row_id, None)
            self._bytes -= freed
            self._n[RowState.PENDING] -= deleted

    def reject(self, row_id: int) -> None:
        """PUBACK with a failure code (e.g. not authorised): keep the row aside, never resend it."""
        with self._lock:
            self._check_open()
            self._inflight.pop(row_id, None)
            self._set_sync("NORMAL")
            if self._db.execute("UPDATE outbox SET state = 2 WHERE state = 0 AND id = ?", (row_id,)).rowcount:
                self._n[RowState.PENDING] -= 1
                self._n[RowState.REJECTED] += 1

    def requeue_inflight(self) -> int:
        """In-flight rows back to pending (after a restart, or when the client lost its session
        state); they are sent again in their original order. Returns how many."""
        with self._lock:
            n = len(self._inflight)
            self._inflight.clear()
            self._cursor = 0
            return n

    # -- inspection ------------------------------------------------------------------------------

    def counts(self) -> OutboxCounts:
        with self._lock:
            self._check_open()
            return OutboxCounts(
                pending=self._n[RowState.PENDING] - len(self._inflight),
                inflight=len(self._inflight),
                rejected=self._n[RowState.REJECTED],
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                dropped=dict(self._dropped),
            )

    def __len__(self) -> int:
        c = self.counts()
        return c.pending + c.inflight + c.rejected

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set_sync(self, level: str) -> None:
        if self._sync != level:  # a flag on the connection, applied at the next commit
            self._db.execute(f"PRAGMA synchronous={level}")
            self._sync = level

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("outbox is closed")
