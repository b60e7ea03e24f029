"""The scaling policy: workers wanted for a load, within the endpoint's bounds."""

from __future__ import annotations

from runpod_flash.platform.autoscaler import Load, desired_workers

LB = {"type": "LB", "scalerType": "REQUEST_COUNT", "scalerValue": 4, "workersMin": 0,
      "workersMax": 3}
QUEUE_DELAY = {"type": "QB", "scalerType": "QUEUE_DELAY", "scalerValue": 2, "workersMin": 0,
               "workersMax": 5}


def test_idle_endpoint_scales_to_zero() -> None:
    assert desired_workers(LB, 2, Load()) == 0


def test_workers_min_is_kept_when_idle() -> None:
    assert desired_workers({**LB, "workersMin": 1}, 0, Load()) == 1


def test_request_count_is_ceil_of_load_over_scaler_value() -> None:
    assert desired_workers(LB, 0, Load(busy=1)) == 1
    assert desired_workers(LB, 1, Load(busy=4, waiting=1)) == 2
    assert desired_workers(LB, 1, Load(busy=200)) == 3  # capped at workersMax


def test_queue_delay_adds_a_worker_only_when_jobs_wait_too_long() -> None:
    assert desired_workers(QUEUE_DELAY, 0, Load(waiting=1)) == 1  # from zero at once
    assert desired_workers(QUEUE_DELAY, 2, Load(busy=2, waiting=9, oldest_wait_s=1)) == 2
    assert desired_workers(QUEUE_DELAY, 2, Load(busy=2, waiting=9, oldest_wait_s=3)) == 3
    assert desired_workers(QUEUE_DELAY, 5, Load(waiting=9, oldest_wait_s=30)) == 5
