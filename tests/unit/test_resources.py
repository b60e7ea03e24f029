"""Resource models: defaults, hierarchy, validation messages, derived fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runpod_flash.resources import (
    GPU_POOLS,
    CpuInstanceType,
    CpuLiveLoadBalancer,
    CpuLiveServerless,
    CpuLoadBalancerSlsResource,
    CpuServerlessEndpoint,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    LiveLoadBalancer,
    LiveServerless,
    LoadBalancerSlsResource,
    NetworkVolume,
    PodTemplate,
    ServerlessEndpoint,
    ServerlessResource,
    ServerlessScalerType,
    ServerlessType,
)

ALL_CLASSES = [
    ServerlessEndpoint,
    CpuServerlessEndpoint,
    LiveServerless,
    CpuLiveServerless,
    LoadBalancerSlsResource,
    CpuLoadBalancerSlsResource,
    LiveLoadBalancer,
    CpuLiveLoadBalancer,
]
CPU_CLASSES = {
    CpuServerlessEndpoint,
    CpuLiveServerless,
    CpuLoadBalancerSlsResource,
    CpuLiveLoadBalancer,
}
LB_CLASSES = {
    LoadBalancerSlsResource,
    CpuLoadBalancerSlsResource,
    LiveLoadBalancer,
    CpuLiveLoadBalancer,
}
LIVE_CLASSES = {LiveServerless, CpuLiveServerless, LiveLoadBalancer, CpuLiveLoadBalancer}
IMAGE_ENV = (
    "FLASH_IMAGE_TAG",
    "FLASH_GPU_IMAGE",
    "FLASH_CPU_IMAGE",
    "FLASH_LB_IMAGE",
    "FLASH_CPU_LB_IMAGE",
)


@pytest.fixture(autouse=True)
def _clean_image_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in IMAGE_ENV:
        monkeypatch.delenv(var, raising=False)


# --- defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_common_defaults(cls: type[ServerlessResource]) -> None:
    r = cls(name="worker")
    assert r.name == "worker"
    assert r.id is None
    assert r.endpoint_url is None
    assert (r.workersMin, r.workersMax, r.idleTimeout) == (0, 1, 60)
    assert (r.executionTimeoutMs, r.scalerValue) == (0, 4)
    assert r.flashboot is True
    assert r.env == {}
    assert r.cudaVersions == []
    assert r.networkVolume is None
    assert r.template is None
    assert r.templateId is None
    assert r.datacenter is DataCenter.EU_RO_1


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_per_class_defaults(cls: type[ServerlessResource]) -> None:
    r = cls(name="worker")
    lb = cls in LB_CLASSES
    assert r.type is (ServerlessType.LB if lb else ServerlessType.QB)
    expected_scaler = ServerlessScalerType.REQUEST_COUNT if lb else ServerlessScalerType.QUEUE_DELAY
    assert r.scalerType is expected_scaler
    if cls in CPU_CLASSES:
        assert r.gpus == []
        assert r.gpuIds == ""
        assert r.gpuCount == 0
        assert r.instanceIds == [CpuInstanceType.CPU3G_2_8]
    else:
        assert r.gpus == GpuGroup.all()  # ANY, the default, expands as in the original
        assert r.gpuIds == ",".join(g.value for g in GpuGroup.all())
        assert r.gpuCount == 1
        assert r.instanceIds is None


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_name_is_kept_exactly(cls: type[ServerlessResource]) -> None:
    assert cls(name="My_api").name == "My_api"


def test_defaults_are_not_shared_between_instances() -> None:
    a = ServerlessEndpoint(name="a")
    a.env["K"] = "v"
    a.gpus.append(GpuGroup.ADA_24)
    b = ServerlessEndpoint(name="b")
    assert b.env == {}
    assert b.gpus == GpuGroup.all()


# --- hierarchy and flags -------------------------------------------------------------------------


def test_hierarchy() -> None:
    assert issubclass(LiveServerless, ServerlessEndpoint)
    assert issubclass(CpuServerlessEndpoint, ServerlessEndpoint)
    assert issubclass(CpuLiveServerless, CpuServerlessEndpoint)
    assert issubclass(LiveLoadBalancer, LoadBalancerSlsResource)
    assert issubclass(CpuLoadBalancerSlsResource, LoadBalancerSlsResource)
    assert issubclass(CpuLiveLoadBalancer, CpuLoadBalancerSlsResource)
    assert not issubclass(LoadBalancerSlsResource, ServerlessEndpoint)
    assert not issubclass(ServerlessEndpoint, LoadBalancerSlsResource)
    assert not issubclass(CpuLiveServerless, LiveServerless)
    assert not issubclass(CpuLiveLoadBalancer, LiveLoadBalancer)
    assert all(issubclass(cls, ServerlessResource) for cls in ALL_CLASSES)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_flags(cls: type[ServerlessResource]) -> None:
    r = cls(name="w")
    assert r.is_live is (cls in LIVE_CLASSES)
    assert r.is_load_balanced is (cls in LB_CLASSES)
    assert r.is_cpu is (cls in CPU_CLASSES)
    assert r.gpu_count == (0 if cls in CPU_CLASSES else 1)
    assert r.resource_key == f"{cls.__name__}:w"


def test_gpu_count_follows_field() -> None:
    assert LiveServerless(name="w", gpuCount=4).gpu_count == 4
    assert LiveServerless(name="w", gpuCount=0).gpu_count == 0


def test_execution_timeout_seconds() -> None:
    assert LiveServerless(name="w").execution_timeout_s is None
    assert LiveServerless(name="w", executionTimeoutMs=2500).execution_timeout_s == 2.5


# --- enums -------------------------------------------------------------------------------------


def test_any_members() -> None:
    assert GpuGroup.ANY.value == "any"
    assert GpuType.ANY.value == "any"
    assert CpuInstanceType.ANY.value == "any"
    assert CpuInstanceType("any") is CpuInstanceType.ANY


def test_enum_values() -> None:
    assert all(g.value == g.name for g in GpuGroup if g is not GpuGroup.ANY)
    assert GpuGroup.ANY not in GpuGroup.all()
    assert len(GpuGroup.all()) == 9
    assert CpuInstanceType.CPU3G_1_4 == "cpu3g-1-4"
    assert CpuInstanceType.CPU5C_8_16.value == "cpu5c-8-16"
    assert GpuType.NVIDIA_A100_80GB_PCIe.value == "NVIDIA A100 80GB PCIe"
    assert GpuType.NVIDIA_GEFORCE_RTX_4090.value == "NVIDIA GeForce RTX 4090"
    assert CudaVersion.V11_8.value == "11.8"
    assert CudaVersion.V12_8.value == "12.8"
    assert DataCenter.EU_RO_1.value == "EU-RO-1"
    assert {t.value for t in ServerlessType} == {"QB", "LB"}
    assert {s.value for s in ServerlessScalerType} == {"QUEUE_DELAY", "REQUEST_COUNT"}


def test_every_gpu_type_is_in_exactly_one_pool() -> None:
    pooled = [t for types in GPU_POOLS.values() for t in types]
    assert sorted(pooled, key=lambda t: t.value) == sorted(
        (t for t in GpuType if t is not GpuType.ANY), key=lambda t: t.value
    )
    assert set(GPU_POOLS) == set(GpuGroup.all())
    assert GpuType.NVIDIA_H200.group is GpuGroup.HOPPER_141


def test_gpu_ids_string_for_groups_is_ordered() -> None:
    ids = GpuGroup.to_gpu_ids_str([GpuGroup.HOPPER_141, GpuGroup.ADA_24])
    assert ids == "ADA_24,HOPPER_141"
    assert GpuGroup.to_gpu_ids_str([GpuType.ANY]) == GpuGroup.to_gpu_ids_str([GpuGroup.ANY])


def test_gpu_ids_string_negates_unpicked_models() -> None:
    ids = GpuGroup.to_gpu_ids_str([GpuType.NVIDIA_A100_80GB_PCIe])
    assert ids == "AMPERE_80,-NVIDIA A100-SXM4-80GB"
    assert GpuGroup.from_gpu_ids_str(ids) == [GpuType.NVIDIA_A100_80GB_PCIe]


def test_gpu_ids_round_trip() -> None:
    picked = [GpuGroup.ADA_24, GpuType.NVIDIA_L4, GpuType.NVIDIA_H100_NVL]
    ids = GpuGroup.to_gpu_ids_str(picked)
    back = GpuGroup.from_gpu_ids_str(ids)
    assert set(back) == set(picked)
    assert GpuGroup.to_gpu_ids_str(back) == ids


def test_gpu_ids_unknown_token() -> None:
    with pytest.raises(ValueError, match="Unknown GPU pool 'ADA_99'"):
        GpuGroup.from_gpu_ids_str("ADA_99")


# --- validation --------------------------------------------------------------------------------


def test_unknown_field_is_a_validation_error_with_hint() -> None:
    with pytest.raises(ValidationError, match="did you mean 'workersMax'"):
        LiveServerless(name="w", workerMax=3)


def test_name_required_and_non_empty() -> None:
    with pytest.raises(ValidationError, match="name"):
        LiveServerless()  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="name must not be empty"):
        LiveServerless(name="  ")


def test_workers_min_greater_than_max() -> None:
    with pytest.raises(
        ValidationError, match=r"workersMin \(5\) cannot be greater than workersMax \(2\)"
    ):
        LiveLoadBalancer(name="w", workersMin=5, workersMax=2)


@pytest.mark.parametrize(
    ("field", "bad", "minimum"),
    [
        ("workersMax", 0, 1),
        ("workersMin", -1, 0),
        ("idleTimeout", -1, 0),
        ("executionTimeoutMs", -5, 0),
        ("scalerValue", 0, 1),
        ("gpuCount", -1, 0),
    ],
)
def test_numeric_minimums(field: str, bad: int, minimum: int) -> None:
    with pytest.raises(ValidationError, match=rf"{field} must be >= {minimum} \(got {bad}\)"):
        LiveServerless(name="w", **{field: bad})


@pytest.mark.parametrize("cls", sorted(LB_CLASSES, key=lambda c: c.__name__))
def test_lb_rejects_queue_delay(cls: type[ServerlessResource]) -> None:
    with pytest.raises(ValidationError) as err:
        cls(name="w", scalerType=ServerlessScalerType.QUEUE_DELAY)
    assert (
        "LoadBalancerSlsResource requires REQUEST_COUNT scaler, not QUEUE_DELAY. "
        "Load-balanced endpoints don't support queue-based scaling."
    ) in str(err.value)


def test_qb_accepts_request_count() -> None:
    r = ServerlessEndpoint(name="w", scalerType="REQUEST_COUNT")
    assert r.scalerType is ServerlessScalerType.REQUEST_COUNT


def test_type_is_forced_by_class() -> None:
    with pytest.raises(ValidationError, match="always type LB"):
        LiveLoadBalancer(name="w", type=ServerlessType.QB)
    with pytest.raises(ValidationError, match="always type QB"):
        LiveServerless(name="w", type="LB")


def test_non_live_does_not_require_image() -> None:
    assert ServerlessEndpoint(name="w").imageName == ""
    lb = LoadBalancerSlsResource(name="user-service", imageName="runpod/runpod-flash-lb:latest")
    assert lb.imageName == "runpod/runpod-flash-lb:latest"


def test_network_volume_validation() -> None:
    assert NetworkVolume(name="vol").size == 100
    assert NetworkVolume(name="vol").dataCenterId is DataCenter.EU_RO_1
    with pytest.raises(ValidationError, match="size must be greater than 0"):
        NetworkVolume(name="vol", size=0)
    with pytest.raises(ValidationError, match="name"):
        NetworkVolume()  # type: ignore[call-arg]
    r = LiveServerless(name="w", networkVolume=NetworkVolume(name="vol"))
    assert r.networkVolume is not None and r.networkVolume.name == "vol"


def test_pod_template_defaults_and_env_pairs() -> None:
    t = PodTemplate()
    assert (t.advancedStart, t.config, t.containerDiskInGb) == (False, {}, 64)
    assert (t.imageName, t.name, t.ports, t.startScript, t.dockerArgs) == ("", "", "", "", "")
    assert t.containerRegistryAuthId == ""
    assert t.env == []
    t = PodTemplate(env=[{"key": "A", "value": "1"}], containerDiskInGb=10)
    assert (t.env[0].key, t.env[0].value, t.containerDiskInGb) == ("A", "1", 10)
    with pytest.raises(ValidationError, match="Extra inputs"):
        PodTemplate(disk=5)


def test_env_must_be_strings() -> None:
    with pytest.raises(ValidationError, match="env"):
        LiveServerless(name="w", env={"N": 1})


# --- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "image"),
    [
        (LiveServerless, "runpod/flash:latest"),
        (CpuLiveServerless, "runpod/flash-cpu:latest"),
        (LiveLoadBalancer, "runpod/flash-lb:latest"),
        (CpuLiveLoadBalancer, "runpod/flash-lb-cpu:latest"),
    ],
)
def test_live_image_is_locked(cls: type[ServerlessResource], image: str) -> None:
    assert cls(name="w").imageName == image
    assert cls(name="w", imageName="me/custom:1").imageName == image


def test_live_image_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_IMAGE_TAG", "1.2.3")
    assert LiveServerless(name="w").imageName == "runpod/flash:1.2.3"
    assert CpuLiveLoadBalancer(name="w").imageName == "runpod/flash-lb-cpu:1.2.3"
    monkeypatch.setenv("FLASH_LB_IMAGE", "registry.local/lb:dev")
    assert LiveLoadBalancer(name="w").imageName == "registry.local/lb:dev"
    monkeypatch.setenv("FLASH_CPU_IMAGE", "registry.local/cpu:dev")
    assert CpuLiveServerless(name="w").imageName == "registry.local/cpu:dev"


# --- GPU / CPU selection ---------------------------------------------------------------------


def test_instance_ids_make_gpu_endpoint_cpu() -> None:
    r = ServerlessEndpoint(name="w", instanceIds=[CpuInstanceType.CPU3C_1_2])
    assert r.is_cpu
    assert (r.gpus, r.gpuIds, r.gpuCount, r.gpu_count) == ([], "", 0, 0)


def test_instance_ids_conflict_with_explicit_gpus() -> None:
    with pytest.raises(ValidationError, match="takes no GPUs"):
        ServerlessEndpoint(name="w", instanceIds=["cpu3g-1-4"], gpus=[GpuGroup.ADA_24])
    with pytest.raises(ValidationError, match="takes no GPUs"):
        CpuLiveServerless(name="w", gpuCount=2)


def test_cpu_class_accepts_any_instance() -> None:
    r = CpuLiveServerless(name="w", instanceIds=[CpuInstanceType.ANY])
    assert r.instanceIds == [CpuInstanceType.ANY]
    assert r.platform_spec()["cpu"] is True


def test_cpu_class_needs_an_instance() -> None:
    with pytest.raises(ValidationError, match="needs at least one CPU instance type"):
        CpuServerlessEndpoint(name="w", instanceIds=[])


def test_gpu_class_needs_a_gpu() -> None:
    with pytest.raises(ValidationError, match="needs at least one GPU"):
        LiveServerless(name="w", gpus=[])


def test_gpu_ids_derived_and_accepted() -> None:
    r = LiveServerless(name="w", gpus=[GpuGroup.AMPERE_80, GpuType.NVIDIA_L4])
    assert r.gpuIds == "AMPERE_24,-NVIDIA RTX A5000,-NVIDIA GeForce RTX 3090,AMPERE_80"
    from_ids = LiveServerless(name="w", gpuIds=r.gpuIds)
    assert set(from_ids.gpus) == {GpuGroup.AMPERE_80, GpuType.NVIDIA_L4}
    with pytest.raises(ValidationError, match="does not match gpus"):
        LiveServerless(name="w", gpus=[GpuGroup.ADA_24], gpuIds="HOPPER_141")


def test_gpus_accept_strings() -> None:
    r = LiveServerless(name="w", gpus=["ADA_24", "NVIDIA H200"])
    assert r.gpus == [GpuGroup.ADA_24, GpuType.NVIDIA_H200]


# --- platform spec and hashing -----------------------------------------------------------------


def test_platform_spec_shape() -> None:
    r = LiveLoadBalancer(
        name="api",
        workersMin=1,
        workersMax=3,
        idleTimeout=5,
        env={"A": "b"},
        executionTimeoutMs=1000,
        gpus=[GpuGroup.HOPPER_141],
        gpuCount=2,
    )
    assert r.platform_spec() == {
        "name": "api",
        "kind": "live",
        "type": "LB",
        "cpu": False,
        "gpuCount": 2,
        "gpuIds": "HOPPER_141",
        "workersMin": 1,
        "workersMax": 3,
        "idleTimeout": 5,
        "scalerType": "REQUEST_COUNT",
        "scalerValue": 4,
        "executionTimeoutMs": 1000,
        "env": {"A": "b"},
    }


def test_platform_spec_deployed_cpu_qb() -> None:
    spec = CpuServerlessEndpoint(name="jobs").platform_spec()
    assert (spec["kind"], spec["type"], spec["cpu"], spec["gpuCount"], spec["gpuIds"]) == (
        "deployed",
        "QB",
        True,
        0,
        "",
    )
    assert spec["scalerType"] == "QUEUE_DELAY"


def test_platform_spec_env_is_a_copy() -> None:
    r = LiveServerless(name="w", env={"A": "1"})
    r.platform_spec()["env"]["A"] = "2"
    assert r.env == {"A": "1"}


def test_config_hash_is_stable_and_ignores_runtime_fields() -> None:
    a = LiveServerless(name="w", env={"A": "1", "B": "2"})
    b = LiveServerless(name="w", env={"B": "2", "A": "1"})
    assert len(a.config_hash) == 64
    assert a.config_hash == b.config_hash
    b.id = "ep-123"
    b.endpoint_url = "http://127.0.0.1:7770/v2/ep-123"
    assert a.config_hash == b.config_hash


def test_config_hash_changes_with_config() -> None:
    base = LiveServerless(name="w").config_hash
    assert LiveServerless(name="w", workersMax=2).config_hash != base
    assert LiveServerless(name="w2").config_hash != base
    assert LiveServerless(name="w", env={"A": "1"}).config_hash != base


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_dump_round_trip(cls: type[ServerlessResource]) -> None:
    r = cls(name="w", env={"A": "1"}, workersMax=3)
    again = cls.model_validate(r.model_dump(mode="json"))
    assert again == r
    assert again.config_hash == r.config_hash
