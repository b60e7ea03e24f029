"""`flash run` as a user runs it: a subprocess serving a project over real HTTP, its functions
running in live workers of a real platform (in this module's own FLASH_HOME), hot reload on
real file edits, and Ctrl-C clean-up checked against the platform's worker pids."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    flash,
    pid_alive,
    platform_status,
    run_python,
    stop_platform,
    wait_for,
    worker_pids,
)

PROJECTS = Path(__file__).parent / "projects"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class DevServer:
    """`flash run --port 0` in `project`; its output collected as it comes."""

    def __init__(self, project: Path, home: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runpod_flash.cli", "run", "--port", "0", *args],
            cwd=project, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "FLASH_HOME": str(home), "FLASH_PLATFORM_PORT": "0"},
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        found = self.wait_for_output(r"Flash Dev Server on (http://\S+)", START_TIMEOUT_S)
        self.url = found.group(1)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_for_output(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        def seen() -> re.Match[str] | None:
            if self.process.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"flash run exited ({self.process.returncode}):\n"
                                     f"{self.output}")
            return re.search(pattern, self.output)

        try:
            return wait_for(seen, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- flash run output ---\n{self.output}") from None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload.decode(errors="replace")

    def interrupt(self, signum: int = signal.SIGINT) -> int:
        """Ctrl-C as a terminal sends it (or another signal); the exit code, bounded wait."""
        self.process.send_signal(signum)
        code = self.process.wait(STOP_TIMEOUT_S)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        """Teardown: SIGINT, then SIGKILL if it has not exited in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This module's FLASH_HOME: its own platform, stopped at the end."""
    path = tmp_path_factory.mktemp("dev-home")
    yield path
    stop_platform(path)


def copy_project(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("dev-project") / name
    shutil.copytree(PROJECTS / name, target)
    return target


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_project("dev_app", tmp_path_factory)
    (project / ".env").write_text("DEV_APP_GREETING=Hello\n")  # read by hello.py's config
    return project


@pytest.fixture(scope="module")
def server(app_dir: Path, home: Path) -> Iterator[DevServer]:
    running = DevServer(app_dir, home)
    yield running
    running.stop()


def test_startup_loads_env_and_lists_every_route(server: DevServer) -> None:
    assert "Loaded DEV_APP_GREETING from .env" in server.output
    for method, path, function in [
        ("POST", "/hello/runsync", "hello"),
        ("POST", "/01_getting_started/calc/worker/add/runsync", "add"),
        ("POST", "/01_getting_started/calc/worker/divide/runsync", "divide"),
        ("GET", "/api/users/{user_id}", "get_user"),
        ("POST", "/api/count", "count"),
        ("POST", "/reloadable/runsync", "version"),
        ("POST", "/model/predict/runsync", r"Model\.predict"),
        ("POST", "/model/reset/runsync", r"Model\.reset"),
    ]:
        assert re.search(rf"{method}\s+{re.escape(server.url + path)}\s+{function}",
                         server.output), server.output


def test_queue_function_alone_in_its_file(server: DevServer) -> None:
    status, body = server.call("POST", "/hello/runsync", {"input": {"name": "Ann"}})
    assert status == 200, body
    assert body["status"] == "COMPLETED" and body["output"] == {"message": "Hello, Ann!"}
    assert body["id"]
    # A bare object whose keys are not parameter names is the first parameter, whole.
    status, body = server.call("POST", "/hello/runsync", {"name": "Bob"})
    assert (status, body["output"]) == (200, {"message": "Hello, Bob!"})
    server.wait_for_output(r"\[dev-app-hello\] greeting Ann")  # worker output, tagged
    server.wait_for_output(r"POST /hello/runsync -> 200 in [\d.]+ ms")  # the request log


def test_worker_output_streams_while_the_call_runs(server: DevServer, tmp_path: Path) -> None:
    marker = tmp_path / "marker-streams"
    answer: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: answer.update(result=server.call(
        "POST", "/waits/runsync", {"input": {"marker": str(marker)}})))
    caller.start()
    try:
        line = r"\[dev-app-waits\] waiting for the marker marker-streams\n"
        server.wait_for_output(line, timeout=60)  # the call is still waiting for the marker
        assert "result" not in answer
    finally:
        marker.touch()
        caller.join(70)
    status, body = answer["result"]
    assert (status, body["status"], body["output"]) == (200, "COMPLETED", True)
    server.wait_for_output(r"POST /waits/runsync -> 200")
    time.sleep(0.5)  # more than the log polls' interval: a second copy would show by now
    assert len(re.findall(line, server.output)) == 1, server.output


