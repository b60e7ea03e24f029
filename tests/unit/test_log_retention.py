"""Worker log retention on real files: rotation, the cap per endpoint, orphan folders."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from runpod_flash.platform.dashboard.logs import read_new_lines
from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.log_retention import (
    DAY_S,
    MIB,
    LogRetention,
    LogSweeper,
    sweep_interval_s,
)

LIMIT = 1000  # bytes


def _log(folder: Path, name: str, data: bytes = b"line\n", age_s: float = 60) -> Path:
    """A log file last written `age_s` ago."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_a_log_past_the_limit_is_rotated_and_n_copies_are_kept(tmp_path: Path) -> None:
    retention = LogRetention(tmp_path, max_bytes=LIMIT, backups=2)
    path = tmp_path / "ep" / "w-1.log"
    for turn in b"ABC":
        _log(path.parent, path.name, bytes([turn]) * (LIMIT + 1))
        report = retention.sweep({path}, {"ep"})
        assert report.rotated == [path]
    assert path.read_bytes() == b""
    assert (path.parent / "w-1.log.1").read_bytes() == b"C" * (LIMIT + 1)
    assert (path.parent / "w-1.log.2").read_bytes() == b"B" * (LIMIT + 1)
    assert sorted(p.name for p in path.parent.iterdir()) == ["w-1.log", "w-1.log.1", "w-1.log.2"]
    assert stat.S_IMODE((path.parent / "w-1.log.1").stat().st_mode) == 0o600
    assert retention.sweep({path}, {"ep"}).rotated == []  # under the limit: left alone


def test_no_copies_kept_means_the_log_is_emptied_in_place(tmp_path: Path) -> None:
    path = _log(tmp_path / "ep", "w-1.log", b"x" * (LIMIT + 1))
    LogRetention(tmp_path, max_bytes=LIMIT, backups=0).sweep({path}, {"ep"})
    assert [p.name for p in path.parent.iterdir()] == ["w-1.log"]
    assert path.stat().st_size == 0


def test_a_writer_holding_an_append_descriptor_keeps_writing_into_the_live_file(
        tmp_path: Path) -> None:
    path = tmp_path / "ep" / "w-1.log"
    path.parent.mkdir()
    writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(writer, b"before rotation\n" * 100)
        assert LogRetention(tmp_path, max_bytes=LIMIT).sweep({path}, {"ep"}).rotated == [path]
        os.write(writer, b"after rotation\n")
    finally:
        os.close(writer)
    assert path.read_bytes() == b"after rotation\n"  # at the new end: no hole of zeros
    assert (path.parent / "w-1.log.1").read_bytes() == b"before rotation\n" * 100


def test_a_reader_whose_cursor_is_past_a_rotated_log_starts_again_at_its_top(
        tmp_path: Path) -> None:
    path = _log(tmp_path / "ep", "w-1.log", b"old line\n" * 200)
    _, cursor = read_new_lines(path.parent, {}, None)
    assert cursor == {"w-1.log": 1800}
    LogRetention(tmp_path, max_bytes=LIMIT).sweep({path}, {"ep"})
    with open(path, "ab") as handle:
        handle.write(b"new line\n")
    lines, cursor = read_new_lines(path.parent, cursor, None)
    assert (lines, cursor) == (["[w-1] new line"], {"w-1.log": 9})


def test_finished_logs_past_the_cap_go_oldest_first_and_running_ones_stay(
        tmp_path: Path) -> None:
    folder = tmp_path / "ep"
    running = {_log(folder, f"run-{n}.log", age_s=1000 + n) for n in range(3)}  # the oldest
    for n in range(4):
        _log(folder, f"done-{n}.log", age_s=100 - n)  # done-0 is the oldest finished log
    _log(folder, "done-0.log.1")
    _log(folder, "done-3.log.1")
    report = LogRetention(tmp_path, keep_files=5).sweep(running, {"ep"})
    assert sorted(p.name for p in report.pruned) == ["done-0.log", "done-1.log"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "done-2.log", "done-3.log", "done-3.log.1", "run-0.log", "run-1.log", "run-2.log"]
    report = LogRetention(tmp_path, keep_files=0).sweep(running, {"ep"})
    assert sorted(p.name for p in folder.iterdir()) == ["run-0.log", "run-1.log", "run-2.log"]


def test_a_log_written_since_the_running_ones_were_listed_is_kept(tmp_path: Path) -> None:
    """A worker started after the list was taken is not in it, but its log is new."""
    folder = tmp_path / "ep"
    old = _log(folder, "old.log", age_s=100)
    listed_at = time.time() - 30
    _log(folder, "new.log", age_s=1)
    report = LogRetention(tmp_path, keep_files=0).sweep(set(), {"ep"}, as_of=listed_at)
    assert report.pruned == [old]
    assert [p.name for p in folder.iterdir()] == ["new.log"]


