"""A deployed load-balanced worker serving the seed's user service over real HTTP."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from runpod_flash.runtime.deployed import create_deployed_app

pytestmark = pytest.mark.integration

# The seed document's "Complete Working Example", verbatim.
# The seed document's Complete Working Example, kept once in the deploy test project.
USER_SERVICE = (
    Path(__file__).parent / "projects" / "user_service" / "user_service.py"
).read_text()

ROUTES = [
    ("health_check", False, "GET", "/health"),
    ("list_users", False, "GET", "/users"),
    ("create_user", True, "POST", "/users"),
    ("get_user", False, "GET", "/users/{user_id}"),
    ("update_user", True, "PUT", "/users/{user_id}"),
    ("delete_user", True, "DELETE", "/users/{user_id}"),
]
JSON = {"Content-Type": "application/json"}


def _manifest(is_load_balanced: bool = True, module: str = "user_service") -> dict[str, Any]:
    functions = [
        {"name": name, "module": module, "is_async": is_async, "is_class": False,
         "http_method": method, "http_path": path}
        for name, is_async, method, path in ROUTES
    ]
    return {
        "version": "1.0",
        "project_name": "users",
        "resources": {
            "user-service": {
                "resource_type": "LoadBalancerSlsResource",
                "functions": functions,
                "is_load_balanced": is_load_balanced,
            }
        },
        "routes": {"user-service": {f"{m} {p}": name for name, _, m, p in ROUTES}},
    }


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The unpacked artifact, imported as a worker of `user-service` would import it."""
    (tmp_path / "user_service.py").write_text(USER_SERVICE)
    (tmp_path / "flash_manifest.json").write_text(json.dumps(_manifest()))
    monkeypatch.setenv("FLASH_RESOURCE_NAME", "user-service")
    monkeypatch.setenv("FLASH_WORKER_ID", "w-test")
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for module in ("user_service", "teapot_service"):
        sys.modules.pop(module, None)


class Client:
    """Plain HTTP against one running server."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """Status and decoded body; a dict/list body is sent as JSON, bytes as they are."""
        if body is not None and not isinstance(body, (bytes, Iterator)):
            body, headers = json.dumps(body).encode(), {**JSON, **(headers or {})}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        is_json = response.getheader("content-type", "").startswith("application/json")
        return response.status, json.loads(raw) if is_json else raw.decode()


@pytest.fixture
def serve() -> Iterator[Callable[[Any], Client]]:
    """Starts real uvicorn servers on loopback ports; all are stopped at teardown."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> Client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return Client(sock.getsockname()[1])

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(app_dir: Path, serve: Callable[[Any], Client]) -> Client:
    return serve(create_deployed_app(app_dir, "user-service"))


def test_ping_is_healthy(client: Client) -> None:
    assert client.request("GET", "/ping") == (200, {"status": "healthy"})


def test_list_users(client: Client) -> None:
    status, body = client.request("GET", "/users")
    assert status == 200
    assert [user["name"] for user in body["users"]] == ["Alice", "Bob"]


def test_create_then_get_user(client: Client) -> None:
    status, created = client.request(
        "POST", "/users", {"name": "Charlie", "email": "charlie@example.com"}
    )
    assert status == 200
    assert created == {"id": 3, "name": "Charlie", "email": "charlie@example.com"}
    assert client.request("GET", "/users/3") == (200, created)


def test_put_with_only_name_keeps_email(client: Client) -> None:
    status, body = client.request("PUT", "/users/1", {"name": "Alicia"})
    assert (status, body) == (200, {"id": 1, "name": "Alicia", "email": "alice@example.com"})
    assert client.request("GET", "/users/1")[1]["name"] == "Alicia"


def test_put_without_body_uses_defaults(client: Client) -> None:
    assert client.request("PUT", "/users/2") == (
        200, {"id": 2, "name": "Bob", "email": "bob@example.com"}
    )


def test_put_rejects_unknown_field(client: Client) -> None:
    status, body = client.request("PUT", "/users/1", {"nmae": "typo"})
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "nmae"]


def test_delete_user(client: Client) -> None:
    assert client.request("DELETE", "/users/2") == (200, {"deleted": True})
    assert client.request("GET", "/users/2")[0] == 500


def test_raising_function_is_a_500_without_traceback(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="runpod_flash.runtime"):
        status, body = client.request("GET", "/users/999")
    assert (status, body) == (500, {"error": "User 999 not found", "error_type": "UserNotFound"})
    logged = [r for r in caplog.records if r.name == "runpod_flash.runtime" and r.exc_info]
    assert logged and logged[0].exc_info[0].__name__ == "UserNotFound"


