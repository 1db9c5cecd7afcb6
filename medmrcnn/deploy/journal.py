"""The node's journal: one SQLite file recording every series (received -> queued -> segmenting -> delivering ->
delivered / done / failed, with reasons), every result object and its delivery attempts, and notable events
(refused instances, purges). Each change is one transaction (synchronous=FULL), so after a crash the journal holds
exactly what was finished before it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECEIVING, QUEUED, SEGMENTING, DELIVERING, DELIVERED, DONE, FAILED = (
    "receiving", "queued", "segmenting", "delivering", "delivered", "done", "failed")
STATES = (RECEIVING, QUEUED, SEGMENTING, DELIVERING, DELIVERED, DONE, FAILED)
FINISHED = (DELIVERED, DONE, FAILED)
PENDING, SENDING = "pending", "sending"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT NOT NULL, model TEXT NOT NULL, key TEXT NOT NULL, study_uid TEXT NOT NULL,
    state TEXT NOT NULL, instances INTEGER NOT NULL DEFAULT 0, first_received REAL NOT NULL,
    last_received REAL NOT NULL, updated REAL NOT NULL, reason TEXT NOT NULL DEFAULT '',
    result_dir TEXT NOT NULL DEFAULT '', purged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (series_uid, model));
CREATE TABLE IF NOT EXISTS deliveries (
    series_uid TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL, file TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt REAL, next_attempt REAL NOT NULL, last_error TEXT NOT NULL DEFAULT '', delivered_at REAL,
    PRIMARY KEY (series_uid, model, file));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
    message TEXT NOT NULL);
"""


@dataclass
class SeriesRow:
    """One series of the journal (for one model)."""

    series_uid: str
    model: str
    key: str
    study_uid: str
    state: str
    instances: int
    first_received: float
    last_received: float
    updated: float
    reason: str
    result_dir: str
    purged: int


@dataclass
class DeliveryRow:
    """One result object (SEG or SR) to send, and how its delivery goes."""

    series_uid: str
    model: str
    kind: str
    file: str
    sop_instance_uid: str
    state: str
    attempts: int
    first_attempt: float | None
    next_attempt: float
    last_error: str
    delivered_at: float | None


