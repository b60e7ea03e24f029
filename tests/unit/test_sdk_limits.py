"""Limits the SDK checks before it sends (body size), recovery of live queue calls, the
per-loop connection pools, and FLASH_HOME's permissions: no platform, no processes."""

from __future__ import annotations

import asyncio
import gc
import os
import types
import weakref
from pathlib import Path
from typing import Any

import pytest

from runpod_flash import config
from runpod_flash.http.errors import ConnectFailed
from runpod_flash.stubs import live, queue
from runpod_flash.stubs.live import PayloadTooLarge


def make_call(*args: Any) -> live._Call:
    endpoint = types.SimpleNamespace(name="sem-api")
    return live._Call(endpoint, lambda: ("code", "hash"), "embed", "__main__", None,  # type: ignore[arg-type]
                      args, {})


def test_arguments_over_the_body_limit_are_refused_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(config.ENV_MAX_BODY_MB, "1")
    attempt = make_call(b"x" * (2 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge) as refused:
        attempt.payload()
    message = str(refused.value)
    for part in ("embed()", "sem-api", "over the 1 MB limit", "FLASH_MAX_BODY_MB",
                 "/runpod-volume", "path"):
        assert part in message
    assert make_call(b"small").payload()  # under the limit: sent as before


def test_a_413_answer_is_the_same_clear_error() -> None:
    attempt = make_call(b"x" * 1000)
    attempt.payload()
    with pytest.raises(PayloadTooLarge, match=r"over the endpoint's limit.*FLASH_MAX_BODY_MB"):
        attempt.resend(413, b'{"error": "request body over 1024 bytes"}')


def test_queue_inputs_are_checked_against_the_runsync_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(config.ENV_MAX_RUNSYNC_MB, "1")

    def never(*args: Any) -> Any:
        raise AssertionError("nothing is uploaded in vain")

    monkeypatch.setattr(queue, "request", never)
    with pytest.raises(PayloadTooLarge, match=r"embed\(\) on queue endpoint q.*_RUNSYNC_MB"):
        queue._run_job({}, "http://x/v2/q", {"input": "x" * (2 * 1024 * 1024)}, 5, "q",
                       "embed()")


def test_queue_input_limits_default_to_runpods_and_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(config.ENV_MAX_RUN_MB, raising=False)
    monkeypatch.delenv(config.ENV_MAX_RUNSYNC_MB, raising=False)
    assert config.queue_input_limit(sync=False) == 10 * config.MIB
    assert config.queue_input_limit(sync=True) == 20 * config.MIB
    monkeypatch.setenv(config.ENV_MAX_RUN_MB, "0.5")
    assert config.queue_input_limit(sync=False) == config.MIB // 2
    monkeypatch.setenv(config.ENV_MAX_RUN_MB, "lots")
    with pytest.raises(ValueError, match="FLASH_MAX_RUN_MB='lots' is not a number"):
        config.queue_input_limit(sync=False)


def test_a_live_queue_call_reprovisions_once_when_the_platform_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    def fake_request(method: str, url: str, *args: Any) -> tuple[int, bytes]:
        sent.append(url)
        if url.startswith("http://old"):
            raise ConnectFailed("cannot connect to old: refused")
        return 200, b'{"id": "j1", "status": "COMPLETED", "output": 3}'

    monkeypatch.setattr(queue, "request", fake_request)
    fresh = [({"Authorization": "Bearer new"}, "http://new/v2/q")]
    job = queue._run_job({}, "http://old/v2/q", {"input": {}}, 5, "q", "f()",
                         reprovision=fresh.pop)
    assert job["output"] == 3 and [u.split("/")[2] for u in sent] == ["old", "new"]
    with pytest.raises(ConnectionError, match="Failed to connect to endpoint q"):
        queue._run_job({}, "http://old/v2/q", {"input": {}}, 5, "q", "f()")  # deployed: no


def test_each_event_loops_pool_goes_with_its_loop() -> None:
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def use_pool() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert live.loop_pool() is live.loop_pool()

    for _ in range(20):
        asyncio.run(use_pool())
    gc.collect()
    assert live._pools == {}
    assert all(loop() is None for loop in loops)


def test_a_premade_open_flash_home_is_narrowed(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    home.chmod(0o755)
    (home / "logs").chmod(0o755)
    monkeypatch.setenv(config.ENV_HOME, str(home))
    assert config.logs_dir() == home / "logs"
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "logs").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_flash_home_others_can_write_is_refused(tmp_path: Path, mode: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "shared"
    home.mkdir()
    home.chmod(mode)
    monkeypatch.setenv(config.ENV_HOME, str(home))
    with pytest.raises(config.UnsafeHome, match=rf"writable by other users.*chmod 700 {home}"):
        config.flash_home()
    assert home.stat().st_mode & 0o777 == mode  # left as it was: the user decides
    assert os.access(home, os.W_OK)
