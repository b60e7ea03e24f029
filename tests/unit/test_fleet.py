"""The fleet's state machine: a worker is placed, watched until it exits, drained and stopped.

Only the provider (the OS boundary) is faked (`fleet_fakes`); the rest is real."""

from __future__ import annotations

import asyncio
import time

import pytest
from fleet_fakes import (
    PLATFORM_URL,
    FakeProvider,
    fleet_of,
    later,
    make_endpoint,
    placed,
    started,
    until,
)

from runpod_flash.platform import fleet as fleet_module
from runpod_flash.platform.credentials import Credentials
from runpod_flash.platform.fleet import Fleet
from runpod_flash.platform.store import Store
from runpod_flash.platform.volumes import Volumes

# -- placing ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_worker_no_node_can_hold_fails_a_live_endpoint_with_the_reason(
    store: Store,
) -> None:
    provider = FakeProvider(gpus=1)
    async with fleet_of(store, provider) as fleet:
        live = make_endpoint(fleet, "live-big", kind="live", gpuCount=2)
        woken = live.changed
        assert fleet.start_worker(live) is None
        assert live.status == "failed"
        assert live.error is not None and "asks for 2 GPUs" in live.error
        assert live.last_start_failure == live.error
        assert woken.is_set()  # callers waiting for a worker learn it at once
        assert not live.workers and not fleet.workers and not provider.launches

        deployed = make_endpoint(fleet, "big", gpuCount=2)
        assert fleet.start_worker(deployed) is None
        assert deployed.status == "ready"  # a running deployment is not failed by it
        assert "asks for 2 GPUs" in (deployed.last_start_failure or "")

        fits = make_endpoint(fleet, "fits", gpuCount=1)
        assert fleet.start_worker(fits) is not None


@pytest.mark.asyncio
async def test_a_started_worker_is_placed_with_its_own_credentials_and_forgotten_on_exit(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet)
        worker = await started(fleet, endpoint)
        process = placed(provider, worker)
        grant = fleet.credentials.for_worker(worker.id)
        assert grant is not None and grant.endpoint_id == endpoint.id
        assert worker.gateway_secret == grant.gateway_secret.encode()
        assert provider.launches[0].env["FLASH_WORKER_ID"] == worker.id
        assert worker.host == process.host and endpoint.stats["cold_starts"] == 1
        assert store.unfinished_workers() == [(process.pid, process.start)]

        worker.state = "ready"  # (how it gets there: test_health, test_presence...)
        process.exit(1)
        await until(lambda: worker.id not in fleet.workers)
        assert worker.state == "dead" and worker.id not in endpoint.workers
        assert fleet.credentials.for_worker(worker.id) is None  # its token stops working
        assert store.unfinished_workers() == []
        assert endpoint.start_failures == 0  # it had started fine: not a crash loop


@pytest.mark.asyncio
async def test_a_worker_exiting_before_ready_counts_as_a_start_failure_with_backoff(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet)
        first = await started(fleet, endpoint)
        before = time.monotonic()
        placed(provider, first).exit(3)
        await until(lambda: first.state == "dead")
        assert endpoint.start_failures == 1 and endpoint.stats["worker_failures"] == 1
        assert "exited with code 3 before it was ready" in (endpoint.last_start_failure or "")
        assert before + 0.5 <= endpoint.retry_start_at <= time.monotonic() + 0.5

        endpoint.last_start_failure = None
        second = await started(fleet, endpoint)
        before = time.monotonic()
        placed(provider, second).exit(4)
        await until(lambda: second.state == "dead")
        assert endpoint.start_failures == 2  # the pause doubles
        assert before + 1.0 <= endpoint.retry_start_at <= time.monotonic() + 1.0
        assert "code 4" in (endpoint.last_start_failure or "")

        fleet.started_fine(endpoint)
        assert endpoint.start_failures == 0 and endpoint.retry_start_at == 0.0
        assert endpoint.last_start_failure is None


@pytest.mark.asyncio
async def test_a_worker_not_ready_in_time_is_stopped_and_says_so(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet_module, "WORKER_START_TIMEOUT_S", 0.05)
    provider = FakeProvider()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet)
        worker = await started(fleet, endpoint)
        await until(lambda: worker.state == "dead")
        assert placed(provider, worker).stops  # stopped, not left running
        assert "was not ready after" in (endpoint.last_start_failure or "")
        assert endpoint.start_failures == 1


@pytest.mark.asyncio
async def test_a_worker_the_provider_cannot_start_is_dead_with_the_reason(
    store: Store,
) -> None:
    provider = FakeProvider()
    provider.start_error = OSError("python3.99: not found")
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet)
        worker = fleet.start_worker(endpoint)
        assert worker is not None
        await until(lambda: worker.state == "dead")
        assert worker.id not in fleet.workers
        assert "cannot start worker process: python3.99: not found" in (
            endpoint.last_start_failure or "")
        assert fleet.credentials.for_worker(worker.id) is None