def test_several_queue_functions_in_a_numbered_folder(server: DevServer) -> None:
    status, body = server.call("POST", "/01_getting_started/calc/worker/add/runsync",
                               {"input": {"a": "2", "b": 3}})
    assert (status, body["status"], body["output"]) == (200, "COMPLETED", 5)
    status, body = server.call("POST", "/01_getting_started/calc/worker/add/runsync", {"a": 4})
    assert (status, body["output"]) == (200, 5)


def test_class_methods_are_routes_on_one_instance(server: DevServer) -> None:
    first = server.call("POST", "/model/predict/runsync", {"input": {"text": "hello there"}})
    second = server.call("POST", "/model/predict/runsync", {"text": "hi"})
    assert first[0] == second[0] == 200
    assert first[1]["output"] == {"label": "long", "calls": 1}
    assert second[1]["output"] == {"label": "short", "calls": 2}
    assert server.call("POST", "/model/reset/runsync", {})[1]["output"] == 0
    status, body = server.call("POST", "/model/predict/runsync", {"input": {"txt": "x"}})
    assert status == 422 and body["status"] == "FAILED"


def test_a_failing_function_answers_its_type_and_message(server: DevServer) -> None:
    status, body = server.call("POST", "/01_getting_started/calc/worker/divide/runsync",
                               {"input": {"a": 1, "b": 0}})
    assert status == 500
    assert body["status"] == "FAILED" and body["error_type"] == "ZeroDivisionError"
    assert body["error"] == "ZeroDivisionError: cannot divide 1.0 by zero"
    server.wait_for_output(r"divide failed: ZeroDivisionError: cannot divide 1\.0 by zero")
    status, body = server.call("POST", "/api/validate", {"text": " "})
    assert (status, body) == (422, {"error": "text must not be empty",
                                    "error_type": "ValueError"})


def test_load_balanced_routes_path_query_and_body(server: DevServer) -> None:
    assert server.call("GET", "/api/users/42?verbose=true") == (
        200, {"user_id": 42, "verbose": True})
    assert server.call("POST", "/api/echo", {"message": "hi", "times": 2}) == (
        200, {"echo": "hi hi"})
    status, body = server.call("GET", "/api/users/not-a-number")
    assert status == 422 and body["detail"][0]["loc"] == ["path", "user_id"]