class Journal:
    """Thread-safe access to the journal file (one connection, one lock; every method is one transaction)."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout=10000")
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, cls: type, sql: str, args: tuple = ()) -> list[Any]:
        with self._lock:
            return [cls(*r) for r in self._db.execute(sql, args).fetchall()]

    # --- series -------------------------------------------------------------------------------------------------
    def series(self, series_uid: str, model: str) -> SeriesRow | None:
        """The row of a series for a model, or None."""
        rows = self._rows(SeriesRow, "SELECT * FROM series WHERE series_uid=? AND model=?", (series_uid, model))
        return rows[0] if rows else None

    def all_series(self, *states: str) -> list[SeriesRow]:
        """Series in any of `states` (all without), oldest first."""
        where = f" WHERE state IN ({','.join('?' * len(states))})" if states else ""
        return self._rows(SeriesRow, f"SELECT * FROM series{where} ORDER BY first_received", tuple(states))

    def instance_received(self, series_uid: str, model: str, key: str, study_uid: str, new: bool) -> str:
        """Record one stored instance (`new`: not a repeat of one already queued); returns the series' state.

        A series still receiving or queued (quiet time not over, not started) goes back to receiving.
        """
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state FROM series WHERE series_uid=? AND model=?", (series_uid, model)).fetchone()
            if row is None:
                db.execute("INSERT INTO series (series_uid, model, key, study_uid, state, instances, first_received,"
                           " last_received, updated) VALUES (?,?,?,?,?,?,?,?,?)",
                           (series_uid, model, key, study_uid, RECEIVING, int(new), now, now, now))
                return RECEIVING
            if row[0] in (RECEIVING, QUEUED):
                db.execute("UPDATE series SET state=?, instances=instances+?, last_received=?, updated=? "
                           "WHERE series_uid=? AND model=?", (RECEIVING, int(new), now, now, series_uid, model))
                return RECEIVING
            return str(row[0])

    def set_state(self, series_uid: str, model: str, state: str, reason: str = "", result_dir: str | None = None,
                  expected: tuple[str, ...] = ()) -> bool:
        """Move a series to `state` (only from one of `expected` when given); False when it was not there."""
        args: list[Any] = [state, reason, time.time()]
        sql = "UPDATE series SET state=?, reason=?, updated=?"
        if result_dir is not None:
            sql += ", result_dir=?"
            args.append(result_dir)
        sql += " WHERE series_uid=? AND model=?"
        args += [series_uid, model]
        if expected:
            sql += f" AND state IN ({','.join('?' * len(expected))})"
            args += list(expected)
        with self._tx() as db:
            return db.execute(sql, args).rowcount == 1

    def promote_quiet(self, quiet_s: float) -> list[SeriesRow]:
        """Series receiving nothing new for `quiet_s` seconds become queued; returns them."""
        cutoff = time.time() - quiet_s
        with self._tx() as db:
            uids = db.execute("SELECT series_uid, model FROM series WHERE state=? AND last_received<=?",
                              (RECEIVING, cutoff)).fetchall()
            for uid, model in uids:
                db.execute("UPDATE series SET state=?, updated=? WHERE series_uid=? AND model=?",
                           (QUEUED, time.time(), uid, model))
        return [r for uid, model in uids if (r := self.series(uid, model)) is not None]

    def recover_after_restart(self) -> None:
        """A series that was being segmented is queued again; an object whose sending was cut is pending again."""
        with self._tx() as db:
            db.execute("UPDATE series SET state=?, updated=? WHERE state=?", (QUEUED, time.time(), SEGMENTING))
            db.execute("UPDATE deliveries SET state=? WHERE state=?", (PENDING, SENDING))

    def mark_purged(self, series_uid: str, model: str) -> None:
        """Its files are deleted (the journal row stays)."""
        with self._tx() as db:
            db.execute("UPDATE series SET purged=1 WHERE series_uid=? AND model=?", (series_uid, model))

    # --- deliveries ---------------------------------------------------------------------------------------------
    def start_delivery(self, series_uid: str, model: str, result_dir: str,
                       objects: list[tuple[str, str, str]]) -> None:
        """Segmented: record the result objects (kind, file, SOP Instance UID) to send and move to delivering."""
        now = time.time()
        with self._tx() as db:
            for kind, file, sop_uid in objects:
                db.execute("INSERT OR IGNORE INTO deliveries (series_uid, model, kind, file, sop_instance_uid, state,"
                           " next_attempt) VALUES (?,?,?,?,?,?,?)", (series_uid, model, kind, file, sop_uid,
                                                                     PENDING, now))
            db.execute("UPDATE series SET state=?, reason='', result_dir=?, updated=? WHERE series_uid=? AND model=?",
                       (DELIVERING, result_dir, now, series_uid, model))

    def deliveries(self, series_uid: str, model: str) -> list[DeliveryRow]:
        """The result objects of a series."""
        return self._rows(DeliveryRow, "SELECT * FROM deliveries WHERE series_uid=? AND model=? ORDER BY kind",
                          (series_uid, model))

    def due_series(self) -> list[SeriesRow]:
        """Delivering series with an object whose next attempt is due."""
        return self._rows(SeriesRow, "SELECT s.* FROM series s WHERE s.state=? AND EXISTS (SELECT 1 FROM deliveries d"
                          " WHERE d.series_uid=s.series_uid AND d.model=s.model AND d.state=? AND d.next_attempt<=?)"
                          " ORDER BY s.updated", (DELIVERING, PENDING, time.time()))

    def delivery_sending(self, row: DeliveryRow) -> None:
        """Written before the object goes out: a crash now means 'maybe sent' (it is sent again, same UIDs)."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state=?, attempts=attempts+1, first_attempt=COALESCE(first_attempt, ?)"
                       " WHERE series_uid=? AND model=? AND file=?", (SENDING, now, row.series_uid, row.model,
                                                                     row.file))

    def delivery_done(self, row: DeliveryRow) -> None:
        """The destination confirmed the object."""
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state=?, last_error='', delivered_at=? WHERE series_uid=? AND model=? "
                       "AND file=?", (DELIVERED, time.time(), row.series_uid, row.model, row.file))

    def delivery_failed(self, row: DeliveryRow, error: str, retry_at: float | None) -> None:
        """The attempt failed: retry at `retry_at`, or give up (None)."""
        with self._tx() as db:
            db.execute("UPDATE deliveries SET state=?, last_error=?, next_attempt=? WHERE series_uid=? AND model=? "
                       "AND file=?", (PENDING if retry_at is not None else FAILED, error,
                                      retry_at if retry_at is not None else time.time(), row.series_uid, row.model,
                                      row.file))

    # --- events -------------------------------------------------------------------------------------------------
    def event(self, key: str, kind: str, message: str) -> None:
        """Record an event (refused instance, failure, purge); `key` is the series key, never a patient detail."""
        with self._tx() as db:
            db.execute("INSERT INTO events (time, key, kind, message) VALUES (?,?,?,?)",
                       (time.time(), key, kind, message))

    def events(self, limit: int = 50) -> list[tuple[float, str, str, str]]:
        """The latest events, newest first: (time, series key, kind, message)."""
        with self._lock:
            return [tuple(r) for r in self._db.execute(
                "SELECT time, key, kind, message FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()]
