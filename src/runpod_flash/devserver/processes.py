"""The dev server's processes: one child per version of the project, and their socket.

A child runs `runpod_flash.devserver.child` in a new session (Ctrl-C reaches only the
`flash run` process, which stops the children itself), with the listening socket and a
status pipe passed by file descriptor; commands go to its stdin, reports come back on the
pipe as JSON lines and are queued as `("child", child, report)` events, the last one
`{"exited": code}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from runpod_flash.build import BuildError

STOP_GRACE_S = 8.0  # a child finishes in-flight requests within its own 5 s, then exits
_CHILD_CODE = ("import sys; sys.path.pop(0); from runpod_flash.devserver.child import main; "
               "sys.exit(main())")


class Child:
    """A server process: a spare until `go`, then serving one version of the project."""

    def __init__(self, project_dir: Path, listen_fd: int, events: queue.Queue[Any]) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_CODE, str(listen_fd), str(write_fd)],
                stdin=subprocess.PIPE, cwd=project_dir, pass_fds=(listen_fd, write_fd),
                start_new_session=True,  # Ctrl-C reaches the session, which stops us
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            os.close(write_fd)
        self.pid = self.process.pid
        self.prepared: dict[str, Any] = {}  # its routes and warnings, once loaded
        self.reader = threading.Thread(target=self._read, args=(read_fd, events), daemon=True,
                                       name=f"flash-run-child-{self.pid}")
        self.reader.start()

    def _read(self, fd: int, events: queue.Queue[Any]) -> None:
        with os.fdopen(fd, encoding="utf-8") as status:
            for line in status:
                with contextlib.suppress(ValueError):
                    events.put(("child", self, json.loads(line)))
        events.put(("child", self, {"exited": self.process.wait()}))

    def send(self, **command: Any) -> None:
        """One command on its stdin: `go` (load), `serve`, `close` (stop accepting)."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ValueError):  # it died: its exit is reported
            self.process.stdin.write(json.dumps(command).encode() + b"\n")
            self.process.stdin.flush()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask it to finish and exit (stdin closed, SIGTERM); SIGKILL after `grace_s`."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def listen(host: str, port: int) -> socket.socket:
    """The session's listening socket; a port in use is a one-line error naming the fix."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise BuildError(
            f"Cannot listen on {host}:{port}: {exc.strerror}; stop what uses the port or "
            "choose another with --port (or FLASH_PORT)"
        ) from None


