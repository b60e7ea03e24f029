"""Keeping worker logs bounded: rotation by size, a cap per endpoint, orphan folders removed.

Each worker writes to `$FLASH_HOME/logs/<endpoint id>/<worker id>.log` through a descriptor
opened with O_APPEND and held for its life (a forked worker opens the path itself). A log
past the size limit is rotated by copy-then-truncate: `x.log` is copied to `x.log.1` (older
copies shift to `.2`, ...; the oldest past the limit is dropped), then truncated in place.
With O_APPEND the worker's next write lands at the new end, and readers (`flash logs`, the
dashboard's tail) keep reading `x.log`; a reader's offset past the new size starts again
at 0. Lines written between the copy and the truncation are lost (the same microseconds'
window as logrotate's `copytruncate`).

A sweep only stats files, except to copy the ones it rotates. Settings, read from the
platform's environment when it starts:

- `FLASH_LOG_MAX_MB` (10): size in MiB (fractions allowed) past which a worker's log is
  rotated. Checked once a sweep, so a log may pass it by what one interval writes.
- `FLASH_LOG_BACKUPS` (2): rotated copies kept per log; 0 truncates without a copy.
- `FLASH_LOG_KEEP_FILES` (20): worker logs kept per endpoint. Past it, finished workers'
  logs (and their copies) are removed, oldest first; a running worker's log never is.
- `FLASH_LOG_ORPHAN_DAYS` (7): the folder of an endpoint that no longer exists is removed
  once nothing in it has changed for this long.
- `FLASH_LOG_SWEEP_S` (30): seconds between sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runpod_flash.platform.periodic import Periodic

if TYPE_CHECKING:
    from runpod_flash.platform.supervisor import Supervisor

logger = logging.getLogger("runpod_flash.platform")

ENV_MAX_MB = "FLASH_LOG_MAX_MB"
ENV_BACKUPS = "FLASH_LOG_BACKUPS"
ENV_KEEP_FILES = "FLASH_LOG_KEEP_FILES"
ENV_ORPHAN_DAYS = "FLASH_LOG_ORPHAN_DAYS"
ENV_SWEEP_S = "FLASH_LOG_SWEEP_S"  # shorter in tests, to see a sweep sooner

MIB = 1024 * 1024
DAY_S = 86_400.0
LOG_SUFFIX = ".log"
# A file written this close to the moment the running logs were listed may belong to a
# worker started since (file times are coarser than the clock): it is never removed.
FRESH_S = 2.0
COPY_CHUNK = MIB


def _setting(environ: Mapping[str, str], name: str, default: float, *, whole: bool,
             positive: bool) -> float:
    """A number from the environment, or a ValueError naming the variable."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value: float | None = int(raw) if whole else float(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0 or (positive and value == 0):
        wanted = ("a positive " if positive else "a non-negative ") + (
            "whole number" if whole else "number")
        raise ValueError(f"{name}={raw!r} is not {wanted}; set it to e.g. {default:g}, "
                         "or unset it")
    return value


