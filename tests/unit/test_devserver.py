"""`flash run`'s route table, argument rules, error mapping, output tags and app (in-process).

The app is driven over ASGI with `local=True` functions, which run in this process, so no
platform is needed; tests/integration/test_dev_server.py covers the real thing.
"""

from __future__ import annotations

import inspect
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import HTTPException

from runpod_flash import CpuLiveLoadBalancer, CpuLiveServerless, remote
from runpod_flash.build import BuildError
from runpod_flash.build.scanner import FunctionDecl, module_path
from runpod_flash.devserver.app import serving_app
from runpod_flash.devserver.calls import CallFailed, EndpointTracker, QueueArguments, status_for
from runpod_flash.devserver.loader import import_project
from runpod_flash.devserver.output import PrefixedStream, current_endpoint
from runpod_flash.devserver.processes import listen
from runpod_flash.devserver.routes import DevRoute, plan_routes
from runpod_flash.devserver.scan import NoRemoteFunctions, scan
from runpod_flash.serialization import RemoteExecutionError
from runpod_flash.stubs.live import ProvisioningError

queue = CpuLiveServerless(name="unit-dev-queue")
api = CpuLiveLoadBalancer(name="unit-dev-api")


@remote(queue)
async def hello(payload: dict) -> dict:
    """Greets.

    More text.
    """
    return {"message": f"Hello, {payload.get('name', 'world')}!"}


@remote(queue)
def add(a: int, b: int = 1) -> int:
    return a + b


@remote(api, method="GET", path="/users/{user_id}")
async def get_user(user_id: int) -> dict:
    return {"user_id": user_id}


@remote(api, method="POST", path="/b/runsync")
async def clash(x: int) -> int:
    return x


def decl(name: str, file: str, line: int = 1) -> FunctionDecl:
    return FunctionDecl(name=name, module=module_path(file), file=file, line=line,
                        is_async=True, params=(), resource_ref=None, inline_config=None,
                        method=None, path=None, route_is_literal=True, calls=frozenset())


def table(routes: list[DevRoute]) -> set[tuple[str, str, str]]:
    return {(r.method, r.path, r.decl.name) for r in routes}


# -- routes ----------------------------------------------------------------------------------


def test_one_queue_function_per_file_is_prefix_runsync() -> None:
    routes = plan_routes([(decl("hello", "a/b/worker.py"), hello)])
    assert table(routes) == {("POST", "/a/b/worker/runsync", "hello")}
    assert routes[0].summary == "Greets."
    assert routes[0].describe()["type"] == "QB"


def test_several_queue_functions_get_their_name_and_lb_routes_keep_their_path() -> None:
    routes = plan_routes([
        (decl("hello", "01_start/worker.py"), hello),
        (decl("add", "01_start/worker.py"), add),
        (decl("get_user", "01_start/worker.py"), get_user),
    ])
    assert table(routes) == {
        ("POST", "/01_start/worker/hello/runsync", "hello"),
        ("POST", "/01_start/worker/add/runsync", "add"),
        ("GET", "/01_start/worker/users/{user_id}", "get_user"),
    }


def test_two_functions_on_one_local_route_are_a_conflict_at_file_line() -> None:
    with pytest.raises(BuildError) as caught:
        plan_routes([(decl("clash", "a.py", 7), clash), (decl("hello", "a/b.py", 3), hello)])
    message = str(caught.value)
    assert "Route conflict detected: POST /a/b/runsync" in message
    assert "a.py:7" in message and "a/b.py:3" in message


def test_local_functions_are_marked_local() -> None:
    @remote(api, method="GET", path="/local-probe", local=True)
    def local_probe() -> str:
        return "here"

    [route] = plan_routes([(decl("local_probe", "l.py"), local_probe)])
    assert route.describe()["type"] == "LB local"


# -- arguments and errors --------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expected"), [
    ({"input": {"name": "Ann"}}, {"payload": {"name": "Ann"}}),
    ({"name": "Ann"}, {"payload": {"name": "Ann"}}),
    ({"input": {"payload": {"name": "Ann"}}}, {"payload": {"name": "Ann"}}),
    ({}, {"payload": {}}),
])
def test_a_body_is_keyword_arguments_or_the_first_parameter(body: Any, expected: Any) -> None:
    assert QueueArguments(hello)(body) == expected


