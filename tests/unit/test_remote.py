"""The `@remote` decorator: decoration-time validation, messages, and what it returns."""

from __future__ import annotations

import asyncio
import inspect
import sys
import uuid
from typing import Any

import cloudpickle
import pytest

from runpod_flash.decorator import RemoteFunction, RoutingWarning, remote
from runpod_flash.remote_class import RemoteClass, RemoteInstance
from runpod_flash.resources import (
    CpuLiveLoadBalancer,
    CpuLiveServerless,
    LoadBalancerSlsResource,
    ServerlessResource,
)

LB_MISSING = "LoadBalancerSlsResource requires both 'method' and 'path'"
EXAMPLE = "@remote(resource_config, method='POST', path='/api/process')"


def _name(prefix: str = "t") -> str:
    """A resource name no other test uses (the route registry is process-global)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def live_lb() -> CpuLiveLoadBalancer:
    return CpuLiveLoadBalancer(name=_name("live-lb"))


def deployed_lb() -> LoadBalancerSlsResource:
    return LoadBalancerSlsResource(name=_name("lb"))


LB_FACTORIES = [live_lb, deployed_lb]


# --- load-balanced resources need method and path -----------------------------------------


@pytest.mark.parametrize("factory", LB_FACTORIES, ids=["live", "deployed"])
@pytest.mark.parametrize(
    "options",
    [{}, {"method": "POST"}, {"path": "/api/process"}],
    ids=["neither", "no-path", "no-method"],
)
def test_lb_without_method_or_path(factory: Any, options: dict[str, str]) -> None:
    """Both are required; the message names the function and shows an example."""

    def handle_upload(x: int) -> int:
        return x

    with pytest.raises(ValueError) as info:
        remote(factory(), **options)(handle_upload)
    message = str(info.value)
    assert message.startswith(LB_MISSING)
    assert "handle_upload" in message
    assert EXAMPLE in message


def test_invalid_method_message() -> None:
    """A misspelt method is rejected with the exact contract message."""

    def f(x: int) -> int:
        return x

    with pytest.raises(ValueError) as info:
        remote(live_lb(), method="PTACH", path="/api/process")(f)
    assert str(info.value) == (
        "Invalid HTTP method 'PTACH' must be one of: GET, POST, PUT, DELETE, PATCH"
    )


@pytest.mark.parametrize("method", ["post", "Post", "POST", "pOsT"])
def test_method_case_insensitive(method: str) -> None:
    """Any spelling of a method is accepted and normalised to upper case."""

    def f(x: int) -> int:
        return x

    decorated = remote(live_lb(), method=method, path="/api/process")(f)
    assert isinstance(decorated, RemoteFunction)
    assert decorated.route == ("POST", "/api/process")
    assert decorated.__remote_config__["method"] == "POST"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "get", "delete"])
def test_all_methods_accepted(method: str) -> None:
    """Every listed method (any case) is valid."""

    def f() -> None:
        return None

    decorated = remote(live_lb(), method=method, path="/items")(f)
    assert decorated.route == (method.upper(), "/items")


@pytest.mark.parametrize("path", ["api/process", "process", ""])
def test_path_needs_leading_slash(path: str) -> None:
    """A path must start with '/'; an empty path counts as missing."""

    def f() -> None:
        return None

    with pytest.raises(ValueError) as info:
        remote(live_lb(), method="POST", path=path)(f)
    expected = LB_MISSING if path == "" else "path must start with '/'"
    assert str(info.value).startswith(expected)


@pytest.mark.parametrize("path", ["/ping", "/execute", "/ping/", "/execute/"])
def test_reserved_paths(path: str) -> None:
    """/ping and /execute belong to Flash; the message names both reserved paths."""

    def f() -> None:
        return None

    with pytest.raises(ValueError) as info:
        remote(live_lb(), method="POST", path=path)(f)
    message = str(info.value)
    assert "reserved" in message
    assert "/ping" in message
    assert "/execute" in message


def test_path_that_merely_contains_reserved_word_is_fine() -> None:
    """Only the exact reserved paths are refused."""

    def f() -> None:
        return None

    decorated = remote(live_lb(), method="GET", path="/pingpong")(f)
    assert decorated.route == ("GET", "/pingpong")


# --- route registry -----------------------------------------------------------------------


def test_route_conflict_names_both_functions() -> None:
    """Two different functions on one method+path of one resource conflict."""
    resource = live_lb()

    def first_handler(x: int) -> int:
        return x

    def second_handler(x: int) -> int:
        return x

    remote(resource, method="POST", path="/api/process")(first_handler)
    with pytest.raises(ValueError) as info:
        remote(resource, method="post", path="/api/process")(second_handler)
    message = str(info.value)
    assert message.startswith("Route conflict detected: POST /api/process defined twice")
    assert "first_handler" in message
    assert "second_handler" in message


def test_same_route_on_different_resources_or_methods_is_fine() -> None:
    """Conflicts are per resource and per method."""
    name = _name("shared")

    def a() -> None:
        return None

    def b() -> None:
        return None

    def c() -> None:
        return None

    remote(CpuLiveLoadBalancer(name=name), method="POST", path="/x")(a)
    remote(CpuLiveLoadBalancer(name=_name("other")), method="POST", path="/x")(b)
    remote(CpuLiveLoadBalancer(name=name), method="GET", path="/x")(c)


def test_redecorating_same_function_is_not_a_conflict() -> None:
    """Applying the decorator to the same function again (a re-import) is allowed."""
    resource = live_lb()

    def handler(x: int) -> int:
        return x

    one = remote(resource, method="POST", path="/api/process")(handler)
    two = remote(resource, method="POST", path="/api/process")(handler)
    assert one.route == two.route == ("POST", "/api/process")


# --- path parameters ----------------------------------------------------------------------


def test_path_parameter_missing_from_signature() -> None:
    """A `{name}` in the path must be a parameter of the function."""

    def get_user(id: int) -> dict[str, int]:
        return {"id": id}

    with pytest.raises(ValueError) as info:
        remote(live_lb(), method="GET", path="/users/{user_id}")(get_user)
    message = str(info.value)
    assert "user_id" in message
    assert "get_user" in message


@pytest.mark.parametrize("path", ["/users/{user_id}", "/users/{user_id:int}"])
def test_path_parameter_present(path: str) -> None:
    """A path parameter that names a function parameter passes (typed or not)."""

    def get_user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    decorated = remote(live_lb(), method="GET", path=path)(get_user)
    assert decorated.route == ("GET", path)


# --- arguments of remote() ----------------------------------------------------------------


def test_unknown_keyword_suggests_close_match() -> None:
    """A typo gets a 'Did you mean' hint."""
    with pytest.raises(TypeError) as info:
        remote(live_lb(), methdo="POST")
    assert str(info.value) == (
        "remote() got an unexpected keyword argument 'methdo'. Did you mean 'method'?"
    )


def test_unknown_keyword_without_close_match_lists_options() -> None:
    """A keyword unlike any option lists the valid options instead."""
    with pytest.raises(TypeError) as info:
        remote(live_lb(), zzz=1)
    message = str(info.value)
    assert message.startswith("remote() got an unexpected keyword argument 'zzz'")
    assert "method" in message and "dependencies" in message


@pytest.mark.parametrize("value", ["not a resource", None, 42, {"name": "api"}])
def test_first_argument_must_be_resource(value: Any) -> None:
    """Anything but a ServerlessResource as first argument is a TypeError."""
    with pytest.raises(TypeError) as info:
        remote(value)
    assert "resource" in str(info.value)


@pytest.mark.parametrize("option", ["dependencies", "system_dependencies"])
@pytest.mark.parametrize("value", ["numpy", ["numpy", 3]])
def test_dependencies_must_be_list_of_strings(option: str, value: Any) -> None:
    """A bare string (or a non-string item) is a TypeError, not a list of characters."""
    with pytest.raises(TypeError) as info:
        remote(CpuLiveServerless(name=_name("q")), **{option: value})
    assert option in str(info.value)


def test_dependencies_recorded() -> None:
    """Valid dependency lists are kept on the RemoteFunction."""

    def f() -> None:
        return None

    decorated = remote(
        CpuLiveServerless(name=_name("q")),
        dependencies=["numpy==2.1.0"],
        system_dependencies=["ffmpeg"],
    )(f)
    assert decorated.dependencies == ["numpy==2.1.0"]
    assert decorated.system_dependencies == ["ffmpeg"]
    assert decorated.__remote_config__["dependencies"] == ["numpy==2.1.0"]


class _Model:
    """A model kept loaded between calls."""

    def __init__(self, size: int, *, label: str = "m") -> None:
        self.size = size

    async def predict(self, text: str) -> dict:
        return {"text": text}

    def reset(self) -> None:
        self.size = 0

    def _helper(self) -> None:
        pass


def test_a_class_on_a_load_balanced_resource_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"class '_Model': classes run on queue-based "
                                        r"resources .* is load-balanced"):
        remote(CpuLiveLoadBalancer(name=_name("lb")))(_Model)


def test_a_remote_class_returns_handles_without_touching_the_network() -> None:
    Model = remote(CpuLiveServerless(name=_name("q")))(_Model)
    assert isinstance(Model, RemoteClass) and Model.methods == ["predict", "reset"]
    first, second = Model(3), Model(4, label="x")
    assert isinstance(first, RemoteInstance)
    assert first.instance_id.startswith("_Model_") and first.instance_id != second.instance_id
    assert inspect.iscoroutinefunction(first.predict)
    with pytest.raises(TypeError):
        Model()  # the constructor's signature is checked here, as a local call would
    with pytest.raises(AttributeError, match="did you mean 'predict'"):
        first.predit  # noqa: B018
    with pytest.raises(AttributeError):
        first._helper  # noqa: B018


def test_a_method_call_checks_its_arguments_before_sending() -> None:
    Model = remote(CpuLiveServerless(name=_name("q")))(_Model)
    with pytest.raises(TypeError):
        asyncio.run(Model(1).predict())  # `text` is missing: nothing was sent


def test_a_remote_class_pickles_as_the_decorated_class() -> None:
    Model = remote(CpuLiveServerless(name=_name("q")), dependencies=["six"])(_Model)
    copy = cloudpickle.loads(cloudpickle.dumps(Model))
    assert isinstance(copy, RemoteClass) and copy.cls is _Model
    assert copy.dependencies == ["six"]


# --- queue resources ----------------------------------------------------------------------


def test_queue_resource_warns_about_routing_options() -> None:
    """method/path on a queue resource warn (pointing at the caller) and are ignored."""

    def job(x: int) -> int:
        return x

    with pytest.warns(RoutingWarning) as record:
        decorated = remote(CpuLiveServerless(name=_name("q")), method="POST", path="/x")(job)
    assert isinstance(decorated, RemoteFunction)
    assert decorated.route is None
    assert "ignored" in str(record[0].message)
    assert record[0].filename == __file__


def test_queue_resource_without_routing_options() -> None:
    """A queue resource needs neither method nor path."""

    def job(x: int) -> int:
        return x

    decorated = remote(CpuLiveServerless(name=_name("q")))(job)
    assert isinstance(decorated, RemoteFunction)
    assert decorated.route is None


# --- what the decorator returns -----------------------------------------------------------


def test_local_returns_original_function() -> None:
    """local=True keeps the function itself, runnable in-process, with its config."""
    resource = CpuLiveServerless(name=_name("q"))

    def double(x: int) -> int:
        return 2 * x

    decorated = remote(resource, local=True, dependencies=["numpy"])(double)
    assert decorated is double
    assert decorated(21) == 42
    config = decorated.__remote_config__
    assert config["resource_config"] is resource
    assert config["dependencies"] == ["numpy"]


def test_local_on_lb_keeps_route() -> None:
    """local=True on an LB resource still validates and records the route."""

    def double(x: int) -> int:
        return 2 * x

    decorated = remote(live_lb(), method="post", path="/double", local=True)(double)
    assert decorated is double
    assert decorated.__remote_config__["method"] == "POST"
    assert decorated.__remote_config__["path"] == "/double"


def test_sync_function_is_not_async() -> None:
    """A decorated `def` is a blocking RemoteFunction."""

    def f() -> int:
        return 1

    decorated = remote(CpuLiveServerless(name=_name("q")))(f)
    assert isinstance(decorated, RemoteFunction)
    assert decorated.is_async is False
    assert not inspect.iscoroutinefunction(decorated)


def test_async_function_is_async() -> None:
    """A decorated `async def` is an awaitable RemoteFunction."""

    async def f() -> int:
        return 1

    decorated = remote(CpuLiveServerless(name=_name("q")))(f)
    assert isinstance(decorated, RemoteFunction)
    assert decorated.is_async is True


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="inspect.markcoroutinefunction needs Python 3.12"
)
def test_async_function_looks_like_coroutine_function() -> None:
    """On 3.12+, inspect sees the decorated async function as a coroutine function."""

    async def f() -> int:
        return 1

    assert inspect.iscoroutinefunction(remote(CpuLiveServerless(name=_name("q")))(f))


def test_wraps_metadata() -> None:
    """The RemoteFunction carries the function's name, doc and __wrapped__."""

    def documented(x: int) -> int:
        """Doubles x."""
        return 2 * x

    decorated = remote(CpuLiveServerless(name=_name("q")))(documented)
    assert decorated.__name__ == "documented"
    assert decorated.__doc__ == "Doubles x."
    assert decorated.__wrapped__ is documented
    assert decorated.func is documented


