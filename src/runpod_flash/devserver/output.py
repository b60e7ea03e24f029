"""Worker output in the dev server's terminal, each line prefixed with its endpoint's name.

The SDK replays a remote call's prints and log lines on the caller's sys.stdout/sys.stderr.
A route sets `current_endpoint` before calling; the streams installed here prefix the lines
written in that context (threads the call runs in inherit it), and leave others untouched.
"""

from __future__ import annotations

import contextvars
import io
import sys
import threading
from typing import TextIO

current_endpoint: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "flash_dev_endpoint", default=None
)


class PrefixedStream(io.TextIOBase):
    """A text stream that starts each line written under an endpoint with `[endpoint] `."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw
        self._at_line_start = True
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        name = current_endpoint.get()
        with self._lock:
            if name is None or not text:
                out = text
            else:
                tag = f"[{name}] "
                lines = text.splitlines(keepends=True)
                out = "".join(
                    (tag if i or self._at_line_start else "") + line
                    for i, line in enumerate(lines)
                )
            if text:
                self._at_line_start = text.endswith("\n")
            self.raw.write(out)
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()


def install() -> TextIO:
    """Prefix this process's stdout and stderr; returns the raw stdout for the server's own
    lines (request log), which are never prefixed."""
    raw_out = sys.stdout
    sys.stdout = PrefixedStream(raw_out)  # type: ignore[assignment]
    sys.stderr = PrefixedStream(sys.stderr)  # type: ignore[assignment]
    return raw_out
