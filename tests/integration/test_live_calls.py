"""Live calls through the real platform and real worker processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

import pytest

from helpers import platform_status, run_python, wait_for, worker_pids
from runpod_flash import CpuLiveLoadBalancer, LiveServerless, RemoteExecutionError, remote

api = CpuLiveLoadBalancer(name="live-calls", workersMax=1)
slow_api = CpuLiveLoadBalancer(name="live-calls-slow", executionTimeoutMs=1000)

GREETING = "Hello"
calls_seen = 0
model = None


class QuotaExceeded(Exception):
    """Defined in the test module: the caller must get this very class back."""


def shout(text: str) -> str:
    return text.upper() + "!"


@remote(api, method="POST", path="/greet")
def greet(name: str) -> str:
    return shout(f"{GREETING}, {name}")


@remote(api, method="POST", path="/count")
def count_call() -> int:
    global calls_seen
    calls_seen += 1
    return calls_seen


@remote(api, method="POST", path="/model")
async def predict(x: int) -> tuple[int, int]:
    global model
    if model is None:
        model = {"weights": 10, "loaded_at": time.time_ns()}
    await asyncio.sleep(0)
    return x * model["weights"], model["loaded_at"]


@remote(api, method="GET", path="/pid")
def worker_pid() -> int:
    return os.getpid()


@remote(api, method="POST", path="/fail")
def fail(kind: str) -> None:
    if kind == "value":
        raise ValueError("bad value 42")
    if kind == "quota":
        raise QuotaExceeded("quota of 3 exceeded")
    raise LockedError(threading.Lock())


class LockedError(Exception):
    """Carries an unpicklable lock: it cannot travel back as itself."""


@remote(api, method="POST", path="/talk")
def talk() -> str:
    print("printed on the worker")
    logging.getLogger("user.code").warning("logged on the worker")
    return "done"


@remote(api, method="POST", path="/echo")
async def echo(value: object) -> object:
    return value


@remote(api, method="POST", path="/nap")
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return threading.get_ident()


@remote(slow_api, method="POST", path="/slow")
def too_slow() -> str:
    time.sleep(5)
    return "late"


@remote(api, method="POST", path="/local", local=True)
def runs_here() -> int:
    return os.getpid()


def test_sync_function_blocks_and_returns_its_value() -> None:
    assert greet("Ann") == "HELLO, ANN!"  # module-level helper and constant travelled along


def test_calls_run_in_a_worker_process() -> None:
    pid = worker_pid()
    assert pid != os.getpid()
    assert pid in worker_pids(platform_status(), "live-calls")


def test_module_state_persists_between_calls() -> None:
    first, second = count_call(), count_call()
    assert second == first + 1
    assert calls_seen == 0  # the caller's module is untouched


@pytest.mark.asyncio
async def test_async_function_is_awaitable_and_keeps_its_global_model() -> None:
    value, loaded_first = await predict(2)
    value_again, loaded_again = await predict(3)
    assert (value, value_again) == (20, 30)
    assert loaded_first == loaded_again  # loaded once, reused on the warm worker


def test_remote_value_error_keeps_type_message_and_remote_traceback() -> None:
    with pytest.raises(ValueError, match="bad value 42") as raised:
        fail("value")
    assert "Remote traceback" in "\n".join(getattr(raised.value, "__notes__", []))
    assert "raise ValueError" in raised.value.remote_traceback


def test_custom_exception_comes_back_as_the_callers_class() -> None:
    with pytest.raises(QuotaExceeded, match="quota of 3 exceeded"):
        fail("quota")


def test_unpicklable_exception_becomes_remote_execution_error() -> None:
    with pytest.raises(RemoteExecutionError, match="LockedError") as raised:
        fail("locked")
    assert raised.value.error_type == "LockedError"


def test_remote_stdout_and_logging_are_shown_locally(capfd: pytest.CaptureFixture[str]) -> None:
    assert talk() == "done"
    out, err = capfd.readouterr()
    assert "printed on the worker" in out
    assert "logged on the worker" in err


@pytest.mark.asyncio
async def test_arguments_and_results_round_trip() -> None:
    blob = os.urandom(1_000_000)
    assert await echo(blob) == blob
    assert await echo({"nested": [1, 2.5, None, ("t",)]}) == {"nested": [1, 2.5, None, ("t",)]}


@pytest.mark.asyncio
async def test_fifty_concurrent_calls_are_all_correct() -> None:
    results = await asyncio.gather(*(echo(i) for i in range(50)))
    assert results == list(range(50))


@pytest.mark.asyncio
async def test_sync_functions_run_off_the_worker_event_loop() -> None:
    started = time.monotonic()
    threads = await asyncio.gather(*(asyncio.to_thread(nap, 1.0) for _ in range(3)))
    assert time.monotonic() - started < 2.8  # run side by side, not one after another
    assert len(set(threads)) == 3


def test_timeout_raises_timeout_error_naming_endpoint_and_limit() -> None:
    with pytest.raises(TimeoutError, match=r"^Execution timeout on live-calls-slow after 1s$"):
        too_slow()


def test_worker_killed_between_calls_is_replaced_on_next_call() -> None:
    first = worker_pid()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: first not in worker_pids(platform_status(), "live-calls"))
    second = worker_pid()
    assert second != first
    assert greet("Bo") == "HELLO, BO!"


def test_local_true_runs_in_the_callers_process() -> None:
    assert runs_here() == os.getpid()


def test_queue_live_resource_runs_remotely_too() -> None:
    queue = LiveServerless(name="live-calls-queue", gpuCount=0, instanceIds=["cpu3g-2-8"])

    @remote(queue)
    def add(a: int, b: int) -> tuple[int, int]:
        return a + b, os.getpid()

    total, pid = add(2, 3)
    assert total == 5 and pid != os.getpid()


def test_unreachable_platform_is_a_connection_error_naming_the_url() -> None:
    code = (
        "from runpod_flash import CpuLiveLoadBalancer, remote\n"
        "api = CpuLiveLoadBalancer(name='nowhere')\n"
        "@remote(api, method='GET', path='/x')\n"
        "def f():\n    return 1\n"
        "try:\n    f()\nexcept ConnectionError as exc:\n    print('ConnectionError:', exc)\n"
    )
    result = run_python(code, env={"FLASH_PLATFORM_URL": "http://127.0.0.1:9"}, timeout=30)
    assert "ConnectionError: No platform answers at FLASH_PLATFORM_URL=http://127.0.0.1:9" in (
        result.stdout
    ), result.stderr


def test_function_that_cannot_be_pickled_is_a_clear_error_before_sending() -> None:
    lock = threading.Lock()

    @remote(api, method="POST", path="/locked")
    def uses_lock() -> bool:
        return lock.locked()

    with pytest.raises(Exception, match=r"cannot be shipped to a worker.*module level"):
        uses_lock()


def test_wrong_arguments_raise_the_remote_type_error() -> None:
    with pytest.raises(TypeError, match="argument"):
        greet()  # type: ignore[call-arg]
