"""Worker output in the dev server's terminal as it is written, each line prefixed with its
endpoint's name.

The session follows the logs of the live endpoints its server processes call (they report
each one as soon as it is provisioned), through the control API `flash logs -f` uses, every
0.1 s; the SDK's end-of-call replay is off in those processes, so each line shows once.
Only a cursor (per-file offsets) is kept per endpoint.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from urllib.parse import quote

from runpod_flash import control

POLL_S = 0.1
RETRY_S = 1.0  # after the platform did not answer
FIRST_TAIL = 1000  # lines of an endpoint this session provisioned, from its start
_WORKER_TAG = re.compile(r"^\[[^\]]*\] ")  # the control API's `[worker-id] ` prefix


class LogFollower:
    """A thread printing new worker log lines of the endpoints added, until stopped."""

    def __init__(self, platform: control.Platform, write: Callable[[str], None],
                 preexisting: set[str]) -> None:
        self._platform = platform
        self._write = write
        self._preexisting = preexisting  # their old lines are not ours: start at the end
        self._followed: dict[str, tuple[str, dict[str, int] | None]] = {}  # id -> name, cursor
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="flash-run-logs")

    def start(self) -> None:
        self._thread.start()

    def add(self, endpoint_id: str, name: str) -> None:
        with self._lock:
            if endpoint_id not in self._followed:
                cursor = self._end(endpoint_id) if endpoint_id in self._preexisting else None
                self._followed[endpoint_id] = (name, cursor)

    def stop(self) -> None:
        """Stop polling, then print what was written since the last poll."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with contextlib.suppress(Exception):
            self.poll()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except control.PlatformError:
                self._stop.wait(RETRY_S)
                continue
            self._stop.wait(POLL_S)

    def _end(self, endpoint_id: str) -> dict[str, int] | None:
        with contextlib.suppress(control.PlatformError):
            return self._platform.call("GET", f"/api/v1/endpoints/{endpoint_id}/logs?tail=1",
                                       timeout=5)["cursor"]
        return None

    def poll(self) -> None:
        """One pass over the followed endpoints; an endpoint that is gone is dropped."""
        with self._lock:
            followed = list(self._followed.items())
        for endpoint_id, (name, cursor) in followed:
            query = f"tail={FIRST_TAIL}" if cursor is None else \
                f"cursor={quote(json.dumps(cursor))}"
            try:
                answer = self._platform.call(
                    "GET", f"/api/v1/endpoints/{endpoint_id}/logs?{query}", timeout=5)
            except control.PlatformError as exc:
                if " answered 404" in str(exc):
                    with self._lock:
                        self._followed.pop(endpoint_id, None)
                    continue
                raise
            if answer["lines"]:
                self._write("".join(f"[{name}] {_WORKER_TAG.sub('', line, 1)}\n"
                                    for line in answer["lines"]))
            with self._lock:
                if endpoint_id in self._followed:
                    self._followed[endpoint_id] = (name, answer["cursor"] or {})
