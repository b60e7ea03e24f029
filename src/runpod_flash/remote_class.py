"""`@remote` on a class: a stateful worker (a model loaded once, then called many times).

`Model(*args, **kwargs)` returns a handle at once, without touching the network; each public
method of the handle is awaitable. The handle's first call creates the instance on a worker
(the constructor runs there, once); later calls of that handle are queued for the same worker
and reach the same instance while that worker lives. If it goes away, the next call creates
the instance again elsewhere and logs that it did. Classes run on queue-based resources only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import difflib
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from runpod_flash.decorator import _BUILDING, _call_pool, calls_live, remote_config
from runpod_flash.resources import ServerlessResource


def public_methods(cls: type) -> list[str]:
    """The methods a handle offers: public functions defined on the class or its bases."""
    return sorted(
        name for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.isfunction(value)
    )


class RemoteClass:
    """What `@remote` makes of a class: calling it returns a `RemoteInstance` handle."""

    def __init__(
        self,
        cls: type,
        resource: ServerlessResource,
        dependencies: list[str],
        system_dependencies: list[str],
    ) -> None:
        functools.update_wrapper(self, cls, updated=())
        self.cls = cls
        self.resource = resource
        self.dependencies = dependencies
        self.system_dependencies = system_dependencies
        self.methods = public_methods(cls)
        self.__remote_config__ = remote_config(resource, None, dependencies, system_dependencies)
        self._shipped: tuple[str, str] | None = None
        self._live_endpoint: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<remote class {self.cls.__qualname__} on {type(self.resource).__name__} " \
               f"'{self.resource.name}'>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled into another process, the decorator is applied again there."""
        return (decorate_class, (self.cls, self.resource, self.dependencies,
                                 self.system_dependencies))

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteInstance:
        if _BUILDING:
            raise RuntimeError(
                f"'{self.cls.__name__}' was instantiated while `flash build` imported its "
                "module; move it under `if __name__ == \"__main__\":`"
            )
        inspect.signature(self.cls).bind(*args, **kwargs)  # TypeError now, as locally
        return RemoteInstance(self, args, kwargs)

    def shipped(self) -> tuple[str, str]:
        """The class pickled by value and its hash, computed once."""
        if self._shipped is None:
            from runpod_flash import serialization

            with self._lock:
                if self._shipped is None:
                    self._shipped = serialization.encode_function(self.cls)  # type: ignore[arg-type]
        return self._shipped

    def endpoint(self) -> Any:
        """The live endpoint of this class's resource and dependency set (looked up once)."""
        if self._live_endpoint is None:
            from runpod_flash.stubs import live

            try:
                origin = (inspect.getsourcefile(self.cls) or "<remote>",
                          inspect.getsourcelines(self.cls)[1])
            except (OSError, TypeError):
                origin = ("<remote>", 0)
            self._live_endpoint = live.endpoint_for(
                self.resource, self.dependencies, self.system_dependencies, origin
            )
        return self._live_endpoint


class RemoteInstance:
    """A handle on one instance of a remote class; `await handle.method(...)` runs it there."""

    def __init__(self, remote: RemoteClass, args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> None:
        from runpod_flash.stubs.queue import InstanceRef

        self._remote = remote
        self._ref = InstanceRef(remote.cls, args, kwargs)

    @property
    def instance_id(self) -> str:
        return self._ref.instance_id

    def __repr__(self) -> str:
        return f"<remote {self._remote.cls.__qualname__} instance {self._ref.instance_id}>"

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._remote.methods]

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        remote = self.__dict__.get("_remote")
        if remote is None or name.startswith("_"):
            raise AttributeError(name)
        if name not in remote.methods:
            close = difflib.get_close_matches(name, remote.methods, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else (
                f"; its public methods: {', '.join(remote.methods) or 'none'}"
            )
            raise AttributeError(f"remote class '{remote.cls.__name__}' has no public method "
                                 f"'{name}'{hint}")
        method = getattr(remote.cls, name)

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            inspect.signature(method).bind(None, *args, **kwargs)  # TypeError now
            loop = asyncio.get_running_loop()
            work = functools.partial(contextvars.copy_context().run, self._call, name, args,
                                     kwargs)
            return await loop.run_in_executor(_call_pool, work)

        return call

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from runpod_flash.stubs import queue

        remote, ref = self._remote, self._ref
        # Until a call has placed the instance, calls wait: one instance, on one worker.
        with ref.lock if ref.worker_id is None else contextlib.nullcontext():
            if calls_live(remote.resource):
                return queue.call_live_method(
                    remote.endpoint(), remote.shipped, ref, method,
                    remote.resource.execution_timeout_s, args, kwargs,
                )
            return queue.call_deployed_method(remote.resource, ref, method, args, kwargs)


def decorate_class(
    cls: type,
    resource: ServerlessResource,
    dependencies: list[str],
    system_dependencies: list[str],
    local: bool = False,
) -> Any:
    """`@remote` applied to a class: checked now, a `RemoteClass` unless it runs here."""
    from runpod_flash.decorator import _runs_in_place

    if resource.is_load_balanced:
        raise TypeError(
            f"@remote on class '{cls.__name__}': classes run on queue-based resources "
            f"(LiveServerless, CpuLiveServerless, ServerlessEndpoint, CpuServerlessEndpoint); "
            f"{type(resource).__name__} '{resource.name}' is load-balanced, where each "
            "function is an HTTP route. Use a queue-based resource for the class, or decorate "
            "module-level functions with method= and path="
        )
    if local or _runs_in_place(resource):
        cls.__remote_config__ = remote_config(  # type: ignore[attr-defined]
            resource, None, dependencies, system_dependencies
        )
        return cls
    return RemoteClass(cls, resource, dependencies, system_dependencies)