def test_rotating_a_finished_log_keeps_its_age(tmp_path: Path) -> None:
    folder = tmp_path / "ep"
    big = _log(folder, "big.log", b"x" * (LIMIT + 1), age_s=500)
    _log(folder, "small.log", age_s=100)
    retention = LogRetention(tmp_path, max_bytes=LIMIT, keep_files=1)
    retention.sweep(set(), {"ep"})
    assert not big.exists()  # the oldest went first, though it was too big as well
    _log(folder, "big.log", b"x" * (LIMIT + 1), age_s=500)
    LogRetention(tmp_path, max_bytes=LIMIT).sweep(set(), {"ep"})
    assert time.time() - big.stat().st_mtime > 400
    retention.sweep(set(), {"ep"})
    assert sorted(p.name for p in folder.iterdir()) == ["small.log"]


def test_copies_of_a_removed_log_or_past_the_number_kept_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "ep"
    log = _log(folder, "w-1.log")
    for name in ("w-1.log.1", "w-1.log.2", "w-1.log.3", "gone.log.1", "notes.txt"):
        _log(folder, name)
    LogRetention(tmp_path, backups=1).sweep({log}, {"ep"})
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "w-1.log", "w-1.log.1"]


def test_folders_of_endpoints_that_are_gone_are_removed_after_the_grace(
        tmp_path: Path) -> None:
    long_ago = 8 * DAY_S
    abandoned = tmp_path / "gone"
    _log(abandoned, "w-1.log", age_s=long_ago)
    os.utime(abandoned, (time.time() - long_ago,) * 2)
    recent = tmp_path / "gone-recently"
    _log(recent, "w-2.log", age_s=DAY_S)
    os.utime(recent, (time.time() - long_ago,) * 2)  # its newest file counts, not the folder
    still_running = tmp_path / "undeployed"
    busy = _log(still_running, "w-3.log", age_s=long_ago)
    os.utime(still_running, (time.time() - long_ago,) * 2)
    existing = tmp_path / "kept"
    _log(existing, "w-4.log", age_s=long_ago)
    _log(tmp_path, "zygote.log", age_s=long_ago)  # not an endpoint's folder

    report = LogRetention(tmp_path).sweep({busy}, {"kept"})
    assert report.removed_folders == [abandoned]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gone-recently", "kept", "undeployed", "zygote.log"]
    assert LogRetention(tmp_path, orphan_s=0).sweep(set(), {"kept"}).removed_folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "zygote.log"]


def test_a_missing_logs_folder_is_nothing_to_do(tmp_path: Path) -> None:
    report = LogRetention(tmp_path / "absent").sweep(set(), set())
    assert (report.rotated, report.pruned, report.removed_folders) == ([], [], [])


def test_settings_come_from_the_environment_with_defaults(tmp_path: Path) -> None:
    assert LogRetention.from_env(tmp_path, {}) == LogRetention(
        tmp_path, max_bytes=10 * MIB, backups=2, keep_files=20, orphan_s=7 * DAY_S)
    assert LogRetention.from_env(tmp_path, {
        "FLASH_LOG_MAX_MB": "0.5", "FLASH_LOG_BACKUPS": "0", "FLASH_LOG_KEEP_FILES": "3",
        "FLASH_LOG_ORPHAN_DAYS": "0.5"}) == LogRetention(
        tmp_path, max_bytes=MIB // 2, backups=0, keep_files=3, orphan_s=DAY_S / 2)
    assert sweep_interval_s({}) == 30.0
    assert sweep_interval_s({"FLASH_LOG_SWEEP_S": "0.2"}) == 0.2


@pytest.mark.parametrize(("name", "value"), [
    ("FLASH_LOG_MAX_MB", "0"), ("FLASH_LOG_MAX_MB", "ten"), ("FLASH_LOG_MAX_MB", "nan"),
    ("FLASH_LOG_BACKUPS", "-1"), ("FLASH_LOG_BACKUPS", "1.5"),
    ("FLASH_LOG_KEEP_FILES", "many"), ("FLASH_LOG_ORPHAN_DAYS", "-2"),
    ("FLASH_LOG_ORPHAN_DAYS", "inf"),
])
def test_a_wrong_setting_is_refused_naming_it(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{name}='{value}' is not a"):
        LogRetention.from_env(tmp_path, {name: value})


def test_a_wrong_sweep_interval_is_refused_naming_it() -> None:
    for wrong in ("0", "-1", "soon"):
        with pytest.raises(ValueError, match="FLASH_LOG_SWEEP_S"):
            sweep_interval_s({"FLASH_LOG_SWEEP_S": wrong})


def test_the_sweeper_protects_the_logs_of_the_supervisors_workers(tmp_path: Path) -> None:
    folder = tmp_path / "ep"
    endpoint = Endpoint("ep", "ep", "deployed", {"type": "LB"})
    busy = _log(folder, "w-busy.log", age_s=1000)
    endpoint.workers["w-busy"] = Worker("w-busy", "ep", endpoint.version, busy, [])
    done = _log(folder, "w-done.log", age_s=10)
    supervisor = SimpleNamespace(endpoints={"ep": endpoint})
    sweeper = LogSweeper(supervisor, LogRetention(tmp_path, keep_files=1),  # type: ignore[arg-type]
                         interval_s=1)
    report = asyncio.run(sweeper.sweep())
    assert report.pruned == [done] and busy.exists()
