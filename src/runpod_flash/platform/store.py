"""The platform's durable state: SQLite in WAL mode under `FLASH_HOME`, readable by its owner
only.

Endpoint, app and worker changes are written at once (they are rare). Jobs are the hot path:
a submission is committed before it is acknowledged, and every later transition is written
behind, in batches, by a writer thread, so the event loop never waits for a commit of a
job's progress; reads see those pending writes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    policy TEXT,
    webhook TEXT,
    worker_id TEXT,
    attempts INTEGER NOT NULL,
    retried INTEGER NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL
);
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS environments (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (app, name)
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    pid INTEGER,
    port INTEGER,
    state TEXT NOT NULL,
    log_path TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    proc_start INTEGER
);
CREATE TABLE IF NOT EXISTS versions (
    endpoint_id TEXT NOT NULL,
    version TEXT NOT NULL,
    spec TEXT NOT NULL,
    artifact TEXT,
    deployed_at REAL NOT NULL,
    how TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, version)
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (created_at) WHERE completed_at IS NULL;
"""
# A version goes once `keep` newer ones of its endpoint are kept.
_TRIM_VERSIONS = (
    "DELETE FROM versions WHERE (SELECT count(*) FROM versions AS newer "
    "WHERE newer.endpoint_id = versions.endpoint_id "
    "AND (newer.deployed_at, newer.rowid) > (versions.deployed_at, versions.rowid)) >= ?"
)
logger = logging.getLogger("runpod_flash.platform")
_FINAL = "('COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT')"
_MIGRATIONS = (("workers", "proc_start", "INTEGER"),)  # columns later versions added
PRUNE_BATCH = 5000  # finished jobs deleted per statement: the writer's lock is never held long
WRITE_BATCH = 500  # job transitions per transaction


