"""Worker log retention with a real platform (its own FLASH_HOME, tiny limits) and real
workers: a chatty worker's log is rotated while it writes, and an endpoint keeps at most
FLASH_LOG_KEEP_FILES worker logs, its running worker's among them."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ProjectHome, stop_platform

LIMIT_BYTES = int(0.01 * 1024 * 1024)
KEEP = 2

SERVICE = textwrap.dedent("""
    import os, time
    from runpod_flash import CpuLiveLoadBalancer, remote

    api = CpuLiveLoadBalancer(name="lr-chatty", idleTimeout=1)


    def own_log() -> str:
        return os.readlink("/proc/self/fd/1")  # the worker's stdout is its log file


    @remote(api, method="POST", path="/chat")
    def chat(lines: int, marker: str) -> list:
        \"\"\"Write `lines` straight to the log; with any, wait (bounded) for its rotation
        before writing `marker`.\"\"\"
        log = own_log()
        for _ in range(lines):
            os.write(1, b"chatter " * 12 + b"\\n")
        deadline = time.monotonic() + 20  # within the call's 30 s
        while lines and not os.path.exists(log + ".1") and time.monotonic() < deadline:
            time.sleep(0.05)
        os.write(1, marker.encode() + b"\\n")
        return [log, os.getpid()]


    @remote(api, method="POST", path="/kept")
    def logs_kept(keep: int) -> list:
        \"\"\"This worker's log, and the logs of its endpoint once (bounded wait) at most
        `keep` are left.\"\"\"
        log = own_log()
        folder = os.path.dirname(log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            names = sorted(n for n in os.listdir(folder) if n.endswith(".log"))
            if len(names) <= keep:
                break
            time.sleep(0.05)
        return [os.path.basename(log), names]


    def gone(pid: int) -> None:
        \"\"\"Wait (bounded) until an idle worker has stopped.\"\"\"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"worker {pid} did not stop when idle")
""")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[ProjectHome]:
    """A private FLASH_HOME whose platform runs with tiny log limits (stopped at the end)."""
    made = ProjectHome(tmp_path, SERVICE, FLASH_LOG_MAX_MB="0.01", FLASH_LOG_BACKUPS="1",
                       FLASH_LOG_KEEP_FILES=str(KEEP), FLASH_LOG_SWEEP_S="0.2")
    try:
        yield made
    finally:
        stop_platform(made.path)


def test_a_chatty_workers_log_is_rotated_and_an_endpoint_keeps_few_logs(
    home: ProjectHome,
) -> None:
    first_log, _ = home.run('print(json.dumps(svc.chat(300, "after-rotation")))')
    log = Path(first_log)
    assert log.parent.parent == home.path / "logs"
    assert Path(f"{log}.1").exists(), "the chatty worker's log was not rotated"
    copy = Path(f"{log}.1").read_bytes()
    assert b"chatter" in copy and len(copy) > LIMIT_BYTES
    live = log.read_bytes()
    assert b"after-rotation\n" in live and not live.startswith(b"\0")  # appended at the top
    assert len(live) < LIMIT_BYTES

    own, kept = home.run("""
        for n in range(3):
            _, pid = svc.chat(0, f"round-{n}")
            svc.gone(pid)
        print(json.dumps(svc.logs_kept(2)))
    """)
    assert own in kept and len(kept) == KEEP  # the running worker's log is one of them
    assert log.name not in kept and not Path(f"{log}.1").exists()  # the oldest went first
    assert sorted(p.name for p in log.parent.glob("*.log")) == kept
