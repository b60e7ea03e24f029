"""The fast lane's deadline sweep: what replaces a timer per request and per idle connection."""

from __future__ import annotations

import asyncio

import pytest

from runpod_flash.platform.fastlane import Deadlines


@pytest.mark.asyncio
async def test_a_deadline_fires_once_after_its_time_and_a_discarded_one_never() -> None:
    deadlines = Deadlines()
    fired: list[str] = []
    done = asyncio.Event()
    deadlines.add("due", 0.05, lambda: (fired.append("due"), done.set()))
    deadlines.add("kept", 0.05, lambda: fired.append("kept"))
    deadlines.add("later", 60, lambda: fired.append("later"))
    deadlines.discard("kept")
    await asyncio.wait_for(done.wait(), timeout=5)
    assert fired == ["due"]
    deadlines.discard("later")


@pytest.mark.asyncio
async def test_the_sweep_stops_when_nothing_is_due_and_rearms_on_the_next_deadline() -> None:
    deadlines = Deadlines()
    first, second = asyncio.Event(), asyncio.Event()
    deadlines.add("a", 0.01, first.set)
    await asyncio.wait_for(first.wait(), timeout=5)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while deadlines._armed and loop.time() < deadline:  # the sweep ends with no deadlines
        await asyncio.sleep(0.02)
    assert not deadlines._armed
    deadlines.add("b", 0.01, second.set)
    await asyncio.wait_for(second.wait(), timeout=5)


@pytest.mark.asyncio
async def test_re_adding_a_key_moves_its_deadline() -> None:
    deadlines = Deadlines()
    deadlines.add("conn", 0.01, lambda: None)
    deadlines.add("conn", 60, lambda: None)  # the connection was used again: a new deadline
    due, _ = deadlines._due["conn"]
    assert due > asyncio.get_running_loop().time() + 30 and len(deadlines._due) == 1
    deadlines.discard("conn")
