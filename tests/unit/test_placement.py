"""How a resource config becomes a placement request, and how the Ray provider fails when it
cannot join a cluster (no Ray cluster needed: these are the pure parts)."""

from __future__ import annotations

import socket

import pytest

from runpod_flash.platform.providers import ProviderUnavailable
from runpod_flash.platform.providers.base import Resources
from runpod_flash.platform.providers.ray import _accelerator_names, _check_reachable


def test_cpu_sizes_become_cpus_and_memory_the_smallest_listed() -> None:
    spec = {"cpu": True, "instanceIds": ["cpu3g-8-32", "cpu3g-4-16"], "gpuCount": 1}
    assert Resources.of(spec) == Resources(gpus=0, cpus=4.0, memory_mb=16 * 1024)
    assert Resources.of({"cpu": True, "instanceIds": ["any"]}) == Resources(cpus=1.0)


def test_gpu_pools_are_kept_and_any_means_no_constraint() -> None:
    assert Resources.of({"gpuCount": 2, "gpuIds": "AMPERE_80,-NVIDIA A100-SXM4-80GB"}) == \
        Resources(gpus=2, gpu_types=("AMPERE_80",))
    assert Resources.of({"gpuCount": 1, "gpuIds": "any"}).gpu_types == ()


def test_a_pool_maps_to_our_resource_then_rays_detected_accelerator() -> None:
    names = _accelerator_names("AMPERE_80")
    assert names[0] == "flash_gpu:AMPERE_80"
    assert "accelerator_type:A100" in names


def test_an_unreachable_cluster_address_fails_at_once_naming_it() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderUnavailable, match=f"127.0.0.1:{port}.*--ray-address"):
        _check_reachable(f"127.0.0.1:{port}")
    _check_reachable("auto")  # left to Ray, which knows where its local cluster is