def test_a_body_that_is_not_an_object_is_the_first_parameter() -> None:
    def total(values: list[int]) -> int:
        return sum(values)

    assert QueueArguments(total)({"input": [1, "2"]}) == {"values": [1, 2]}
    with pytest.raises(TypeError, match="payload: Input should be a valid dictionary"):
        QueueArguments(hello)({"input": [1, 2]})


def test_arguments_are_validated_and_converted_with_the_signature() -> None:
    arguments = QueueArguments(add)
    assert arguments({"input": {"a": "2"}}) == {"a": 2}
    assert arguments({"a": 2, "b": 5}) == {"a": 2, "b": 5}
    with pytest.raises(TypeError, match=r"invalid input for add\(\): a: Input should be"):
        arguments({"a": "x"})


def test_functions_without_parameters_and_with_kwargs() -> None:
    def nothing() -> None: ...

    def anything(**kwargs: Any) -> None: ...

    assert QueueArguments(nothing)({}) == {}
    with pytest.raises(TypeError, match="takes no arguments"):
        QueueArguments(nothing)({"x": 1})
    assert QueueArguments(anything)({"input": {"x": 1}}) == {"x": 1}


@pytest.mark.parametrize(("exc", "status"), [
    (TimeoutError("t"), 504), (ConnectionError("c"), 502), (ValueError("v"), 422),
    (KeyError("k"), 422), (TypeError("t"), 422), (RuntimeError("r"), 500),
    (HTTPException(418, "teapot"), 418), (ProvisioningError("p"), 503),
])
def test_error_mapping(exc: Exception, status: int) -> None:
    assert status_for(exc) == status
    assert CallFailed.of(exc).status_code == status


def test_a_remote_type_that_could_not_be_rebuilt_keeps_its_name() -> None:
    failure = CallFailed.of(RemoteExecutionError("Weird: no", "Weird", "tb"))
    assert failure.body() == {"error": "Weird: no", "error_type": "Weird"}
    assert failure.traceback == "tb" and failure.status_code == 500


# -- output ----------------------------------------------------------------------------------


def test_lines_written_for_an_endpoint_are_tagged_and_others_are_not() -> None:
    raw = io.StringIO()
    stream = PrefixedStream(raw)
    stream.write("plain\n")
    token = current_endpoint.set("api")
    try:
        stream.write("one\ntwo")
        stream.write(" more\nthree\n")
    finally:
        current_endpoint.reset(token)
    assert raw.getvalue() == "plain\n[api] one\n[api] two more\n[api] three\n"


# -- scan ------------------------------------------------------------------------------------


def test_a_project_without_remote_functions_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print('hi')\n")
    with pytest.raises(NoRemoteFunctions, match=r"No @remote functions found\.") as caught:
        scan(tmp_path)
    assert "flash init" in str(caught.value)


def test_a_class_on_a_load_balanced_resource_is_refused_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "w.py").write_text(
        "from runpod_flash import CpuLiveLoadBalancer, remote\n"
        "api = CpuLiveLoadBalancer(name='api')\n\n"
        "@remote(api)\nclass Model:\n    def predict(self):\n        pass\n"
    )
    with pytest.raises(BuildError, match=r"w\.py:4: @remote on class 'Model': classes run on "
                                         r"queue-based resources"):
        scan(tmp_path)


def test_a_syntax_error_is_reported_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "w.py").write_text("def f(:\n")
    with pytest.raises(BuildError, match=r"w\.py:1: syntax error"):
        scan(tmp_path)


