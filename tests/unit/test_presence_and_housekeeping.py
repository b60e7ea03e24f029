"""Queue workers calling in (presence), and the supervisor's housekeeping: idle workers stop
down to workersMin, unused live endpoints go, deployed ones stay."""

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

from runpod_flash.platform import supervisor as supervisor_module
from runpod_flash.platform.autoscaler import Load
from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.store import Store
from runpod_flash.platform.supervisor import Supervisor


def idle_for(seconds: float, *things: Worker | Endpoint) -> None:
    """As if the workers and endpoints had last been used `seconds` ago."""
    for thing in things:
        if isinstance(thing, Worker):
            thing.last_active = time.monotonic() - seconds
        else:
            thing.last_used = time.monotonic() - seconds


async def housekeep(sup: Supervisor) -> None:
    """One housekeeping pass, waited for until the endpoint removals it began are done."""
    before = asyncio.all_tasks()
    sup.housekeep_once()
    removals = [task for task in asyncio.all_tasks() - before
                if task.get_coro().__name__ == "remove_endpoint"]
    await asyncio.wait_for(asyncio.gather(*removals), 5)


def stored_endpoints(store: Store) -> set[str]:
    return {row["id"] for row in store.endpoints()}


# -- presence ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_queue_workers_first_call_marks_it_ready(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "queue", type="QB")
        worker = await started(sup.fleet, endpoint)
        endpoint.start_failures, endpoint.last_start_failure = 1, "an earlier crash"
        woken = endpoint.changed
        worker.last_seen -= 100
        sup.presence.worker_seen(worker.id)
        assert worker.state == "ready" and time.monotonic() - worker.last_seen < 5
        assert endpoint.start_failures == 0 and endpoint.last_start_failure is None
        assert woken.is_set()

        worker.last_seen -= 100
        sup.presence.worker_seen(worker.id)  # later calls only prove it alive
        assert worker.state == "ready" and time.monotonic() - worker.last_seen < 5
        sup.presence.worker_seen("w-gone")  # a worker the platform forgot: ignored


@pytest.mark.asyncio
async def test_only_starting_and_ready_queue_workers_take_jobs(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "queue", type="QB", workersMax=2)
        worker = await started(sup.fleet, endpoint)
        assert sup.presence.serving(worker.id)
        sup.presence.worker_seen(worker.id)
        assert sup.presence.serving(worker.id)
        sup.fleet.begin_stop(worker)
        assert not sup.presence.serving(worker.id)
        assert not sup.presence.serving("w-gone")


@pytest.mark.asyncio
async def test_worker_counts_have_runpods_health_shape(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "queue", type="QB", workersMax=4)
        idle, running, _starting = [await started(sup.fleet, endpoint)
                                    for _ in range(3)]
        sup.presence.worker_seen(idle.id)
        sup.presence.worker_seen(running.id)
        sup.presence.worker_busy(running.id, 2)
        assert running.in_flight == 2
        assert sup.presence.worker_counts(endpoint.id) == {
            "idle": 1, "running": 1, "initializing": 1, "ready": 2,
            "throttled": 0, "unhealthy": 0,
        }
        assert sup.presence.worker_counts("nope") == {
            "idle": 0, "running": 0, "initializing": 0, "ready": 0,
            "throttled": 0, "unhealthy": 0,
        }


@pytest.mark.asyncio
async def test_waiting_jobs_start_workers(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "queue", type="QB", workersMax=3, scalerValue=1)
        sup.fleet.queue_load = lambda endpoint_id: Load(waiting=2)
        sup.presence.on_demand(endpoint.id, 2)
        assert len(endpoint.live_workers()) == 2
        await until(lambda: len(provider.processes) == 2)


# -- housekeeping: idle workers ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_idle_workers_stop_after_their_idle_timeout_but_not_below_workers_min(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, workersMin=1, workersMax=4, idleTimeout=60)
        oldest, older, old, recent, busy = [await ready(sup, endpoint, ping)
                                            for _ in range(5)]
        idle_for(300, oldest)
        idle_for(200, older)
        idle_for(120, old)
        idle_for(10, recent)  # not idle long enough
        idle_for(500, busy)
        busy.in_flight = 1  # serving a long request

        sup.housekeep_once()  # (stops begin at once: no waiting needed)
        assert [w.state for w in (oldest, older, old)] == ["draining"] * 3
        assert recent.state == "ready" and busy.state == "ready"
        await until(lambda: all(placed(provider, w).stops for w in (oldest, older, old)))
        assert len(provider.processes) == 5  # nothing started in their place

        idle_for(120, recent)
        busy.in_flight = 0
        sup.housekeep_once()
        assert busy.state == "draining"  # the one idle longest goes...
        assert recent.state == "ready"  # ...the last one stays: workersMin is 1