def sweep_interval_s(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds between sweeps (FLASH_LOG_SWEEP_S, 30 when unset)."""
    return _setting(environ, ENV_SWEEP_S, 30.0, whole=False, positive=True)


@dataclass
class SweepReport:
    """What one sweep changed."""

    rotated: list[Path] = field(default_factory=list)
    pruned: list[Path] = field(default_factory=list)  # worker logs removed, copies with them
    removed_folders: list[Path] = field(default_factory=list)  # of endpoints that are gone


@dataclass(frozen=True)
class LogRetention:
    """How much worker log the platform keeps under `root` (FLASH_HOME/logs)."""

    root: Path
    max_bytes: int = 10 * MIB
    backups: int = 2
    keep_files: int = 20
    orphan_s: float = 7 * DAY_S

    @classmethod
    def from_env(cls, root: Path, environ: Mapping[str, str] = os.environ) -> LogRetention:
        """The policy the settings describe; a ValueError names a setting that is wrong."""
        max_mb = _setting(environ, ENV_MAX_MB, 10, whole=False, positive=True)
        return cls(
            root,
            max_bytes=max(1, int(max_mb * MIB)),
            backups=int(_setting(environ, ENV_BACKUPS, 2, whole=True, positive=False)),
            keep_files=int(_setting(environ, ENV_KEEP_FILES, 20, whole=True, positive=False)),
            orphan_s=_setting(environ, ENV_ORPHAN_DAYS, 7, whole=False, positive=False) * DAY_S,
        )

    def sweep(self, running: Collection[Path], endpoints: Collection[str],
              as_of: float | None = None) -> SweepReport:
        """One pass over every endpoint's folder.

        `running`: the logs of workers that have not finished; `endpoints`: the ids of the
        endpoints that exist; both as they were at `as_of` (wall clock, now when omitted).
        A log or folder written since then is never removed: it may be a newer worker's."""
        now = time.time()
        fresh_after = (now if as_of is None else as_of) - FRESH_S
        running_names: dict[str, set[str]] = {}
        for path in running:
            running_names.setdefault(path.parent.name, set()).add(path.name)
        report = SweepReport()
        try:
            folders = [Path(entry.path) for entry in os.scandir(self.root)
                       if entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return report
        for folder in folders:
            keep = running_names.get(folder.name, set())
            try:
                if folder.name in endpoints:
                    self._tidy(folder, keep, fresh_after, report)
                elif not keep and self._abandoned(folder, min(fresh_after, now - self.orphan_s)):
                    shutil.rmtree(folder)
                    report.removed_folders.append(folder)
            except FileNotFoundError:
                continue  # removed meanwhile; the next sweep sees what is left
            except OSError as exc:
                logger.warning("could not tidy worker logs in %s: %s", folder, exc)
        return report

    def _tidy(self, folder: Path, running: set[str], fresh_after: float,
              report: SweepReport) -> None:
        """Prune finished workers' logs past the cap, then rotate the large ones."""
        logs: dict[str, os.stat_result] = {}
        copies: dict[str, list[int]] = {}  # log name -> numbers of its rotated copies
        for entry in os.scandir(folder):
            if entry.name.endswith(LOG_SUFFIX):
                if entry.is_file(follow_symlinks=False):
                    logs[entry.name] = entry.stat(follow_symlinks=False)
                continue
            base, _, number = entry.name.rpartition(".")
            if base.endswith(LOG_SUFFIX) and number.isdigit():
                copies.setdefault(base, []).append(int(number))
        finished = sorted((stat.st_mtime, name) for name, stat in logs.items()
                          if name not in running and stat.st_mtime < fresh_after)
        for _, name in finished[:max(0, len(logs) - self.keep_files)]:
            (folder / name).unlink(missing_ok=True)
            del logs[name]
            report.pruned.append(folder / name)
        for base, numbers in copies.items():  # of a log removed, or past the copies kept
            for number in numbers:
                if base not in logs or number > self.backups:
                    (folder / f"{base}.{number}").unlink(missing_ok=True)
        for name, stat in logs.items():
            if stat.st_size > self.max_bytes:
                self._rotate(folder / name, stat)
                report.rotated.append(folder / name)

    def _rotate(self, path: Path, stat: os.stat_result) -> None:
        """Copy-then-truncate: the writer's O_APPEND descriptor stays on `path`."""
        for number in range(self.backups, 1, -1):  # .1 -> .2, ...; the oldest is replaced
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}.{number - 1}", f"{path}.{number}")
        if self.backups:
            copy = os.open(f"{path}.1", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(path, "rb") as source, os.fdopen(copy, "wb") as target:
                shutil.copyfileobj(source, target, COPY_CHUNK)
        os.truncate(path, 0)
        # Rotating must not make a finished log look newest (pruning goes oldest first).
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    @staticmethod
    def _abandoned(folder: Path, before: float) -> bool:
        """Whether nothing in the folder (nor the folder) changed since `before`."""
        newest = folder.stat().st_mtime
        for entry in os.scandir(folder):
            newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        return newest < before


class LogSweeper:
    """Sweeps the worker logs every interval; started and stopped with the platform."""

    def __init__(self, supervisor: Supervisor, retention: LogRetention,
                 interval_s: float | None = None) -> None:
        self.supervisor = supervisor
        self.retention = retention
        self._periodic = Periodic(self.sweep, sweep_interval_s() if interval_s is None
                                  else interval_s, "worker log sweep")

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    async def sweep(self) -> SweepReport:
        """One sweep, off the event loop (a rotation copies a file); what is running is
        read on the loop, where the supervisor changes it."""
        as_of = time.time()
        endpoints = self.supervisor.endpoints
        running = {w.log_path for e in endpoints.values() for w in e.workers.values()}
        return await asyncio.to_thread(self.retention.sweep, running, set(endpoints), as_of)
