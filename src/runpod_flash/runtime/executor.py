"""Runs shipped functions: the heart of a live worker's `/execute`.

Functions are cached by content hash, so a warm call skips unpickling code. Functions that
came from one module of one caller share one namespace, as they would in the caller's
process: a global set by one call (a loaded model, a users table) is there for the next
call and for the module's other functions.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
import types
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from runpod_flash import config, serialization
from runpod_flash.runtime import output
from runpod_flash.streaming import Walker, ndjson_line

logger = logging.getLogger("runpod_flash.runtime")

MAX_CACHED_FUNCTIONS = 1024
MAX_NAMESPACES = 64
MAX_INSTANCES = 256


class FunctionNotLoaded(LookupError):
    """The worker has not seen this function yet; the caller resends it with its code."""


_PLUMBING_ROOTS = {"asyncio", "concurrent", "threading"}


def format_remote_traceback(exc: BaseException) -> str:
    """The user's frames only, under their real file names (cloudpickle hides them)."""
    frames = []
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".")[0] in _PLUMBING_ROOTS or module.startswith("runpod_flash.runtime"):
            continue
        filename = frame.f_code.co_filename
        if filename == "<dynamic-code>":
            filename = frame.f_globals.get("__file__") or filename
        frames.append(traceback.FrameSummary(filename, lineno, frame.f_code.co_name))
    return (
        "Traceback (most recent call last):\n"
        + "".join(traceback.StackSummary.from_list(frames).format())
        + "".join(traceback.format_exception_only(type(exc), exc))
    )


@dataclass(frozen=True)
class CallRequest:
    """One `/execute` call, as parsed from its JSON body."""

    function_name: str
    function_hash: str
    session: str
    args: str
    function: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> CallRequest:
        if not isinstance(body, dict):
            raise ValueError("Invalid request body: expected a JSON object")
        required = ("function_name", "function_hash", "session", "args")
        missing = [name for name in required if name not in body]
        if missing:
            raise ValueError(f"Invalid request body: missing {', '.join(missing)}")
        return cls(
            function_name=str(body["function_name"]),
            function_hash=str(body["function_hash"]),
            session=str(body["session"]),
            args=str(body["args"]),
            function=body.get("function"),
        )