class Store:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()  # the connection
        _owner_only(path, create=True)
        for name in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            _owner_only(name, create=False)  # SQLite gives them the database's mode
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for table, column, kind in _MIGRATIONS:
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        # Job transitions not yet written: id -> the job's row (all but its input), newest
        # last; `_writing` is the batch being committed. Reads look here first.
        self._changes = threading.Condition()
        self._pending: dict[str, dict[str, Any]] = {}
        self._writing: dict[str, dict[str, Any]] = {}
        self._prune: tuple[float, int] | None = None
        self._closing = False
        self._writer = threading.Thread(target=self._write_behind, name="flash-store-writer",
                                         daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Write what is pending, then close."""
        with self._changes:
            self._closing = True
            self._changes.notify()
        self._writer.join()
        self._db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, params)

    def save_endpoint(self, endpoint_id: str, name: str, kind: str, spec: dict[str, Any]) -> None:
        now = time.time()
        self._write(
            "INSERT INTO endpoints (id, name, kind, spec, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "spec = excluded.spec, updated_at = excluded.updated_at",
            (endpoint_id, name, kind, json.dumps(spec), now, now),
        )

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._write("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))

    def endpoints(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, kind, spec, created_at, updated_at FROM endpoints"
            ).fetchall()
        return [
            {"id": r[0], "name": r[1], "kind": r[2], "spec": json.loads(r[3]),
             "created_at": r[4], "updated_at": r[5]}
            for r in rows
        ]

    # -- versions: what each deployed endpoint ran (platform.versions) ----------------------

    _VERSION_COLUMNS = ("endpoint_id", "version", "spec", "artifact", "deployed_at", "how")

    def record_version(self, row: dict[str, Any], keep: int) -> None:
        """Save a version an endpoint now runs (again: it moves to the front), then drop all
        but each endpoint's newest `keep`; one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    f"INSERT OR REPLACE INTO versions ({', '.join(self._VERSION_COLUMNS)}) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    tuple(json.dumps(row[name]) if name == "spec" else row[name]
                          for name in self._VERSION_COLUMNS),
                )
                self._db.execute(_TRIM_VERSIONS, (keep,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def versions(self, endpoint_id: str | None = None) -> list[dict[str, Any]]:
        """The kept versions of one endpoint (of all, without `endpoint_id`), newest first."""
        where, params = ("WHERE endpoint_id = ? ", (endpoint_id,)) if endpoint_id else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(self._VERSION_COLUMNS)} FROM versions {where}"
                "ORDER BY deployed_at DESC, rowid DESC", params
            ).fetchall()
        return [{**dict(zip(self._VERSION_COLUMNS, row, strict=True)),
                 "spec": json.loads(row[2])} for row in rows]

    def trim_versions(self, keep: int) -> None:
        """Drop all but each endpoint's newest `keep` versions."""
        self._write(_TRIM_VERSIONS, (keep,))

    def forget_versions(self, endpoint_id: str) -> None:
        self._write("DELETE FROM versions WHERE endpoint_id = ?", (endpoint_id,))

    def save_app(self, name: str) -> None:
        self._write("INSERT OR IGNORE INTO apps (name, created_at) VALUES (?, ?)",
                    (name, time.time()))

    def delete_app(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM environments WHERE app = ?", (name,))
            self._db.execute("DELETE FROM apps WHERE name = ?", (name,))

    def save_environment(self, app: str, name: str) -> None:
        self._write("INSERT OR IGNORE INTO environments (app, name, created_at) "
                    "VALUES (?, ?, ?)", (app, name, time.time()))

    def delete_environment(self, app: str, name: str) -> None:
        self._write("DELETE FROM environments WHERE app = ? AND name = ?", (app, name))

    def apps(self) -> dict[str, dict[str, Any]]:
        """{app: {"created_at", "environments": {name: created_at}}}."""
        with self._lock:
            apps = self._db.execute("SELECT name, created_at FROM apps").fetchall()
            envs = self._db.execute("SELECT app, name, created_at FROM environments").fetchall()
        found: dict[str, dict[str, Any]] = {
            name: {"created_at": created, "environments": {}} for name, created in apps
        }
        for app, name, created in envs:
            found.setdefault(app, {"created_at": created, "environments": {}})
            found[app]["environments"][name] = created
        return found

    # -- jobs -------------------------------------------------------------------------------

    _JOB_COLUMNS = (
        "id", "endpoint_id", "status", "output", "error", "policy", "webhook",
        "worker_id", "attempts", "retried", "created_at", "started_at", "completed_at",
    )
    _ASSIGNMENTS = ", ".join(f"{name} = ?" for name in _JOB_COLUMNS[1:])

    def commit_job(self, row: dict[str, Any], input_json: str | None = None) -> bool:
        """A new job with its input (JSON), or a job given a new run (a retry), committed now:
        it is acknowledged only once durable. False when the job is no longer stored."""
        with self._lock:
            with self._changes:
                self._pending.pop(row["id"], None)  # older than this row
            if input_json is not None:
                columns = ("input", *self._JOB_COLUMNS)
                self._db.execute(
                    f"INSERT OR REPLACE INTO jobs ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})",
                    (input_json, *_encoded(row)),
                )
                return True
            return self._db.execute(
                f"UPDATE jobs SET {self._ASSIGNMENTS} WHERE id = ?",
                (*_encoded(row)[1:], row["id"]),
            ).rowcount == 1

    def update_job(self, row: dict[str, Any]) -> None:
        """A transition (taken, requeued, finished): written behind, off the caller's thread.
        The row's output is any JSON value; it is encoded on the writer thread."""
        with self._changes:
            self._pending[row["id"]] = row
            self._changes.notify()

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job's row (all but its input), its pending transition included."""
        with self._changes:
            row = self._pending.get(job_id) or self._writing.get(job_id)
        if row is not None:
            return row
        with self._lock:
            found = self._db.execute(
                f"SELECT {', '.join(self._JOB_COLUMNS)} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if found is None else _decoded(dict(zip(self._JOB_COLUMNS, found,
                                                              strict=True)))

    def job_input(self, job_id: str) -> Any:
        """A job's input, read when a worker takes the job (large inputs stay here)."""
        with self._lock:
            found = self._db.execute("SELECT input FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if found is None:
            raise KeyError(job_id)
        return json.loads(found[0])

    def unfinished_jobs(self, inline_bytes: int) -> list[dict[str, Any]]:
        """Jobs an earlier run left queued or running, oldest first; `input` is their decoded
        input when it is at most `inline_bytes` long, else absent (read at take time)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT CASE WHEN length(input) <= ? THEN input END, "
                f"{', '.join(self._JOB_COLUMNS)} FROM jobs WHERE completed_at IS NULL "
                "ORDER BY created_at", (inline_bytes,)
            ).fetchall()
        found = []
        for small_input, *values in rows:
            row = _decoded(dict(zip(self._JOB_COLUMNS, values, strict=True)))
            if small_input is not None:
                row["input"] = json.loads(small_input)
            found.append(row)
        return found

    def prune_jobs(self, finished_before: float, keep: int) -> None:
        """Delete finished jobs older than `finished_before` and all but the newest `keep`
        (on the writer thread)."""
        with self._changes:
            self._prune = (finished_before, keep)
            self._changes.notify()

    def finished_jobs(self) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT count(*) FROM jobs WHERE completed_at IS NOT NULL").fetchone()[0]

    def _write_behind(self) -> None:
        while True:
            with self._changes:
                while not (self._pending or self._prune or self._closing):
                    self._changes.wait()
                if not (self._pending or self._prune):
                    return  # closing, and everything is written
                prune, self._prune = self._prune, None
            try:
                self._commit_transitions()
                if prune is not None:
                    self._delete_finished(*prune)
            except sqlite3.Error as exc:  # the disk is full or gone: say so, keep going
                logger.error("could not write job transitions to the store: %s", exc)

    def _commit_transitions(self) -> None:
        """One transaction for what is pending. The batch is taken under the connection's
        lock, so a job inserted meanwhile (a retry) is never overwritten by an older row."""
        with self._lock:
            with self._changes:
                ids = list(self._pending)[:WRITE_BATCH]
                self._writing = {job_id: self._pending.pop(job_id) for job_id in ids}
            try:
                if not ids:
                    return
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(
                        f"UPDATE jobs SET {self._ASSIGNMENTS} WHERE id = ?",
                        [(*_encoded(row)[1:], row["id"]) for row in self._writing.values()],
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                with self._changes:
                    self._writing = {}

    def _delete_finished(self, finished_before: float, keep: int) -> None:
        with self._lock:
            newest_dropped = self._db.execute(
                "SELECT completed_at FROM jobs WHERE completed_at IS NOT NULL "
                "ORDER BY completed_at DESC LIMIT 1 OFFSET ?", (keep,)
            ).fetchone()
        cutoff = max(finished_before, newest_dropped[0] if newest_dropped else 0.0)
        while True:
            with self._lock:
                deleted = self._db.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE completed_at "
                    f"IS NOT NULL AND completed_at <= ? AND status IN {_FINAL} LIMIT ?)",
                    (cutoff, PRUNE_BATCH),
                ).rowcount
            if deleted < PRUNE_BATCH:
                return

    # -- workers ----------------------------------------------------------------------------

    def save_worker(
        self, worker_id: str, endpoint_id: str, pid: int | None, state: str, log_path: str,
        proc_start: int | None = None,
    ) -> None:
        """`proc_start` is the process's start time (clock ticks since boot): with the pid it
        names that process only, never a later one given the same pid."""
        self._write(
            "INSERT INTO workers (id, endpoint_id, pid, state, log_path, started_at, "
            "proc_start) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "pid = excluded.pid, state = excluded.state, proc_start = excluded.proc_start",
            (worker_id, endpoint_id, pid, state, log_path, time.time(), proc_start),
        )

    def update_worker(self, worker_id: str, state: str, port: int | None = None) -> None:
        ended = time.time() if state in ("stopped", "dead") else None
        self._write(
            "UPDATE workers SET state = ?, port = COALESCE(?, port), ended_at = ? WHERE id = ?",
            (state, port, ended, worker_id),
        )

    def unfinished_workers(self) -> list[tuple[int, int | None]]:
        """(pid, process start) of workers an earlier platform run never saw end."""
        with self._lock:
            rows = self._db.execute(
                "SELECT pid, proc_start FROM workers WHERE ended_at IS NULL AND pid IS NOT NULL"
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def mark_all_workers_gone(self) -> None:
        self._write(
            "UPDATE workers SET state = 'dead', ended_at = ? WHERE ended_at IS NULL",
            (time.time(),),
        )


def _owner_only(path: Path, create: bool) -> None:
    """Make `path` (created if asked) readable by its owner only: an earlier version, or
    a umask, may have left it readable by everyone, and jobs' inputs hold secrets."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return  # not made yet
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _encoded(row: dict[str, Any]) -> tuple[Any, ...]:
    """A job row's values in `Store._JOB_COLUMNS` order, JSON columns encoded."""
    return tuple(
        json.dumps(row[name]) if name in ("output", "policy") else row[name]
        for name in Store._JOB_COLUMNS
    )


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    row["output"] = json.loads(row["output"]) if row["output"] else None
    row["policy"] = json.loads(row["policy"]) if row["policy"] else {}
    return row