def test_generator_route_streams_server_sent_events(server: DevServer) -> None:
    request = urllib.request.Request(server.url + "/api/count", data=b'{"upto": 3}',
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    assert [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")] \
        == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_index_docs_and_openapi(server: DevServer) -> None:
    status, index = server.call("GET", "/")
    assert status == 200 and index["docs"] == "/docs"
    assert {(r["method"], r["path"]) for r in index["routes"]} >= {
        ("POST", "/hello/runsync"), ("GET", "/api/users/{user_id}")}
    assert server.call("GET", "/ping") == (200, {"status": "healthy"})
    status, page = server.call("GET", "/docs")
    assert status == 200 and "swagger-ui" in page
    status, document = server.call("GET", "/openapi.json")
    assert document["info"]["title"] == "Flash Dev Server"
    hello = document["paths"]["/hello/runsync"]["post"]
    assert hello["tags"] == ["hello.py"] and hello["summary"] == "Greet the caller."
    add = document["paths"]["/01_getting_started/calc/worker/add/runsync"]["post"]
    assert add["tags"] == ["01_getting_started/calc/worker.py"]
    model = add["requestBody"]["content"]["application/json"]["schema"]["properties"]["input"]
    fields = document["components"]["schemas"][model["$ref"].rsplit("/", 1)[1]]["properties"]
    assert set(fields) == {"a", "b"}
    user = document["paths"]["/api/users/{user_id}"]["get"]
    assert {p["name"]: p["in"] for p in user["parameters"]} == {
        "user_id": "path", "verbose": "query"}


def _served_version(server: DevServer) -> str | None:
    status, body = server.call("POST", "/reloadable/runsync", {})
    return body["output"] if status == 200 else None


def edit(path: Path, old: str, new: str) -> None:
    """Save `path` with `old` replaced, atomically, as editors do (never half-written)."""
    text = path.read_text()
    assert old in text
    scratch = path.with_name(f".{path.name}.saving")
    scratch.write_text(text.replace(old, new))
    os.replace(scratch, path)


def test_hot_reload_serves_the_edited_function(server: DevServer, app_dir: Path) -> None:
    assert _served_version(server) == "version v1"
    edit(app_dir / "reloadable.py", 'VERSION = "v1"', 'VERSION = "v2"')
    # A helper's constant changed: the next calls run the new module, not the old one.
    wait_for(lambda: _served_version(server) == "version v2", timeout=15)
    server.wait_for_output(r"Reloaded in [\d.]+s")


def test_broken_edits_keep_the_last_good_version(server: DevServer, app_dir: Path) -> None:
    source = app_dir / "reloadable.py"
    served = _served_version(server)
    assert served is not None
    # A syntax error, found by the scan before anything is imported.
    edit(source, "def _label() -> str:", "def _label() -> str")
    server.wait_for_output(r"reloadable\.py:10: syntax error")
    assert _served_version(server) == served
    # A module that fails at import (NameError at line 7): the new server process reports it.
    edit(source, "def _label() -> str", "def _label() -> str:")
    edit(source, 'VERSION = "v', 'VERSION = undefined_name + "v')
    server.wait_for_output(r"Cannot import module 'reloadable' \(reloadable\.py:7\): NameError")
    assert _served_version(server) == served
    edit(source, 'VERSION = undefined_name + "v', 'VERSION = "fixed-v')
    fixed = served.replace("version v", "version fixed-v")
    wait_for(lambda: _served_version(server) == fixed, timeout=15)


def test_ctrl_c_stops_the_endpoints_it_started_and_no_others(
    tmp_path_factory: pytest.TempPathFactory, home: Path
) -> None:
    project = copy_project("dev_cleanup", tmp_path_factory)
    env = {"FLASH_HOME": str(home), "FLASH_PLATFORM_PORT": "0"}
    # Another caller (a script in the same folder) provisions the shared endpoint first.
    script = run_python(str(project / "shared.py"), env=env, cwd=project)
    assert script.returncode == 0 and "pong" in script.stdout, script.stderr
    shared_pids = worker_pids(platform_status(home), "dev-cleanup-shared")
    assert shared_pids

    dev = DevServer(project, home, "--auto-provision")
    try:
        # Provisioned before serving: the first worker is up before the first request.
        own_pids = worker_pids(platform_status(home), "dev-cleanup-own")
        assert own_pids
        status, body = dev.call("POST", "/shared/runsync", {})
        assert (status, body["status"], body["output"]) == (200, "COMPLETED", "pong")
        status, body = dev.call("GET", "/own/hi")
        assert (status, body) == (200, {"hi": True})
        assert worker_pids(platform_status(home), "dev-cleanup-own") == own_pids
        assert dev.interrupt() == 0
    finally:
        dev.stop()
    assert "Stopped live endpoints: dev-cleanup-own\n" in dev.output
    assert dev.output.rstrip().endswith("Server stopped")
    wait_for(lambda: not any(pid_alive(pid) for pid in own_pids), timeout=STOP_TIMEOUT_S)
    names = {endpoint["name"] for endpoint in platform_status(home)["endpoints"]}
    assert "dev-cleanup-own" not in names
    assert "dev-cleanup-shared" in names and all(pid_alive(pid) for pid in shared_pids)


def test_flash_init_then_flash_run_serves_the_readme_routes(
    tmp_path: Path, home: Path
) -> None:
    created = flash("init", "demo", cwd=tmp_path, env={"FLASH_HOME": str(home)})
    assert created.returncode == 0, created.stderr
    dev = DevServer(tmp_path / "demo", home)
    try:
        status, body = dev.call("POST", "/cpu_worker/runsync", {"input": {"name": "Flash"}})
        assert (status, body["status"]) == (200, "COMPLETED"), body
        assert body["output"]["message"] == "Hello, Flash!"
        status, body = dev.call("POST", "/lb_worker/process",
                                {"input_data": {"message": "hello"}})
        assert (status, body["status"], body["echo"]) == (200, "success", {"message": "hello"})
        assert dev.call("GET", "/lb_worker/health") == (200, {"status": "healthy"})
        assert dev.interrupt(signal.SIGTERM) == 0
        assert "Stopped live endpoints: demo-api, demo-cpu-worker\n" in dev.output
    finally:
        dev.stop()


def test_a_project_without_remote_functions_is_refused(tmp_path: Path, home: Path) -> None:
    (tmp_path / "main.py").write_text("print('not a Flash project')\n")
    result = flash("run", "--port", "0", cwd=tmp_path, env={"FLASH_HOME": str(home)},
                   timeout=60)
    assert result.returncode == 1
    assert "No @remote functions found." in result.stdout + result.stderr
