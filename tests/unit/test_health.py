"""Workers' health: a starting worker serves once `/ping` answers 200; a worker that stops
answering (or, on a queue, stops calling in) is replaced. `/ping` goes over the real
connection pool to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio

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

from runpod_flash.http.aio import Timeouts
from runpod_flash.platform import health as health_module
from runpod_flash.platform.credentials import GATEWAY_SECRET_HEADER
from runpod_flash.platform.health import QUEUE_WORKER_SILENCE_S, Health
from runpod_flash.platform.store import Store

KILLED = ("stopping", "stopped")  # killed, then its process gone


@pytest.fixture(autouse=True)
def checks_whenever_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `check_due` is a round of checks (not one per HEALTH_INTERVAL_S)."""
    monkeypatch.setattr(health_module, "HEALTH_INTERVAL_S", 0.0)


async def check_round(health: Health) -> None:
    """One round of health checks, waited for until every `/ping` of it has an answer."""
    before = asyncio.all_tasks()
    health.check_due()
    pings = [task for task in asyncio.all_tasks() - before
             if task.get_coro().__name__ == "_ping"]  # (not the workers it starts)
    await asyncio.wait_for(asyncio.gather(*pings), 5)


# -- starting ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_worker_reporting_ready_serves_once_ping_answers_200(store: Store) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet)
        worker = await started(sup.fleet, endpoint)
        endpoint.start_failures, endpoint.last_start_failure = 2, "an earlier crash"
        ping.status = 503  # not serving yet
        assert sup.health.mark_ready(worker.id, ping.port)
        await until(lambda: ping.heads)
        assert worker.state == "starting" and sup.router.try_acquire(endpoint) is None

        ping.status = 200
        await until(lambda: worker.state == "ready")
        assert worker.port == ping.port
        assert ping.header(GATEWAY_SECRET_HEADER) == worker.gateway_secret  # (workers
        # answer only the platform)
        assert endpoint.start_failures == 0 and endpoint.last_start_failure is None
        assert sup.router.try_acquire(endpoint) is worker

        assert not sup.health.mark_ready(worker.id, ping.port)  # once
        assert not sup.health.mark_ready("w-unknown", ping.port)


@pytest.mark.asyncio
async def test_a_worker_whose_ping_never_answers_200_is_stopped_with_the_reason(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health_module, "PING_CONFIRM_S", 0.1)
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet)
        worker = await started(sup.fleet, endpoint)
        ping.status = 500
        assert sup.health.mark_ready(worker.id, ping.port)
        await until(lambda: worker.state not in ("starting", "ready"), timeout=3)
        assert "/ping answered 500" in (endpoint.last_start_failure or "")
        await until(lambda: placed(provider, worker).stops)


# -- serving ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_two_failed_pings_in_a_row_replace_the_worker(store: Store) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, workersMin=1)
        worker = await ready(sup, endpoint, ping)

        ping.status = 500
        await check_round(sup.health)
        assert worker.failed_pings == 1 and worker.state == "ready"  # one is not enough
        ping.status = 200
        await check_round(sup.health)
        assert worker.failed_pings == 0  # an answer forgives

        ping.status = 500
        await check_round(sup.health)
        await check_round(sup.health)
        assert worker.state in KILLED  # killed: out of routing at once
        assert endpoint.stats["worker_failures"] == 1
        (replacement,) = endpoint.live_workers()  # and a new one is on its way
        assert replacement is not worker and replacement.state == "starting"
        await until(lambda: worker.id not in sup.fleet.workers)
        assert placed(provider, worker).stops


@pytest.mark.asyncio
async def test_a_worker_that_hangs_up_on_ping_is_replaced_too(store: Store) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, workersMin=1)
        worker = await ready(sup, endpoint, ping)
        ping.status = "close"
        await check_round(sup.health)
        await check_round(sup.health)
        assert worker.state in KILLED
        await until(lambda: len(provider.launches) == 2)


@pytest.mark.asyncio
async def test_a_busy_running_worker_is_given_grace_for_slow_pings(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health_module, "PING_TIMEOUTS",
                        Timeouts(connect=0.05, first_byte=0.05, idle=0.05))
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, workersMax=2)
        busy = await ready(sup, endpoint, ping)
        idle = await ready(sup, endpoint, ping)
        busy.in_flight = 1  # its handler blocks its event loop: /ping times out
        ping.status = "hang"
        for _ in range(3):
            await check_round(sup.health)
        assert busy.state == "ready" and busy.failed_pings == 0
        assert idle.state in KILLED  # no requests in flight: no excuse

        monkeypatch.setattr(health_module, "BUSY_PING_GRACE_S", 0.0)  # frozen for good
        await check_round(sup.health)
        await check_round(sup.health)
        assert busy.state in KILLED


@pytest.mark.asyncio
async def test_a_request_that_could_not_reach_a_worker_checks_it_now(store: Store) -> None:
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet)
        worker = await ready(sup, endpoint, ping)
        ping.status = 500
        asked = len(ping.heads)
        sup.health.suspect(worker)
        await until(lambda: worker.failed_pings == 1)
        assert len(ping.heads) == asked + 1


@pytest.mark.asyncio
async def test_a_silent_queue_worker_is_replaced(store: Store) -> None:
    provider = FakeProvider()
    async with platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet, "queue", type="QB", workersMin=1)
        sup.fleet.scale(endpoint)
        (worker,) = endpoint.workers.values()
        await until(lambda: worker.process is not None)
        sup.presence.worker_seen(worker.id)
        released: list[str] = []
        sup.fleet.on_worker_draining = released.append

        worker.last_seen -= QUEUE_WORKER_SILENCE_S - 1  # quiet, not yet silent
        await check_round(sup.health)
        assert worker.state == "ready"
        assert worker.failed_pings == 0  # never pinged: queue workers call in instead

        worker.last_seen -= 2  # now silent for longer than QUEUE_WORKER_SILENCE_S
        await check_round(sup.health)
        assert worker.state in KILLED and released == [worker.id]  # its jobs go back
        assert endpoint.stats["worker_failures"] == 1
        (replacement,) = endpoint.live_workers()
        assert replacement is not worker


@pytest.mark.asyncio
async def test_health_checks_run_once_per_interval(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(health_module, "HEALTH_INTERVAL_S", 60.0)
    provider = FakeProvider()
    async with PingServer() as ping, platform(store, provider) as sup:
        endpoint = make_endpoint(sup.fleet)
        await ready(sup, endpoint, ping)
        asked = len(ping.heads)
        await check_round(sup.health)
        await check_round(sup.health)  # too soon: no second ping
        assert len(ping.heads) == asked + 1

