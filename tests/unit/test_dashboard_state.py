"""The dashboard's parts that need no browser: history ring buffers and percentiles, login
codes and sessions (expiry, single use, bounds) and CSRF tokens."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from runpod_flash.platform.dashboard.auth import (
    CODE_TTL_S,
    MAX_SESSIONS,
    SESSION_TTL_S,
    DashboardAuth,
    Expiring,
    csrf_ok,
)
from runpod_flash.platform.dashboard.history import (
    POINTS,
    History,
    Point,
    Sampler,
    Snapshot,
    quantile,
    sample_interval_s,
)
from runpod_flash.platform.dashboard.logs import read_new_lines
from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def point(at: float, requests: int = 10) -> Point:
    return Point(at, 10.0, requests, 1, 2, 0, 5.0, 9.0)


def test_history_keeps_an_hour_per_endpoint_and_forgets_gone_endpoints() -> None:
    history = History()
    for second in range(POINTS + 40):
        history.add("a", point(second), point(second, requests=99))
    history.add("b", point(0), point(0))
    assert len(history.points("a")) == POINTS
    assert history.points("a")[0].at == 40  # the oldest went first
    assert history.recent("a").requests == 99
    history.keep_only(["a"])
    assert history.points("b") == [] and history.recent("b") is None
    assert point(0).rps == 1.0 and point(0).error_rate == 0.1


def test_percentiles_interpolate_within_the_histogram_bucket() -> None:
    bounds = [0.001, 0.01, 0.1, float("inf")]
    assert quantile(0.5, bounds, [0, 100, 100, 100]) == pytest.approx(0.0055)
    assert quantile(0.95, bounds, [50, 50, 100, 100]) == pytest.approx(0.091)
    assert quantile(0.99, bounds, [0, 0, 0, 10]) == 0.1  # past the last finite bound
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None


def test_a_snapshot_difference_gives_rates_and_a_counter_reset_counts_from_zero() -> None:
    bounds = [0.01, 0.1, float("inf")]
    before = Snapshot(100.0, 50, 5, (bounds, [40.0, 50.0, 50.0]))
    after = Snapshot(110.0, 70, 6, (bounds, [40.0, 70.0, 70.0]))
    changed = after.since(before, workers=2, queue=3)
    assert (changed.requests, changed.errors, changed.rps) == (20, 1, 2.0)
    assert changed.p50_ms == pytest.approx(55.0)  # all 20 new requests took 10-100 ms
    assert (changed.workers, changed.queue) == (2, 3)
    made_anew = Snapshot(120.0, 4, 0, (bounds, [4.0, 4.0, 4.0])).since(after, 1, 0)
    assert (made_anew.requests, made_anew.errors) == (4, 0)
    assert made_anew.p95_ms == pytest.approx(9.5)


def test_the_sampler_records_requests_errors_latency_workers_and_queue(tmp_path: Path) -> None:
    lb = Endpoint("api", "api", "deployed", {"type": "LB"})
    queue = Endpoint("jobs", "jobs", "deployed", {"type": "QB"})
    lb.workers["w-1"] = Worker("w-1", "api", lb.version, tmp_path / "w.log", [], state="ready")
    supervisor = SimpleNamespace(endpoints={"api": lb, "jobs": queue})
    health = {"completed": 0, "failed": 0, "inQueue": 7}
    jobs = SimpleNamespace(health=lambda endpoint_id: dict(health))
    metrics = Metrics(supervisor, lambda endpoint_id: 0)
    history = History()
    sampler = Sampler(supervisor, jobs, metrics, history, interval_s=10)  # type: ignore[arg-type]
    sampler.sample(now=0.0)
    assert history.points("api") == []  # the first sample is the baseline
    for status in (200, 200, 200, 503):
        lb.stats["requests"] += 1
        lb.stats["errors"] += status >= 500
        metrics.observe_request("api", "GET /hello", status, 0.004)
    health.update(completed=3, failed=1)
    sampler.sample(now=10.0)
    api, = history.points("api")
    assert (api.requests, api.errors, api.workers, api.rps) == (4, 1, 1, 0.4)
    assert 2.5 < api.p50_ms <= 5.0 and api.p95_ms <= 5.0
    jobs_point, = history.points("jobs")
    assert (jobs_point.requests, jobs_point.errors, jobs_point.queue) == (4, 1, 7)
    assert jobs_point.p50_ms is None  # no gateway latency for queue jobs
    sampler.sample(now=20.0)
    assert history.points("api")[-1].requests == 0
    assert history.recent("api").requests == 4  # the minute still holds them
    del supervisor.endpoints["jobs"]
    sampler.sample(now=30.0)
    assert history.points("jobs") == []


def test_the_sampling_interval_setting_must_be_a_positive_number(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_DASHBOARD_SAMPLE_S", "0.5")
    assert sample_interval_s() == 0.5
    for wrong in ("0", "-1", "soon"):
        monkeypatch.setenv("FLASH_DASHBOARD_SAMPLE_S", wrong)
        with pytest.raises(ValueError, match="FLASH_DASHBOARD_SAMPLE_S"):
            sample_interval_s()


def test_a_login_code_works_once_and_only_within_its_minute() -> None:
    clock = Clock()
    auth = DashboardAuth("the-token", None, clock)
    code = auth.mint_code()
    session = auth.redeem(code)
    assert session is not None and session.operator
    assert auth.redeem(code) is None  # used
    late = auth.mint_code()
    clock.now += CODE_TTL_S + 1
    assert auth.redeem(late) is None  # expired
    assert auth.redeem("made-up") is None


def test_token_and_api_key_sign_in_as_operator_and_read_only() -> None:
    auth = DashboardAuth("the-token", "the-key", Clock())
    operator, reader = auth.sign_in("the-token\n"), auth.sign_in("the-key")
    assert operator is not None and operator.operator
    assert reader is not None and not reader.operator
    assert auth.sign_in("the-key-") is None and auth.sign_in("") is None
    assert DashboardAuth("the-token", None, Clock()).sign_in("") is None


def test_sessions_expire_are_bounded_and_end_on_sign_out() -> None:
    clock = Clock()
    auth = DashboardAuth("t", None, clock)
    first = auth.sign_in("t")
    assert first is not None and auth.session(first.id) == first
    others = [auth.sign_in("t") for _ in range(MAX_SESSIONS - 1)]
    assert auth.session(first.id) == first  # used last: kept when the next one comes
    auth.sign_in("t")
    assert auth.session(others[0].id) is None  # the least recently used went
    auth.sign_out(first.id)
    assert auth.session(first.id) is None and auth.session(None) is None
    clock.now += SESSION_TTL_S + 1
    assert auth.session(others[-1].id) is None


def test_expiring_map_drops_the_oldest_past_its_limit() -> None:
    table: Expiring[int] = Expiring(10, 2, Clock())
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        table.put(key, value)
    assert (table.get("a"), table.get("c"), len(table)) == (None, 3, 2)
    assert table.pop("b") == 2 and table.pop("b") is None


def test_csrf_token_must_be_the_sessions_own() -> None:
    auth = DashboardAuth("t", None, Clock())
    session, other = auth.sign_in("t"), auth.sign_in("t")
    assert session is not None and other is not None
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, other.csrf)
    assert not csrf_ok(session, None) and not csrf_ok(session, "")


def test_log_lines_are_read_after_the_cursor_whole_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "w-1.log"
    log.write_text("one\ntwo\nthr")
    lines, cursor = read_new_lines(tmp_path, {}, tail=1)
    assert lines == ["[w-1] two"]
    with log.open("a") as handle:
        handle.write("ee\nfour\n")
    lines, cursor = read_new_lines(tmp_path, cursor, tail=None)
    assert lines == ["[w-1] three", "[w-1] four"]
    assert read_new_lines(tmp_path, cursor, tail=None) == ([], cursor)
    assert read_new_lines(tmp_path / "none", {}, tail=5) == ([], {})
