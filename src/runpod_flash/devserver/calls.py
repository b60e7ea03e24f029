"""Calling a route's `@remote` function from a request, and turning its errors into statuses.

The function is called exactly as a script calls it (the SDK ships it to a live worker), so
module state, exceptions and printed output behave as they do there. Errors keep the
original `flash run` mapping: TimeoutError 504, ConnectionError 502, ValueError, KeyError and
TypeError (bad input, as a rule) 422, an endpoint that cannot be provisioned 503, anything
else 500; an HTTPException keeps its status.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from runpod_flash.runtime.routes import body_model, parameters
from runpod_flash.serialization import RemoteExecutionError
from runpod_flash.stubs import live
from runpod_flash.stubs.live import ProvisioningError


def status_for(exc: BaseException) -> int:
    """The HTTP status of a failed call (the original dev server's mapping)."""
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, ProvisioningError):
        return 503
    if isinstance(exc, TimeoutError):
        return 504
    if isinstance(exc, ConnectionError):
        return 502
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return 422
    return 500


class CallFailed(HTTPException):
    """A route's function raised: its type, message and status, and the remote traceback."""

    def __init__(self, status: int, error_type: str, message: str, traceback: str = "") -> None:
        super().__init__(status_code=status, detail=message)
        self.error_type = error_type
        self.message = message
        self.traceback = traceback

    @classmethod
    def of(cls, exc: BaseException) -> CallFailed:
        if isinstance(exc, CallFailed):
            return exc
        if isinstance(exc, HTTPException):
            return cls(exc.status_code, type(exc).__name__, str(exc.detail))
        error_type = type(exc).__name__
        if isinstance(exc, RemoteExecutionError) and exc.error_type:
            error_type = exc.error_type  # a remote type that could not be rebuilt here
        return cls(status_for(exc), error_type, str(exc), getattr(exc, "remote_traceback", ""))

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}


def is_async(target: Any) -> bool:
    return inspect.iscoroutinefunction(inspect.unwrap(target))


async def invoke(target: Any, kwargs: dict[str, Any]) -> Any:
    """Call a plain (non-generator) function; a blocking one runs off the event loop."""
    if is_async(target):
        return await target(**kwargs)
    return await run_in_threadpool(functools.partial(target, **kwargs))


def route_function(target: Any, after_call: Callable[[], None]) -> Callable[..., Any]:
    """A function with `target`'s signature for `runtime.routes.build_endpoint`: it calls
    `target` and raises CallFailed for errors before a response starts. A generator's error
    after its first item is raised as itself (it ends the event stream)."""
    user = inspect.unwrap(target)

    if inspect.isasyncgenfunction(user):
        async def proxy(**kwargs: Any) -> AsyncIterator[Any]:
            items = target(**kwargs)
            try:
                async with contextlib.aclosing(items):
                    try:
                        first = await items.__anext__()
                    except StopAsyncIteration:
                        return
                    except Exception as exc:
                        raise CallFailed.of(exc) from exc
                    yield first
                    async for item in items:
                        yield item
            finally:
                after_call()
    elif inspect.isgeneratorfunction(user):
        def proxy(**kwargs: Any) -> Iterator[Any]:  # type: ignore[misc]
            items = target(**kwargs)
            try:
                with contextlib.closing(items):
                    try:
                        first = next(items)
                    except StopIteration:
                        return
                    except Exception as exc:
                        raise CallFailed.of(exc) from exc
                    yield first
                    yield from items
            finally:
                after_call()
    else:
        async def proxy(**kwargs: Any) -> Any:  # type: ignore[misc]
            try:
                return await invoke(target, kwargs)
            except Exception as exc:
                raise CallFailed.of(exc) from exc
            finally:
                after_call()

    functools.update_wrapper(proxy, user)  # signature, annotations' globals, docstring
    return proxy


class QueueArguments:
    """Keyword arguments for a queue function from a runsync body, checked like a call.

    The body is `{"input": {...}}` or the object itself; an object whose keys are all
    parameter names is the keyword arguments, anything else is passed whole as the first
    parameter (so `{"name": "Ann"}` reaches `hello(payload: dict)` as `payload`). Values are
    validated and converted with a model built from the signature (the one /docs shows).
    """

    def __init__(self, target: Any) -> None:
        user = inspect.unwrap(target)
        self.params = parameters(user)
        self.names = [param.name for param in self.params]
        self.required = [p.name for p in self.params if p.default is inspect.Parameter.empty]
        self.open = any(p.kind is p.VAR_KEYWORD
                        for p in inspect.signature(user).parameters.values())
        self.model: type[BaseModel] = body_model(user, self.params)
        self.function = user.__name__

    def _values(self, body: Any) -> dict[str, Any]:
        payload = body["input"] if isinstance(body, dict) and "input" in body else body
        if isinstance(payload, dict) and (self.open or set(payload) <= set(self.names)) and (
            payload or not self.required
        ):
            return payload
        if not self.names:
            raise TypeError(f"{self.function}() takes no arguments; send {{\"input\": {{}}}}")
        return {self.names[0]: payload}

    def __call__(self, body: Any) -> dict[str, Any]:
        values = self._values(body)
        if self.open:
            return values
        try:
            checked = self.model.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'input'}: {error['msg']}"
                for error in exc.errors()
            )
            raise TypeError(f"invalid input for {self.function}(): {problems}") from None
        return {name: getattr(checked, name) for name in values}


class EndpointTracker:
    """Reports, once each, the live endpoints this process's calls provisioned, so the
    session can follow their logs while calls run and stop them when it ends (and leave
    other callers' endpoints alone)."""

    def __init__(self, report: Callable[[str, str], None]) -> None:
        self._report = report
        self._seen: set[str] = set()  # endpoint ids reported
        self._done: set[int] = set()  # targets whose endpoint was reported
        self._lock = threading.Lock()

    def after_call(self, target: Any) -> None:
        if id(target) in self._done:  # the common case, kept cheap
            return
        resource = getattr(target, "resource", None)
        if resource is None or not resource.is_live:
            return
        endpoint = live.endpoint_for(resource, target.dependencies,
                                     target.system_dependencies, ("<flash run>", 0))
        if self._found(endpoint):
            self._done.add(id(target))  # targets live as long as this process's app

    def scan(self) -> None:
        """Report the endpoints provisioned so far, including those of calls still running
        (their output is followed from the start)."""
        for endpoint, endpoint_id in live.provisioned():
            self._report_once(endpoint, endpoint_id)

    def _found(self, endpoint: live.LiveEndpoint) -> bool:
        endpoint_id = endpoint.cached_id()
        if endpoint_id is None:  # not provisioned (yet), or the call failed before it existed
            return False
        self._report_once(endpoint, endpoint_id)
        return True

    def _report_once(self, endpoint: live.LiveEndpoint, endpoint_id: str) -> None:
        with self._lock:
            if endpoint_id in self._seen:
                return
            self._seen.add(endpoint_id)
        self._report(endpoint_id, endpoint.name)