def test_a_class_serves_each_public_method_at_prefix_method_runsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "unit_dev_classy.py").write_text(
        "from runpod_flash import CpuLiveServerless, remote\n"
        "c = CpuLiveServerless(name='unit-dev-classy')\n\n"
        "@remote(c)\nclass Model:\n"
        "    def __init__(self):\n        self.calls = 0\n"
        "    async def predict(self, text: str, top: int = 1) -> dict:\n"
        "        \"\"\"Predicts.\"\"\"\n        return {}\n"
        "    def _private(self):\n        pass\n\n"
        "@remote(c)\nasync def classy_f(x: int) -> int:\n    return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = import_project(tmp_path, [].append)
    finally:
        sys.modules.pop("unit_dev_classy", None)
    routes = {route.path: route for route in plan_routes(found)}
    assert set(routes) == {"/unit_dev_classy/predict/runsync", "/unit_dev_classy/runsync"}
    predict = routes["/unit_dev_classy/predict/runsync"]
    assert predict.describe()["function"] == "Model.predict"
    assert predict.summary == "Predicts."
    assert list(inspect.signature(predict.target).parameters) == ["text", "top"]
    assert QueueArguments(predict.target)({"input": {"text": "hi"}}) == {"text": "hi"}


def test_a_port_in_use_names_the_fix() -> None:
    taken = listen("127.0.0.1", 0)
    try:
        with pytest.raises(BuildError, match=r"Cannot listen on 127\.0\.0\.1:\d+: .*--port"):
            listen("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


# -- the app, over ASGI ----------------------------------------------------------------------


@remote(queue, local=True)
def local_divide(a: float, b: float) -> float:
    """Divides a by b."""
    return a / b


@remote(api, method="GET", path="/items/{item_id}", local=True)
def local_item(item_id: int, detail: bool = False) -> dict:
    """Reads an item."""
    if item_id < 0:
        raise ValueError("item ids are positive")
    return {"item_id": item_id, "detail": detail}


async def request(app: Any, method: str, path: str, body: Any = None,
                  query: str = "") -> tuple[int, Any]:
    """One request through the ASGI app; (status, JSON body)."""
    pending = [{"type": "http.request", "body": json.dumps(body).encode() if body is not None
                else b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "root_path": "", "scheme": "http",
             "http_version": "1.1", "server": ("test", 80), "client": ("test", 1),
             "headers": [(b"content-type", b"application/json")], "asgi": {"version": "3.0"}}
    await app(scope, receive, send)
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(payload)


@pytest.fixture
def app() -> Any:
    routes = plan_routes([(decl("local_divide", "calc.py", 3), local_divide),
                          (decl("local_item", "items/api.py", 9), local_item)])
    return serving_app(routes, EndpointTracker(lambda *_: None), io.StringIO())


@pytest.mark.asyncio
async def test_queue_route_answers_the_runpod_envelope(app: Any) -> None:
    status, body = await request(app, "POST", "/calc/runsync", {"input": {"a": 6, "b": 3}})
    assert status == 200 and body["status"] == "COMPLETED" and body["output"] == 2
    assert body["id"]
    status, body = await request(app, "POST", "/calc/runsync", {"a": 1, "b": 0})
    assert status == 500
    assert body["status"] == "FAILED" and body["error_type"] == "ZeroDivisionError"
    assert body["error"] == "ZeroDivisionError: float division by zero"


@pytest.mark.asyncio
async def test_lb_route_takes_path_and_query_parameters_and_maps_errors(app: Any) -> None:
    assert await request(app, "GET", "/items/api/items/5", query="detail=true") == (
        200, {"item_id": 5, "detail": True})
    assert await request(app, "GET", "/items/api/items/-1") == (
        422, {"error": "item ids are positive", "error_type": "ValueError"})


@pytest.mark.asyncio
async def test_index_ping_and_docs(app: Any) -> None:
    status, index = await request(app, "GET", "/")
    assert status == 200 and [r["path"] for r in index["routes"]] == [
        "/calc/runsync", "/items/api/items/{item_id}"]
    assert await request(app, "GET", "/ping") == (200, {"status": "healthy"})
    status, document = await request(app, "GET", "/openapi.json")
    assert document["info"]["title"] == "Flash Dev Server"
    operation = document["paths"]["/calc/runsync"]["post"]
    assert operation["tags"] == ["calc.py"] and operation["summary"] == "Divides a by b."
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    model = schema["properties"]["input"]["$ref"].rsplit("/", 1)[1]
    assert set(document["components"]["schemas"][model]["properties"]) == {"a", "b"}
    assert document["paths"]["/items/api/items/{item_id}"]["get"]["tags"] == ["items/api.py"]