@pytest.mark.asyncio
async def test_housekeeping_tops_endpoints_up_to_workers_min(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, workersMin=2, workersMax=3)
        building = make_endpoint(sup.fleet, "building", status="building", workersMin=1)
        await housekeep(sup)
        assert len(endpoint.live_workers()) == 2 and not building.workers


# -- housekeeping: unused live endpoints ------------------------------------------------------


@pytest.mark.asyncio
async def test_an_unused_live_endpoint_is_removed_and_a_deployed_one_stays(
    store: Store,
) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        live = make_endpoint(sup.fleet, "live-unused", kind="live", idleTimeout=60)
        deployed = make_endpoint(sup.fleet, "deployed", idleTimeout=60)
        used = make_endpoint(sup.fleet, "live-used", kind="live", idleTimeout=60)
        waited_on = make_endpoint(sup.fleet, "live-waited-on", kind="live", idleTimeout=60)
        live_worker = await ready(sup, live, ping)
        idle_for(120, live, live_worker, deployed, waited_on)
        idle_for(10, used)
        waited_on.waiting = 1  # a caller waits for one of its workers

        await housekeep(sup)
        assert stored_endpoints(store) == {"deployed", "live-used", "live-waited-on"}
        assert set(sup.endpoints) == {"deployed", "live-used", "live-waited-on"}
        await until(lambda: live_worker.state == "stopped")  # its workers go with it
        assert sup.credentials.for_worker(live_worker.id) is None


@pytest.mark.asyncio
async def test_a_live_endpoint_serving_a_request_is_not_removed(store: Store) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        live = make_endpoint(sup.fleet, "live-busy", kind="live", idleTimeout=60)
        worker = await ready(sup, live, ping)
        assert sup.router.try_acquire(live) is worker
        idle_for(120, live, worker)  # a request that started long ago
        await housekeep(sup)
        assert "live-busy" in sup.endpoints and worker.state == "ready"


@pytest.mark.asyncio
async def test_a_live_endpoint_keeping_warm_workers_stays_for_the_warm_ttl(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "LIVE_WARM_TTL_S", 600.0)
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        warm = make_endpoint(sup.fleet, "live-warm", kind="live", workersMin=1,
                             idleTimeout=60)
        worker = await ready(sup, warm, ping)
        idle_for(300, warm, worker)  # past its idle timeout, within the warm TTL
        await housekeep(sup)
        assert "live-warm" in sup.endpoints and worker.state == "ready"
        assert "live-warm" in stored_endpoints(store)

        idle_for(700, warm, worker)  # past the warm TTL
        await housekeep(sup)
        assert "live-warm" not in sup.endpoints
        assert "live-warm" not in stored_endpoints(store)
        await until(lambda: worker.state == "stopped")


@pytest.mark.asyncio
async def test_remove_live_endpoints_removes_only_live_ones(store: Store) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        first = make_endpoint(sup.fleet, "live-a", kind="live")
        make_endpoint(sup.fleet, "live-b", kind="live")
        deployed = make_endpoint(sup.fleet, "deployed")
        live_worker = await ready(sup, first, ping)
        deployed_worker = await ready(sup, deployed, ping)

        removed = await sup.remove_live_endpoints()
        assert sorted(removed) == ["live-a", "live-b"]
        assert set(sup.endpoints) == {"deployed"} and stored_endpoints(store) == {"deployed"}
        assert live_worker.state in ("draining", "stopped")
        assert placed(provider, live_worker).stops
        assert deployed_worker.state == "ready" and not placed(provider, deployed_worker).stops
        assert await sup.remove_live_endpoints() == []



@pytest.mark.asyncio
async def test_undeploying_forgets_the_endpoints_kept_versions(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        make_endpoint(sup.fleet, "api")
        make_endpoint(sup.fleet, "other")
        for endpoint_id in ("api", "other"):
            store.record_version({"endpoint_id": endpoint_id, "version": "v1", "spec": {},
                                  "artifact": None, "deployed_at": 0.0, "how": "deploy"}, 5)
        assert await sup.remove_endpoint("api")
        assert store.versions("api") == [] and len(store.versions("other")) == 1
