"""The platform's durable state: SQLite in WAL mode under `FLASH_HOME`.

Only state changes are written (an endpoint created, a worker started or gone); the request
path never touches the database.
"""

from __future__ import annotations

import json
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
    ended_at REAL
);
"""


class Store:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
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

    _JOB_COLUMNS = (
        "id", "endpoint_id", "status", "input", "output", "error", "policy", "webhook",
        "worker_id", "attempts", "retried", "created_at", "started_at", "completed_at",
    )

    def save_job(self, row: dict[str, Any]) -> None:
        """Insert or replace a job's row: one commit per transition."""
        columns = ", ".join(self._JOB_COLUMNS)
        marks = ", ".join("?" for _ in self._JOB_COLUMNS)
        self._write(f"INSERT OR REPLACE INTO jobs ({columns}) VALUES ({marks})",
                    tuple(row[name] for name in self._JOB_COLUMNS))

    def delete_job(self, job_id: str) -> None:
        self._write("DELETE FROM jobs WHERE id = ?", (job_id,))

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(self._JOB_COLUMNS)} FROM jobs ORDER BY created_at"
            ).fetchall()
        return [dict(zip(self._JOB_COLUMNS, row, strict=True)) for row in rows]

    def save_worker(
        self, worker_id: str, endpoint_id: str, pid: int | None, state: str, log_path: str
    ) -> None:
        self._write(
            "INSERT INTO workers (id, endpoint_id, pid, state, log_path, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, "
            "state = excluded.state",
            (worker_id, endpoint_id, pid, state, log_path, time.time()),
        )

    def update_worker(self, worker_id: str, state: str, port: int | None = None) -> None:
        ended = time.time() if state in ("stopped", "dead") else None
        self._write(
            "UPDATE workers SET state = ?, port = COALESCE(?, port), ended_at = ? WHERE id = ?",
            (state, port, ended, worker_id),
        )

    def unfinished_workers(self) -> list[tuple[str, int]]:
        """(id, pid) of workers an earlier platform run never saw end."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, pid FROM workers WHERE ended_at IS NULL AND pid IS NOT NULL"
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def mark_all_workers_gone(self) -> None:
        self._write(
            "UPDATE workers SET state = 'dead', ended_at = ? WHERE ended_at IS NULL",
            (time.time(),),
        )
