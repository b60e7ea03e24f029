"""Heads already parsed, by their bytes.

A client on a kept-alive connection sends the same request head again and again, and a
server answers it with the same response head (the `Date` changes once a second): parsing
is a function of the bytes, so its result can be looked up instead of computed again. The
callers decide what a head maps to and when bytes are a whole head; this holds the bound.
"""

from __future__ import annotations

from typing import Generic, TypeVar

Parsed = TypeVar("Parsed")


class HeadMemo(Generic[Parsed]):
    """Bounded in entries and in the size of each head; cleared when full (heads that
    recur are back after one parse each)."""

    MAX_ENTRIES = 1024
    MAX_HEAD_BYTES = 4096

    def __init__(self) -> None:
        self._parsed: dict[bytes, Parsed] = {}

    def get(self, head: bytes) -> Parsed | None:
        return self._parsed.get(head)

    def add(self, head: bytes, parsed: Parsed) -> None:
        if len(head) > self.MAX_HEAD_BYTES:
            return
        if len(self._parsed) >= self.MAX_ENTRIES:
            self._parsed.clear()
        self._parsed[head] = parsed

    def __len__(self) -> int:
        return len(self._parsed)
