"""`flash run`: edit-to-new-code time and warm call overhead, measured side by side in one run.

Starts `flash run` on a small project (its own FLASH_HOME and platform) and prints:
- edit -> first response with the new code, over several saved edits (the file watcher, the
  scan, a spare server process importing the new version and taking over the socket), and
  next to it what the in-process alternative costs (re-import the module and rebuild the
  app in one process; not used, see runpod_flash/devserver/session.py);
- a warm call of the same function through the dev server (HTTP, keep-alive) and from a
  script (the SDK directly), for a load-balanced and a queue function: p50, p99, overhead.

    python benchmarks/dev_reload.py [--edits 8] [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timing import percentiles, timed

PROJECT = {
    "bench.py": textwrap.dedent('''
        from runpod_flash import CpuLiveLoadBalancer, remote

        api = CpuLiveLoadBalancer(name="bench-dev-api", idleTimeout=300)

        VERSION = 0


        @remote(api, method="POST", path="/version")
        async def version() -> int:
            return VERSION


        @remote(api, method="POST", path="/noop")
        async def noop() -> None:
            return None
    '''),
    "jobs.py": textwrap.dedent('''
        from runpod_flash import CpuLiveServerless, remote

        jobs = CpuLiveServerless(name="bench-dev-jobs", idleTimeout=300)


        @remote(jobs)
        def qnoop() -> None:
            return None
    '''),
}
TARGETS = {"reload_max_s": 1.0, "lb_overhead_ms": 2.0, "qb_overhead_ms": 3.0}
EDIT_PAUSE_S = 2.0  # a developer's pace: the spare server of the last reload is ready


class DevServer:
    """`flash run --port 0` in the project, with a kept-alive HTTP connection to it."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        # Its output goes to a file: a pipe would need a reader thread in this process,
        # competing with the measurements for the GIL.
        self.log = project.parent / f"{project.name}-flash-run.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runpod_flash.cli", "run", "--port", "0"], cwd=project,
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (found := re.search(r"Flash Dev Server on http://([\d.]+):(\d+)",
                                      self.output())):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("flash run did not start:\n" + self.output())
            time.sleep(0.05)
        self.host, self.port = found.group(1), int(found.group(2))
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def post(self, path: str, body: bytes = b"{}") -> Any:
        """POST on the kept-alive connection; reconnect once if a reload closed it."""
        for attempt in range(2):
            try:
                self.connection.request("POST", path, body,
                                        {"Content-Type": "application/json"})
                response = self.connection.getresponse()
                payload = json.loads(response.read())
                if response.status != 200:
                    raise RuntimeError(f"POST {path}: {response.status} {payload}")
                return payload
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise
        return None

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def save(path: Path, text: str) -> None:
    """Save atomically, as editors do."""
    scratch = path.with_name(f".{path.name}.saving")
    scratch.write_text(text)
    os.replace(scratch, path)


def edit_to_new_code(server: DevServer, project: Path, edits: int) -> list[float]:
    """Seconds from saving an edit to the first response computed by the new code."""
    source = project / "bench.py"
    samples = []
    for number in range(1, edits + 1):
        time.sleep(EDIT_PAUSE_S)
        text = re.sub(r"VERSION = \d+", f"VERSION = {number}", source.read_text())
        started = time.perf_counter()
        save(source, text)
        deadline = started + 30
        while server.post("/bench/version") != number:
            if time.perf_counter() > deadline:
                raise RuntimeError("the edit was never served:\n" + server.output())
            time.sleep(0.002)
        samples.append(time.perf_counter() - started)
    return samples


def in_process_reload(project: Path, rounds: int) -> list[float]:
    """The alternative: re-import the edited module and rebuild the app in this process."""
    import io

    from runpod_flash.build.scanner import FunctionDecl
    from runpod_flash.devserver.app import serving_app
    from runpod_flash.devserver.calls import EndpointTracker
    from runpod_flash.devserver.routes import plan_routes
    from runpod_flash.devserver.scan import scan

    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        project_scan = scan(project)
        for module in {fn.module for fn in project_scan.functions}:
            sys.modules.pop(module, None)
        found: list[tuple[FunctionDecl, Any]] = [
            (fn, getattr(importlib.import_module(fn.module), fn.name))
            for fn in project_scan.functions
        ]
        serving_app(plan_routes(found), EndpointTracker(lambda *_: None), io.StringIO())
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=8)
    parser.add_argument("--calls", type=int, default=500)
    options = parser.parse_args()

    home = tempfile.mkdtemp(prefix="flash-bench-home-")
    project = Path(tempfile.mkdtemp(prefix="flash-bench-dev-"))
    for name, text in PROJECT.items():
        (project / name).write_text(text)
    os.environ.update({"FLASH_HOME": home, "FLASH_PLATFORM_PORT": "0"})
    os.chdir(project)  # the script's calls use the same live endpoints as the dev server's
    sys.path.insert(0, str(project))
    server = DevServer(project, dict(os.environ))
    try:
        bench, jobs = importlib.import_module("bench"), importlib.import_module("jobs")
        loop = asyncio.new_event_loop()
        series: dict[str, list[float]] = {name: [] for name in
                                          ("lb dev", "lb script", "qb dev", "qb script")}
        calls: dict[str, Callable[[], object]] = {
            "lb dev": lambda: server.post("/bench/noop"),
            "lb script": lambda: loop.run_until_complete(bench.noop()),
            "qb dev": lambda: server.post("/jobs/runsync"),
            "qb script": jobs.qnoop,
        }
        for call in calls.values():  # warm-up: workers started, connections open
            timed(call, max(5, options.calls // 10))
        rounds = 10  # interleaved, so drift on a noisy machine hits every series alike
        for _ in range(rounds):
            for name, call in calls.items():
                series[name] += timed(call, max(1, options.calls // rounds))
        loop.close()
        reloads = edit_to_new_code(server, project, options.edits)
        in_process = in_process_reload(project, options.edits)
    finally:
        server.stop()
        subprocess.run([sys.executable, "-m", "runpod_flash.cli", "platform", "stop"],
                       capture_output=True, timeout=60)

    reload_p50, reload_max = statistics.median(reloads), max(reloads)
    print(f"edits: {options.edits}, calls per series: {options.calls}")
    print(f"edit -> first response with new code   p50 {reload_p50:.3f} s  max "
          f"{reload_max:.3f} s  (spare server process takes over)")
    print(f"in-process re-import + app rebuild     p50 {statistics.median(in_process):.3f} s"
          "  (alternative, not used: stale worker namespaces)")
    overheads = {}
    for kind in ("lb", "qb"):
        dev_p50, dev_p99 = percentiles(series[f"{kind} dev"])
        script_p50, script_p99 = percentiles(series[f"{kind} script"])
        overheads[kind] = dev_p50 - script_p50
        label = "load-balanced" if kind == "lb" else "queue      "
        print(f"{label} via dev server  p50 {dev_p50:.3f} ms  p99 {dev_p99:.3f} ms | "
              f"from a script p50 {script_p50:.3f} ms  p99 {script_p99:.3f} ms | "
              f"overhead p50 {overheads[kind]:+.3f} ms")
    checks = [
        ("edit -> new code <= 1 s (every edit)", reload_max <= TARGETS["reload_max_s"]),
        ("dev server overhead, load-balanced call <= 2 ms (p50)",
         overheads["lb"] <= TARGETS["lb_overhead_ms"]),
        ("dev server overhead, queue call <= 3 ms (p50)",
         overheads["qb"] <= TARGETS["qb_overhead_ms"]),
    ]
    for name, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


if __name__ == "__main__":
    main()