# -- scaling ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_scale_starts_what_the_load_asks_but_never_past_workers_max(store: Store) -> None:
    provider = FakeProvider()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet, workersMax=2, scalerValue=1)
        endpoint.waiting = 5  # wants five
        fleet.scale(endpoint)
        assert len(endpoint.live_workers()) == 2
        fleet.scale(endpoint)
        assert len(endpoint.workers) == 2 and len(fleet.workers) == 2

        floor = make_endpoint(fleet, "floor", workersMin=3, workersMax=2)
        fleet.scale(floor)
        assert len(floor.workers) == 2  # workersMin is capped by workersMax too

        building = make_endpoint(fleet, "building", status="building", workersMin=1)
        fleet.scale(building)
        assert not building.workers  # no worker before its environment is built


@pytest.mark.asyncio
async def test_scale_waits_out_the_backoff_after_a_failed_start(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = FakeProvider()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet, workersMin=1)
        fleet.scale(endpoint)
        (first,) = endpoint.workers.values()
        await until(lambda: first.process is not None)
        placed(provider, first).exit(1)
        await until(lambda: not endpoint.workers)
        fleet.scale(endpoint)
        assert not endpoint.workers and len(provider.launches) == 1  # paused

        monkeypatch.setattr(fleet_module, "time", later(0.6))  # past the 0.5 s pause
        fleet.scale(endpoint)
        assert len(endpoint.workers) == 1
        await until(lambda: len(provider.launches) == 2)


# -- stopping ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_drain_lets_in_flight_requests_finish_then_stops_the_worker(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet)
        worker = await started(fleet, endpoint)
        worker.state, worker.in_flight = "ready", 1
        process = placed(provider, worker)
        in_flight_at_stop: list[int] = []
        process.on_stop = lambda: in_flight_at_stop.append(worker.in_flight)
        draining: list[str] = []
        fleet.on_worker_draining = draining.append

        drain = asyncio.create_task(fleet.drain(worker))
        for _ in range(10):  # turns of the loop in which a drain that did not wait would stop
            await asyncio.sleep(0)
        assert worker.state == "draining" and draining == [worker.id]
        worker.in_flight = 0  # the request finishes
        await asyncio.wait_for(drain, 2)
        assert in_flight_at_stop == [0]
        assert process.stops[0] == fleet_module.IDLE_STOP_GRACE_S
        await until(lambda: worker.id not in fleet.workers)
        assert worker.state == "stopped"  # expected: not a failure
        assert endpoint.stats["worker_failures"] == 0 and endpoint.start_failures == 0


@pytest.mark.asyncio
async def test_drain_gives_up_waiting_after_the_drain_timeout(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet_module, "DRAIN_TIMEOUT_S", 0.05)
    provider = FakeProvider()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet)
        worker = await started(fleet, endpoint)
        worker.state, worker.in_flight = "ready", 1  # a request that never ends
        await asyncio.wait_for(fleet.drain(worker), 2)
        assert placed(provider, worker).stops
        await until(lambda: worker.state == "stopped")


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["begin_stop", "kill"])
async def test_a_worker_stopped_while_being_placed_is_stopped_once_placed(
    store: Store, how: str,
) -> None:
    provider = FakeProvider()
    provider.placing = asyncio.Event()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet)
        worker = fleet.start_worker(endpoint)
        assert worker is not None
        await until(lambda: provider.launches)
        getattr(fleet, how)(worker)
        assert worker.state in ("draining", "stopping")
        assert endpoint.live_workers() == []  # out of routing and scaling at once
        provider.placing.set()
        await until(lambda: worker.id not in fleet.workers)
        assert placed(provider, worker).stops, "placed after its stop, it must still stop"
        assert worker.state == "stopped"
        assert endpoint.start_failures == 0 and endpoint.last_start_failure is None


@pytest.mark.asyncio
async def test_kill_stops_at_once_and_releases_the_workers_jobs(store: Store) -> None:
    provider = FakeProvider()
    async with fleet_of(store, provider) as fleet:
        endpoint = make_endpoint(fleet)
        worker = await started(fleet, endpoint)
        worker.state, worker.in_flight = "ready", 3
        released: list[str] = []
        fleet.on_worker_draining = released.append
        fleet.kill(worker)
        assert worker.state == "stopping" and released == [worker.id]
        await until(lambda: worker.id not in fleet.workers)
        assert placed(provider, worker).stops[0] == fleet_module.IDLE_STOP_GRACE_S
        assert worker.state == "stopped"


@pytest.mark.asyncio
async def test_stop_all_drains_every_worker_and_closes_the_provider(store: Store) -> None:
    provider = FakeProvider()
    fleet = Fleet(store, provider, Credentials(), Volumes(), PLATFORM_URL)
    endpoint = make_endpoint(fleet, workersMin=2, workersMax=2)
    fleet.scale(endpoint)
    workers = list(endpoint.workers.values())
    await until(lambda: all(w.process is not None for w in workers))
    await asyncio.wait_for(fleet.stop_all(), 2)
    assert all(placed(provider, w).stops for w in workers)
    assert provider.closed

