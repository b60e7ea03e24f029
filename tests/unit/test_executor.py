"""Serialization helpers and the worker executor, driven in-process with hand-built calls."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import uuid
from typing import Any

import pytest

from runpod_flash import serialization
from runpod_flash.runtime import output
from runpod_flash.runtime.executor import (
    CallRequest,
    FunctionNotLoaded,
    FunctionStore,
    execute,
)
from runpod_flash.serialization import RemoteExecutionError

# Module-level state and functions: shipped by value, as a caller's module would be.
_STATE: dict[str, Any] = {}


class BoomError(Exception):
    """Raised by `explode`."""


def add(a: int, b: int = 0) -> int:
    return a + b


def put(key: str, value: Any) -> int:
    _STATE[key] = value
    return len(_STATE)


def get(key: str) -> Any:
    return _STATE.get(key)


def explode(x: int) -> None:
    raise BoomError(f"bad value {x}")


def chatty(x: int) -> int:
    print(f"working on {x}")
    return x * 2


async def add_async(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def _request(
    func: Any,
    *args: Any,
    session: str = "s1",
    ship: bool = True,
    **kwargs: Any,
) -> CallRequest:
    """A CallRequest as a caller would send it."""
    payload, digest = serialization.encode_function(func)
    return CallRequest(
        function_name=func.__name__,
        function_hash=digest,
        session=session,
        args=serialization.encode((args, kwargs)),
        function=payload if ship else None,
    )


# --- serialization ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 1, 2.5, "text", b"\x00\x01", [1, {"a": (2, 3)}], {1, 2}, ValueError("x")],
    ids=repr,
)
def test_encode_decode_round_trip(value: Any) -> None:
    """Any picklable value survives encode/decode as base64 text."""
    text = serialization.encode(value)
    assert isinstance(text, str)
    text.encode("ascii")
    decoded = serialization.decode(text)
    if isinstance(value, BaseException):
        assert type(decoded) is type(value) and decoded.args == value.args
    else:
        assert decoded == value


def test_decode_garbage_raises_serialization_error() -> None:
    """Undecodable text is a SerializationError, not a raw pickle error."""
    with pytest.raises(serialization.SerializationError):
        serialization.decode("not base64 pickle!!")


def test_encode_function_returns_payload_and_stable_hash() -> None:
    """encode_function gives (payload, sha256 hex), stable for the same function."""
    payload, digest = serialization.encode_function(add)
    assert isinstance(payload, str)
    assert len(digest) == 64
    int(digest, 16)
    assert serialization.encode_function(add)[1] == digest
    assert serialization.encode_function(put)[1] != digest
    rebuilt = serialization.decode(payload)
    assert rebuilt(2, 3) == 5


def test_encode_function_ships_user_module_by_value() -> None:
    """A test-module function travels by value: its global comes along as a copy."""
    rebuilt = serialization.decode(serialization.encode_function(put)[0])
    assert rebuilt.__globals__ is not globals()
    rebuilt("k", 1)
    assert "k" not in _STATE


def test_rebuild_exception_keeps_type_and_notes_traceback() -> None:
    """A pickled exception comes back as its own type with the remote traceback noted."""
    pickled = serialization.encode_exception(BoomError("kaput"))
    assert pickled is not None
    exc = serialization.rebuild_exception(pickled, "BoomError", "kaput", "Traceback: here")
    assert isinstance(exc, BoomError)
    assert str(exc) == "kaput"
    assert exc.remote_traceback == "Traceback: here"  # type: ignore[attr-defined]
    if sys.version_info >= (3, 11):  # add_note exists on Python 3.11+
        notes = getattr(exc, "__notes__", [])
        assert any("Remote traceback" in note and "Traceback: here" in note for note in notes)


@pytest.mark.parametrize("pickled", [None, "", "garbage!!"])
def test_rebuild_exception_falls_back(pickled: str | None) -> None:
    """Without a usable pickle, a RemoteExecutionError carries type and message."""
    exc = serialization.rebuild_exception(pickled, "SomeError", "went wrong", "tb text")
    assert isinstance(exc, RemoteExecutionError)
    assert exc.error_type == "SomeError"
    assert exc.remote_traceback == "tb text"
    assert "SomeError" in str(exc) and "went wrong" in str(exc)


def test_encode_exception_unpicklable_is_none() -> None:
    """An exception that cannot be pickled yields None (the caller gets its text)."""

    class Unpicklable(Exception):
        def __init__(self) -> None:
            super().__init__("x")
            self.lock = __import__("threading").Lock()

    assert serialization.encode_exception(Unpicklable()) is None


# --- CallRequest.from_json ----------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], "text", 3])
def test_from_json_rejects_non_objects(body: Any) -> None:
    """Only a JSON object is a call."""
    with pytest.raises(ValueError, match="expected a JSON object"):
        CallRequest.from_json(body)


def test_from_json_names_missing_fields() -> None:
    """Every missing required field is named."""
    with pytest.raises(ValueError) as info:
        CallRequest.from_json({"function_name": "f", "args": "x"})
    message = str(info.value)
    assert "function_hash" in message and "session" in message
    assert "function_name" not in message and "args" not in message


def test_from_json_builds_request() -> None:
    """A complete body parses; `function` is optional."""
    body = {"function_name": "f", "function_hash": "h", "session": "s", "args": "a"}
    request = CallRequest.from_json(body)
    assert request == CallRequest("f", "h", "s", "a", None)
    assert CallRequest.from_json({**body, "function": "code"}).function == "code"


# --- execute ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cold_store_without_code_raises_function_not_loaded() -> None:
    """A hash the worker has never seen asks the caller to resend the code."""
    request = _request(add, 1, 2, ship=False)
    with pytest.raises(FunctionNotLoaded):
        await execute(FunctionStore(), request)


@pytest.mark.asyncio
async def test_execute_with_code_then_cached_by_hash() -> None:
    """The first call carries the code; a later call with only the hash reuses it."""
    store = FunctionStore()
    response = await execute(store, _request(add, 1, b=2))
    assert response["success"] is True
    assert serialization.decode(response["result"]) == 3
    assert response["output"] == []

    response = await execute(store, _request(add, 10, 20, ship=False))
    assert response["success"] is True
    assert serialization.decode(response["result"]) == 30


@pytest.mark.asyncio
async def test_cache_is_per_session() -> None:
    """A function loaded in one session is not loaded for another."""
    store = FunctionStore()
    await execute(store, _request(add, 1, 2, session="a"))
    with pytest.raises(FunctionNotLoaded):
        await execute(store, _request(add, 1, 2, session="b", ship=False))


@pytest.mark.asyncio
async def test_module_functions_share_state_within_session() -> None:
    """Two functions of one module see each other's globals within one session only."""
    store = FunctionStore()
    one, two = f"one-{uuid.uuid4().hex}", f"two-{uuid.uuid4().hex}"

    response = await execute(store, _request(put, "model", "loaded", session=one))
    assert serialization.decode(response["result"]) == 1
    response = await execute(store, _request(get, "model", session=one))
    assert serialization.decode(response["result"]) == "loaded"

    response = await execute(store, _request(get, "model", session=two))
    assert response["success"] is True
    assert serialization.decode(response["result"]) is None
    response = await execute(store, _request(put, "other", 1, session=two))
    assert serialization.decode(response["result"]) == 1

    assert _STATE == {}  # the caller's own module is untouched


