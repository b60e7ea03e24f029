"""Per-call capture of a worker's stdout, stderr and log records.

Calls run concurrently on one worker, so output is routed by a context variable rather than
by swapping `sys.stdout`: each call sees only what it printed, and the worker's own log file
still gets everything.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

# (stream name, text) chunks of the call running in this context, or None outside a call.
_captured: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "flash_captured_output", default=None
)


class _RoutedStream:
    """A text stream that copies writes into the current call's capture buffer."""

    def __init__(self, name: str, target: TextIO) -> None:
        self._name = name
        self._target = target

    def write(self, text: str) -> int:
        buffer = _captured.get()
        if buffer is not None and text:
            buffer.append((self._name, text))
        return self._target.write(text)

    def __getattr__(self, attribute: str):  # flush, fileno, isatty, encoding ...
        return getattr(self._target, attribute)


class _CaptureHandler(logging.Handler):
    """Sends log records emitted during a call back to the caller (as stderr text)."""

    def emit(self, record: logging.LogRecord) -> None:
        buffer = _captured.get()
        if buffer is not None:
            buffer.append(("stderr", self.format(record) + "\n"))


def install() -> None:
    """Route stdout/stderr and root logging through the capture; call once per worker."""
    log_file = sys.stderr
    sys.stdout = _RoutedStream("stdout", sys.stdout)  # type: ignore[assignment]
    sys.stderr = _RoutedStream("stderr", sys.stderr)  # type: ignore[assignment]
    to_caller = _CaptureHandler()
    to_caller.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    to_log_file = logging.StreamHandler(log_file)
    to_log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(to_caller)
    root.addHandler(to_log_file)
    root.setLevel(min(root.level, logging.INFO))


@contextmanager
def capture() -> Iterator[list[tuple[str, str]]]:
    """Collect the output of the code run inside (and of threads it starts via to_thread)."""
    buffer: list[tuple[str, str]] = []
    token = _captured.set(buffer)
    try:
        yield buffer
    finally:
        _captured.reset(token)