def test_http_exception_keeps_its_status(
    app_dir: Path, serve: Callable[[Any], Client]
) -> None:
    (app_dir / "teapot_service.py").write_text(
        "from fastapi import HTTPException\n\n"
        "def brew():\n"
        "    raise HTTPException(status_code=418, detail='short and stout')\n"
    )
    manifest = _manifest()
    manifest["resources"]["user-service"]["functions"].append(
        {"name": "brew", "module": "teapot_service", "is_async": False, "is_class": False,
         "http_method": "POST", "http_path": "/brew"}
    )
    (app_dir / "flash_manifest.json").write_text(json.dumps(manifest))
    client = serve(create_deployed_app(app_dir, "user-service"))
    assert client.request("POST", "/brew") == (418, {"detail": "short and stout"})


def test_missing_field_is_422_naming_it(client: Client) -> None:
    status, body = client.request("POST", "/users", {"name": "NoEmail"})
    assert status == 422
    assert [error["loc"] for error in body["detail"]] == [["body", "email"]]


def test_ill_typed_path_parameter_is_422(client: Client) -> None:
    status, body = client.request("GET", "/users/abc")
    assert status == 422
    assert body["detail"][0]["loc"] == ["path", "user_id"]


def test_invalid_json_is_a_client_error(client: Client) -> None:
    status, _ = client.request("POST", "/users", b'{"name": "x", ', headers=JSON)
    assert 400 <= status < 500


def test_json_array_body_is_422(client: Client) -> None:
    status, _ = client.request("POST", "/users", ["Dan", "dan@example.com"])
    assert status == 422


def test_oversize_body_is_413(app_dir: Path, serve: Callable[[Any], Client]) -> None:
    client = serve(create_deployed_app(app_dir, "user-service", max_body_bytes=1000))
    big = {"name": "x" * 2000, "email": "big@example.com"}
    assert client.request("POST", "/users", big) == (
        413, {"error": "request body over 1000 bytes"}
    )
    chunked = iter([json.dumps(big).encode()[i:i + 500] for i in range(0, 2100, 500)])
    assert client.request("POST", "/users", chunked, headers=JSON)[0] == 413
    status, body = client.request("POST", "/users", {"name": "ok", "email": "ok@example.com"})
    assert status == 200
    assert body["name"] == "ok"


def test_declared_oversize_is_refused_before_the_body_arrives(
    app_dir: Path, serve: Callable[[Any], Client]
) -> None:
    client = serve(create_deployed_app(app_dir, "user-service", max_body_bytes=1000))
    with socket.create_connection(("127.0.0.1", client.port), timeout=5) as sock:
        sock.sendall(
            b"POST /users HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n"
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 413 ")


def test_execute_is_not_served(client: Client) -> None:
    assert client.request("POST", "/execute", {"function_name": "get_user"})[0] == 404
    assert client.request("GET", "/execute")[0] == 404


def test_docs_and_openapi(client: Client) -> None:
    status, page = client.request("GET", "/docs")
    assert status == 200
    assert "swagger-ui" in page.lower()
    status, schema = client.request("GET", "/openapi.json")
    assert status == 200
    assert schema["info"]["title"] == "user-service"
    operations = {
        (method.upper(), path) for path, item in schema["paths"].items() for method in item
    }
    assert operations == {(method, path) for _, _, method, path in ROUTES}


def test_wrapped_functions_are_unwrapped_without_worker_env(
    app_dir: Path, serve: Callable[[Any], Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLASH_WORKER_ID")
    client = serve(create_deployed_app(app_dir, "user-service"))
    assert client.request("GET", "/users/1")[1]["name"] == "Alice"


def test_unknown_resource_is_refused(app_dir: Path) -> None:
    with pytest.raises(RuntimeError, match=r"'other-service' is not in .*user-service"):
        create_deployed_app(app_dir, "other-service")


def test_queue_resource_is_refused(app_dir: Path) -> None:
    (app_dir / "flash_manifest.json").write_text(json.dumps(_manifest(is_load_balanced=False)))
    with pytest.raises(RuntimeError, match="not load-balanced"):
        create_deployed_app(app_dir, "user-service")


def test_import_error_names_module_and_resource(app_dir: Path) -> None:
    (app_dir / "flash_manifest.json").write_text(json.dumps(_manifest(module="no_such_mod")))
    with pytest.raises(RuntimeError, match="'no_such_mod' for resource 'user-service'"):
        create_deployed_app(app_dir, "user-service")
