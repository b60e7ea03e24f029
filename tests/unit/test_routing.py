"""Which worker takes a request: the ready one of the current version with the fewest in
flight; waiting (bounded) while workers start; failing fast when they cannot."""

from __future__ import annotations

import asyncio
import time

import pytest
from fleet_fakes import (
    FakeProvider,
    PingServer,
    make_endpoint,
    placed,
    platform,
    ready,
    started,
    until,
)

from runpod_flash.platform import routing as routing_module
from runpod_flash.platform.routing import Backlogged, EndpointFailed, NoWorkerAvailable, Router
from runpod_flash.platform.store import Store


@pytest.mark.asyncio
async def test_the_ready_worker_of_the_current_version_with_fewest_in_flight_is_picked(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, workersMax=5)
        busy, less_busy, old, starting = (
            await ready(sup, endpoint, ping),
            await ready(sup, endpoint, ping),
            await ready(sup, endpoint, ping),
            await started(sup.fleet, endpoint),
        )
        busy.in_flight, less_busy.in_flight = 2, 1
        old.version = "previous"  # a worker of the version being replaced
        assert starting.state == "starting"

        assert sup.router.try_acquire(endpoint) is less_busy
        assert less_busy.in_flight == 2
        assert sup.router.try_acquire(endpoint) in (busy, less_busy)  # a tie now
        assert old.in_flight == 0 and starting.in_flight == 0  # never picked

        endpoint.status = "building"
        assert sup.router.try_acquire(endpoint) is None


@pytest.mark.asyncio
async def test_release_decrements_and_marks_the_worker_active(store: Store) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet)
        worker = await ready(sup, endpoint, ping)
        assert sup.router.try_acquire(endpoint) is worker and worker.in_flight == 1
        before = time.monotonic()
        Router.release(worker)
        assert worker.in_flight == 0 and worker.last_active >= before


@pytest.mark.asyncio
async def test_a_worker_to_avoid_is_taken_only_when_it_is_the_only_one(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, workersMax=2)
        first = await ready(sup, endpoint, ping)
        second = await ready(sup, endpoint, ping)
        for avoid, other in ((first, second), (second, first)):
            other.in_flight = 3  # busier, still preferred to the one that just failed
            assert await sup.router.acquire(endpoint, 1, avoid=avoid) is other
            other.in_flight = 0

        sup.fleet.begin_stop(second)
        assert await sup.router.acquire(endpoint, 1, avoid=first) is first


@pytest.mark.asyncio
async def test_a_busy_worker_makes_room_for_another_up_to_workers_max(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, workersMax=2, scalerValue=1)
        worker = await ready(sup, endpoint, ping)
        assert sup.router.try_acquire(endpoint) is worker
        assert len(endpoint.workers) == 1
        assert sup.router.try_acquire(endpoint) is worker  # still served here...
        assert len(endpoint.workers) == 2  # ...while a second worker starts
        worker.in_flight = 5
        sup.router.try_acquire(endpoint)
        assert len(endpoint.workers) == 2


@pytest.mark.asyncio
async def test_acquire_waits_for_a_worker_to_become_ready(store: Store) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet)  # scaled to zero
        waiter = asyncio.create_task(sup.router.acquire(endpoint, 5))
        await until(lambda: provider.processes)  # the waiting request started a worker
        (worker,) = endpoint.workers.values()
        assert endpoint.waiting == 1 and not waiter.done()
        assert sup.health.mark_ready(worker.id, ping.port)
        assert await asyncio.wait_for(waiter, 2) is worker
        assert worker.in_flight == 1 and endpoint.waiting == 0


@pytest.mark.asyncio
async def test_acquire_gives_up_with_no_worker_available(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "slow")
        started_at = time.monotonic()
        with pytest.raises(NoWorkerAvailable, match="endpoint 'slow'"):
            await sup.router.acquire(endpoint, 0.1)
        assert 0.1 <= time.monotonic() - started_at < 1.5
        assert endpoint.waiting == 0
        assert len(endpoint.workers) == 1  # it did try: one is still starting


@pytest.mark.asyncio
async def test_too_many_waiting_requests_are_refused_as_backlogged(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(routing_module, "MAX_BACKLOG", 2)
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "busy", status="building")
        waiters = [asyncio.create_task(sup.router.acquire(endpoint, 5)) for _ in range(2)]
        await until(lambda: endpoint.waiting == 2)
        with pytest.raises(Backlogged, match="'busy' has 2 requests waiting"):
            await sup.router.acquire(endpoint, 5)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert endpoint.waiting == 0  # a caller that left no longer counts


@pytest.mark.asyncio
async def test_callers_fail_fast_while_workers_crash_on_start(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "crashy")
        waiter = asyncio.create_task(sup.router.acquire(endpoint, 30))
        await until(lambda: provider.processes)
        (worker,) = endpoint.workers.values()
        placed(provider, worker).exit(1)
        with pytest.raises(EndpointFailed, match="exited with code 1") as failed:
            await asyncio.wait_for(waiter, 2)  # not after the 30 s wait
        assert "1 in a row" in str(failed.value)
        with pytest.raises(EndpointFailed, match="workers fail to start"):
            await asyncio.wait_for(sup.router.acquire(endpoint, 30), 2)


@pytest.mark.asyncio
async def test_a_failed_endpoint_fails_its_callers_with_its_error(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, status="failed")
        endpoint.error = "pip could not install nopackage"
        with pytest.raises(EndpointFailed, match="nopackage"):
            await asyncio.wait_for(sup.router.acquire(endpoint, 30), 2)


@pytest.mark.asyncio
async def test_a_provider_that_cannot_start_workers_is_not_retried_in_a_tight_loop(
    store: Store,
) -> None:
    provider = FakeProvider()
    provider.start_error = OSError("python3.99: not found")
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "nopython")
        with pytest.raises(EndpointFailed, match=r"python3\.99: not found"):
            await sup.router.acquire(endpoint, 0.2)
        assert len(provider.launches) == 1