# --- calling a deployed resource that is not there ----------------------------------------


def test_call_on_undeployed_lb_sync() -> None:
    """Calling a deployed-kind LB function without an endpoint says so."""

    def process(x: int, y: int) -> int:
        return x + y

    decorated = remote(deployed_lb(), method="POST", path="/api/process")(process)
    with pytest.raises(ValueError) as info:
        decorated(5, 3)
    assert str(info.value) == "Endpoint URL not available - endpoint may not be deployed"


@pytest.mark.asyncio
async def test_call_on_undeployed_lb_async() -> None:
    """The async form raises the same error when awaited."""

    async def process(x: int, y: int) -> int:
        return x + y

    decorated = remote(deployed_lb(), method="POST", path="/api/process")(process)
    with pytest.raises(ValueError, match="Endpoint URL not available"):
        await asyncio.wait_for(decorated(5, 3), timeout=10)


# --- pickling -----------------------------------------------------------------------------


def _pickled_function(resource: ServerlessResource) -> tuple[RemoteFunction, bytes]:
    def add(x: int, y: int) -> int:
        return x + y

    decorated = remote(resource, method="POST", path="/add")(add)
    return decorated, cloudpickle.dumps(decorated)


def test_pickle_round_trip_gives_remote_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpickled elsewhere, the function is a RemoteFunction with the same settings."""
    monkeypatch.delenv("FLASH_RESOURCE_NAME", raising=False)
    monkeypatch.delenv("FLASH_WORKER_ID", raising=False)
    resource = live_lb()
    original, payload = _pickled_function(resource)
    loaded = cloudpickle.loads(payload)
    assert isinstance(loaded, RemoteFunction)
    assert loaded.route == original.route == ("POST", "/add")
    assert loaded.resource.name == resource.name
    assert loaded.func(2, 3) == 5


def test_pickle_inside_own_worker_runs_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a worker of the same resource, unpickling gives the plain function."""
    resource = live_lb()
    _, payload = _pickled_function(resource)
    monkeypatch.setenv("FLASH_RESOURCE_NAME", resource.name)
    monkeypatch.setenv("FLASH_WORKER_ID", "w1")
    loaded = cloudpickle.loads(payload)
    assert not isinstance(loaded, RemoteFunction)
    assert inspect.isfunction(loaded)
    assert loaded(2, 3) == 5
    assert loaded.__remote_config__["path"] == "/add"


def test_pickle_inside_other_worker_stays_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a worker of another resource, the function stays remote."""
    _, payload = _pickled_function(live_lb())
    monkeypatch.setenv("FLASH_RESOURCE_NAME", _name("someone-else"))
    monkeypatch.setenv("FLASH_WORKER_ID", "w1")
    assert isinstance(cloudpickle.loads(payload), RemoteFunction)


def test_no_public_name_is_shadowed_by_a_submodule() -> None:
    """Importing `runpod_flash.<x>` sets the package attribute `x`: an export of that name
    would turn into the module (workers import every submodule up front)."""
    import pkgutil

    import runpod_flash

    submodules = {info.name for info in pkgutil.iter_modules(runpod_flash.__path__)}
    assert not submodules & set(runpod_flash.__all__)
