"""A pre-imported worker template: `python -m runpod_flash.runtime.zygote`.

Importing FastAPI, uvicorn and the runtime takes most of a worker's cold start, so the
platform keeps one of these per interpreter and asks it to fork workers: a forked worker
starts with everything imported. Single-threaded on purpose (a fork copies one thread).

Protocol, one JSON object per line. In (stdin): `{"id", "env", "cwd", "log"}`.
Out (stdout): `{"ready": true}` once imported, `{"id", "pid", "start"}` once forked (`start`:
the child's `process_start`, read before it can be reaped),
`{"exit": pid, "code": n}` when a worker ends.
EOF on stdin (the platform went away) ends the zygote.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import sys
from typing import Any

PRELOAD = (
    "fastapi", "uvicorn", "uvloop", "httptools", "cloudpickle", "pydantic", "starlette.routing",
    "runpod_flash.resources", "runpod_flash.decorator", "runpod_flash.runtime.__main__",
    "runpod_flash.runtime.app", "runpod_flash.runtime.server", "runpod_flash.runtime.executor",
    "runpod_flash.runtime.deployed", "runpod_flash.runtime.queue_worker",
    "runpod_flash.stubs.live", "runpod_flash.http.blocking",
)


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # a missing optional module only costs its import later
            continue


def _become_worker(request: dict[str, Any], selector: selectors.BaseSelector,
                   keep: set[int]) -> None:
    """In the forked child: a fresh session, the worker's cwd, env and log; then run."""
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    selector.close()
    for fd in keep:
        os.close(fd)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the process's own)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]
    os.environ.clear()
    os.environ.update(request["env"])
    from runpod_flash.runtime.__main__ import main

    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
        os._exit(code)
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot, from /proc), or None if it is gone
    (or there is no /proc). With its pid this names one process, never a later one that is
    given the same pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])  # field 22, after "pid (comm)"


def _send(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def serve() -> None:
    _preload()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "request")
    selector.register(wake_read, selectors.EVENT_READ, "child")
    _send({"ready": True})
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                os.read(wake_read, 4096)
                _reap()
                continue
            data = os.read(0, 65536)
            if not data:  # the platform is gone: so are we (workers follow by parent watch)
                os._exit(0)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _become_worker(request, selector, {wake_read, wake_write})
                _send({"id": request["id"], "pid": pid, "start": process_start(pid)})


if __name__ == "__main__":
    serve()