def _rebind(func: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    """Move a function, and the same-module helpers it uses, onto a shared namespace.

    Names already in the namespace win: they are the worker-side state of earlier calls.
    """
    module_name = func.__globals__.get("__name__")
    rebound: dict[int, types.FunctionType] = {}

    def adopt(old: types.FunctionType) -> types.FunctionType:
        if old.__globals__ is namespace:
            return old
        if id(old) in rebound:
            return rebound[id(old)]
        new = types.FunctionType(
            old.__code__, namespace, old.__name__, old.__defaults__, old.__closure__
        )
        new.__kwdefaults__ = old.__kwdefaults__
        new.__qualname__ = old.__qualname__
        new.__module__ = old.__module__
        new.__doc__ = old.__doc__
        new.__annotations__ = old.__annotations__
        new.__dict__.update(old.__dict__)
        rebound[id(old)] = new
        for name, value in old.__globals__.items():
            if name in namespace:
                continue
            if (
                isinstance(value, types.FunctionType)
                and value.__globals__.get("__name__") == module_name
            ):
                value = adopt(value)
            namespace[name] = value
        return new

    return adopt(func)


class FunctionStore:
    """Loaded functions by (session, hash) and module namespaces by (session, module)."""

    def __init__(self) -> None:
        self._functions: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._namespaces: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()

    def get(self, request: CallRequest) -> Any:
        key = (request.session, request.function_hash)
        func = self._functions.get(key)
        if func is not None:
            self._functions.move_to_end(key)
            return func
        if request.function is None:
            raise FunctionNotLoaded(request.function_hash)
        func = self._load(request)
        self._functions[key] = func
        if len(self._functions) > MAX_CACHED_FUNCTIONS:
            self._functions.popitem(last=False)
        return func

    def _load(self, request: CallRequest) -> Any:
        func = serialization.decode(request.function or "")
        if not isinstance(func, types.FunctionType):
            return func
        globals_ = func.__globals__
        key = (request.session, str(globals_.get("__name__")), str(globals_.get("__file__")))
        namespace = self._namespaces.get(key)
        if namespace is None:
            namespace = self._namespaces[key] = {}
            if len(self._namespaces) > MAX_NAMESPACES:
                self._namespaces.popitem(last=False)
        return _rebind(func, namespace)


@dataclass(frozen=True)
class MethodCallRequest:
    """One call of a method of a shipped class, on the instance its caller's handle names."""

    class_name: str
    class_hash: str
    session: str
    instance_id: str
    constructor: str  # the encoded (args, kwargs) the instance is created with, once
    method_name: str
    args: str
    cls: str | None = None  # the class pickled by value; the worker caches it by hash

    @classmethod
    def from_json(cls, body: Any) -> MethodCallRequest:
        if not isinstance(body, dict):
            raise ValueError("Invalid request body: expected a JSON object")
        required = ("class_name", "class_hash", "session", "instance_id", "constructor",
                    "method_name", "args")
        missing = [name for name in required if name not in body]
        if missing:
            raise ValueError(f"Invalid request body: missing {', '.join(missing)}")
        method = str(body["method_name"])
        if not method.isidentifier() or method.startswith("_"):
            raise ValueError(f"'{method}' is not a public method name")
        return cls(
            class_name=str(body["class_name"]), class_hash=str(body["class_hash"]),
            session=str(body["session"]), instance_id=str(body["instance_id"]),
            constructor=str(body["constructor"]), method_name=method, args=str(body["args"]),
            cls=body.get("class"),
        )

    def class_request(self) -> CallRequest:
        """The class as the function store loads and caches shipped objects."""
        return CallRequest(self.class_name, self.class_hash, self.session, "", self.cls)


class Instances:
    """Class instances by key, created on first use and kept while the worker lives.

    Bounded: past `limit` the least recently used instance is dropped (and logged); its
    handle's next call creates it again.
    """

    def __init__(self, limit: int = MAX_INSTANCES) -> None:
        self._limit = limit
        self._instances: OrderedDict[Any, Any] = OrderedDict()
        self._creating: dict[Any, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._instances)

    async def get(self, key: Any, create: Callable[[], Any]) -> Any:
        """The instance for `key`; `create` runs (in a thread) only when there is none.
        A constructor that raises leaves no instance: the next call tries again."""
        instance = self._instances.get(key)
        if instance is not None:
            self._instances.move_to_end(key)
            return instance
        lock = self._creating.setdefault(key, asyncio.Lock())
        async with lock:  # two first calls of one handle build one instance
            instance = self._instances.get(key)
            if instance is None:
                try:
                    instance = await asyncio.to_thread(create)
                finally:
                    self._creating.pop(key, None)
                self._instances[key] = instance
                if len(self._instances) > self._limit:
                    dropped, _ = self._instances.popitem(last=False)
                    logger.warning("dropped class instance %s: more than %d instances live",
                                   dropped, self._limit)
            return instance


def public_method(instance: Any, name: str) -> Callable[..., Any]:
    """The bound public method `name`, or an AttributeError that lists the ones there are."""
    method = None if name.startswith("_") else getattr(instance, name, None)
    if not callable(method):
        methods = sorted(m for m in dir(type(instance))
                         if not m.startswith("_") and callable(getattr(instance, m, None)))
        raise AttributeError(f"'{type(instance).__name__}' has no public method '{name}'; "
                             f"its methods: {', '.join(methods) or 'none'}")
    return method  # type: ignore[no-any-return]


async def run_callable(func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Await coroutine functions here; run the others in a thread (the loop stays free)."""
    if inspect.iscoroutinefunction(func):
        return await func(*args, **kwargs)
    value = await asyncio.to_thread(func, *args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


def _failure(exc: Exception, captured: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "success": False,
        "error": str(exc),
        "error_type": type(exc).__qualname__,
        "exception": serialization.encode_exception(exc),
        "traceback": format_remote_traceback(exc),
        "output": captured,
    }


async def execute(store: FunctionStore, request: CallRequest) -> dict[str, Any]:
    """Run one call; returns the JSON response body (errors are results, not HTTP errors)."""
    func = store.get(request)  # FunctionNotLoaded propagates: the caller resends the code
    with output.capture() as captured:
        try:
            args, kwargs = serialization.decode(request.args)
            result = _within_limit(serialization.encode(await run_callable(func, args, kwargs)),
                                   f"The result of {request.function_name}()")
        except Exception as exc:
            return _failure(exc, captured)
    return {"success": True, "result": result, "output": captured}


def _within_limit(encoded: str, what: str) -> str:
    """A result the caller's side would refuse fails here, saying why and what to do."""
    limit = config.max_body_bytes()
    if len(encoded) > limit:
        raise ValueError(config.over_limit(what, len(encoded), limit, config.ENV_MAX_BODY_MB))
    return encoded


async def execute_method(
    store: FunctionStore, instances: Instances, request: MethodCallRequest
) -> dict[str, Any]:
    """Run one method call on its handle's instance (created here on the handle's first
    call, or again after the worker that held it went away); `execute`'s result shape."""
    cls = store.get(request.class_request())

    def create() -> Any:
        args, kwargs = serialization.decode(request.constructor)
        return cls(*args, **kwargs)

    with output.capture() as captured:
        try:
            instance = await instances.get((request.session, request.instance_id), create)
            method = public_method(instance, request.method_name)
            args, kwargs = serialization.decode(request.args)
            result = _within_limit(serialization.encode(await run_callable(method, args, kwargs)),
                                   f"The result of {request.class_name}.{request.method_name}()")
        except Exception as exc:
            return _failure(exc, captured)
    return {"success": True, "result": result, "output": captured}


def _taken(captured: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The output captured so far, removed from the buffer (threads may still append)."""
    taken = captured[:]
    del captured[:len(taken)]
    return taken


async def execute_stream(func: Any, request: CallRequest) -> AsyncIterator[bytes]:
    """A generator function's call, as NDJSON lines (`streaming.NDJSON_MEDIA_TYPE`).

    One `{"item": <encoded>}` line per item, with the output printed since the last line
    under "output"; the last line is what `execute` returns (the result is the generator's
    `return` value). Iterate it in one task: the output capture is set in that task.
    """
    with output.capture() as captured:
        items: Walker | None = None
        try:
            args, kwargs = serialization.decode(request.args)
            items = Walker(func(*args, **kwargs))
            async for item in items:
                line: dict[str, Any] = {"item": serialization.encode(item)}
                printed = _taken(captured)
                if printed:
                    line["output"] = printed
                yield ndjson_line(line)
            final = {"success": True, "result": serialization.encode(items.value),
                     "output": _taken(captured)}
        except Exception as exc:
            final = _failure(exc, _taken(captured))
        finally:
            if items is not None:
                await items.aclose()
        yield ndjson_line(final)
