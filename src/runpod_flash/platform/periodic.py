"""A background task that runs one step every interval while the platform runs; a failing
step is logged and the next one still runs."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("runpod_flash.platform")


class Periodic:
    def __init__(self, step: Callable[[], Awaitable[Any] | Any], interval_s: float,
                 what: str) -> None:
        self._step = step
        self.interval_s = interval_s
        self._what = what
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                result = self._step()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a bug in one step must not stop the next ones
                logger.exception("%s failed", self._what)