@pytest.mark.asyncio
async def test_raising_function_reports_error() -> None:
    """An exception is a result: message, type, user traceback and the pickled exception."""
    response = await execute(FunctionStore(), _request(explode, 7))
    assert response["success"] is False
    assert response["error"] == "bad value 7"
    assert response["error_type"] == "BoomError"
    assert "explode" in response["traceback"]
    assert "BoomError: bad value 7" in response["traceback"]
    assert "runpod_flash/runtime" not in response["traceback"]
    exc = serialization.decode(response["exception"])
    assert isinstance(exc, BoomError)  # in-process, cloudpickle maps it to the same class
    assert str(exc) == "bad value 7"


@pytest.mark.asyncio
async def test_bad_arguments_are_an_error_result() -> None:
    """A call with the wrong arguments fails as a result, not an exception."""
    response = await execute(FunctionStore(), _request(add))
    assert response["success"] is False
    assert response["error_type"] == "TypeError"


@pytest.mark.asyncio
async def test_async_function_is_awaited() -> None:
    """An async function's coroutine is awaited and its value returned."""
    response = await execute(FunctionStore(), _request(add_async, 2, 40))
    assert response["success"] is True
    assert serialization.decode(response["result"]) == 42


@pytest.mark.asyncio
async def test_sync_print_is_captured(monkeypatch: pytest.MonkeyPatch) -> None:
    """With stdout routed (as install() does), a call's prints come back in `output`."""
    target = io.StringIO()
    monkeypatch.setattr("sys.stdout", output._RoutedStream("stdout", target))
    response = await execute(FunctionStore(), _request(chatty, 4))
    assert response["success"] is True
    assert serialization.decode(response["result"]) == 8
    assert "".join(text for stream, text in response["output"] if stream == "stdout") == (
        "working on 4\n"
    )
    assert all(stream == "stdout" for stream, _ in response["output"])
    assert target.getvalue() == "working on 4\n"  # the worker's own log still gets it


# --- output routing -----------------------------------------------------------------------


def test_routed_stream_only_records_inside_capture() -> None:
    """Writes are copied to the capture buffer only while a capture is active."""
    target = io.StringIO()
    stream = output._RoutedStream("stderr", target)
    stream.write("before\n")
    with output.capture() as captured:
        stream.write("during\n")
        stream.write("")
    stream.write("after\n")
    assert captured == [("stderr", "during\n")]
    assert target.getvalue() == "before\nduring\nafter\n"
    assert stream.getvalue() == target.getvalue()  # other attributes pass through


@pytest.mark.asyncio
async def test_concurrent_captures_are_separate() -> None:
    """Concurrent calls each see only their own output."""
    stream = output._RoutedStream("stdout", io.StringIO())

    async def call(tag: str) -> list[tuple[str, str]]:
        with output.capture() as captured:
            for _ in range(3):
                stream.write(tag)
                await asyncio.sleep(0)
        return captured

    first, second = await asyncio.gather(call("a"), call("b"))
    assert first == [("stdout", "a")] * 3
    assert second == [("stdout", "b")] * 3


def test_capture_handler_records_logs() -> None:
    """Log records emitted during a capture come back as stderr text."""
    handler = output._CaptureHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    record = logging.LogRecord("model", logging.INFO, __file__, 1, "loaded %s", ("x",), None)
    handler.emit(record)  # outside a capture: dropped
    with output.capture() as captured:
        handler.emit(record)
    assert captured == [("stderr", "INFO model: loaded x\n")]


def big(size: int) -> bytes:
    return b"x" * size


def test_a_result_over_the_body_limit_fails_naming_the_function_and_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASH_MAX_BODY_MB", "1")
    result = asyncio.run(execute(FunctionStore(), _request(big, 2 * 1024 * 1024)))
    assert result["success"] is False and result["error_type"] == "ValueError"
    assert result["error"].startswith("The result of big(): 2.7 MB once encoded, over the 1 MB")
    assert "FLASH_MAX_BODY_MB" in result["error"] and "/runpod-volume" in result["error"]
