"""Enumerations that resource configs are written in.

Names and values mirror the original runpod-flash API so existing code keeps working.
"""

from __future__ import annotations

from enum import Enum


class GpuGroup(Enum):
    """A pool of interchangeable GPU models; ``ANY`` means every pool."""

    ANY = "any"
    ADA_24 = "ADA_24"
    ADA_32_PRO = "ADA_32_PRO"
    ADA_48_PRO = "ADA_48_PRO"
    ADA_80_PRO = "ADA_80_PRO"
    AMPERE_16 = "AMPERE_16"
    AMPERE_24 = "AMPERE_24"
    AMPERE_48 = "AMPERE_48"
    AMPERE_80 = "AMPERE_80"
    HOPPER_141 = "HOPPER_141"

    @classmethod
    def all(cls) -> list[GpuGroup]:
        """Every concrete pool, in declaration order (what ``ANY`` expands to)."""
        return [group for group in cls if group is not cls.ANY]

    def types(self) -> tuple[GpuType, ...]:
        """The GPU models in this pool (empty for ``ANY``)."""
        return GPU_POOLS.get(self, ())

    @classmethod
    def to_gpu_ids_str(cls, gpus: list[GpuGroup | GpuType]) -> str:
        """Encode a selection as the platform's ``gpuIds`` string.

        Whole pools are listed by name. A pool picked through some of its models is listed by
        name followed by ``-<model>`` for each model left out. Output order follows the pool
        declaration order, so equal selections always give equal strings.
        """
        whole: set[GpuGroup] = set()
        partial: dict[GpuGroup, set[GpuType]] = {}
        for gpu in gpus:
            if gpu in (cls.ANY, GpuType.ANY):
                whole.update(cls.all())
            elif isinstance(gpu, GpuGroup):
                whole.add(gpu)
            else:
                partial.setdefault(gpu.group, set()).add(gpu)
        parts: list[str] = []
        for group in cls.all():
            if group in whole:
                parts.append(group.value)
            elif group in partial:
                parts.append(group.value)
                parts.extend(f"-{t.value}" for t in group.types() if t not in partial[group])
        return ",".join(parts)

    @classmethod
    def from_gpu_ids_str(cls, gpu_ids: str) -> list[GpuGroup | GpuType]:
        """Decode a ``gpuIds`` string back into pools and models (inverse of the encoder)."""
        groups: list[GpuGroup] = []
        excluded: set[GpuType] = set()
        for token in (part.strip() for part in gpu_ids.split(",")):
            if not token:
                continue
            if token.startswith("-"):
                excluded.add(_parse_gpu_type(token[1:].strip()))
            elif token == cls.ANY.value:
                groups.extend(g for g in cls.all() if g not in groups)
            else:
                groups.append(_parse_gpu_group(token))
        result: list[GpuGroup | GpuType] = []
        for group in groups:
            kept = [t for t in group.types() if t not in excluded]
            result.extend([group] if len(kept) == len(group.types()) else kept)
        return result


class GpuType(Enum):
    """A specific GPU model, by the display name the platform reports."""

    ANY = "any"
    NVIDIA_GEFORCE_RTX_4090 = "NVIDIA GeForce RTX 4090"
    NVIDIA_GEFORCE_RTX_5090 = "NVIDIA GeForce RTX 5090"
    NVIDIA_RTX_6000_ADA_GENERATION = "NVIDIA RTX 6000 Ada Generation"
    NVIDIA_L40 = "NVIDIA L40"
    NVIDIA_L40S = "NVIDIA L40S"
    NVIDIA_H100_PCIe = "NVIDIA H100 PCIe"
    NVIDIA_H100_80GB_HBM3 = "NVIDIA H100 80GB HBM3"
    NVIDIA_H100_NVL = "NVIDIA H100 NVL"
    NVIDIA_RTX_A4000 = "NVIDIA RTX A4000"
    NVIDIA_RTX_A4500 = "NVIDIA RTX A4500"
    NVIDIA_RTX_4000_ADA_GENERATION = "NVIDIA RTX 4000 Ada Generation"
    NVIDIA_RTX_2000_ADA_GENERATION = "NVIDIA RTX 2000 Ada Generation"
    NVIDIA_RTX_A5000 = "NVIDIA RTX A5000"
    NVIDIA_L4 = "NVIDIA L4"
    NVIDIA_GEFORCE_RTX_3090 = "NVIDIA GeForce RTX 3090"
    NVIDIA_A40 = "NVIDIA A40"
    NVIDIA_RTX_A6000 = "NVIDIA RTX A6000"
    NVIDIA_A100_80GB_PCIe = "NVIDIA A100 80GB PCIe"
    NVIDIA_A100_SXM4_80GB = "NVIDIA A100-SXM4-80GB"
    NVIDIA_H200 = "NVIDIA H200"

    @property
    def group(self) -> GpuGroup:
        """The pool this model belongs to (``GpuGroup.ANY`` for ``GpuType.ANY``)."""
        return _POOL_OF_TYPE.get(self, GpuGroup.ANY)

    @classmethod
    def is_gpu_type(cls, value: str) -> bool:
        """Whether ``value`` is a model's display name (or ``"any"``): tells a model from a
        pool name when reading a ``gpuIds`` string."""
        return value in cls._value2member_map_


GPU_POOLS: dict[GpuGroup, tuple[GpuType, ...]] = {
    GpuGroup.ADA_24: (GpuType.NVIDIA_GEFORCE_RTX_4090,),
    GpuGroup.ADA_32_PRO: (GpuType.NVIDIA_GEFORCE_RTX_5090,),
    GpuGroup.ADA_48_PRO: (
        GpuType.NVIDIA_RTX_6000_ADA_GENERATION,
        GpuType.NVIDIA_L40,
        GpuType.NVIDIA_L40S,
    ),
    GpuGroup.ADA_80_PRO: (
        GpuType.NVIDIA_H100_PCIe,
        GpuType.NVIDIA_H100_80GB_HBM3,
        GpuType.NVIDIA_H100_NVL,
    ),
    GpuGroup.AMPERE_16: (
        GpuType.NVIDIA_RTX_A4000,
        GpuType.NVIDIA_RTX_A4500,
        GpuType.NVIDIA_RTX_4000_ADA_GENERATION,
        GpuType.NVIDIA_RTX_2000_ADA_GENERATION,
    ),
    GpuGroup.AMPERE_24: (
        GpuType.NVIDIA_RTX_A5000,
        GpuType.NVIDIA_L4,
        GpuType.NVIDIA_GEFORCE_RTX_3090,
    ),
    GpuGroup.AMPERE_48: (GpuType.NVIDIA_A40, GpuType.NVIDIA_RTX_A6000),
    GpuGroup.AMPERE_80: (GpuType.NVIDIA_A100_80GB_PCIe, GpuType.NVIDIA_A100_SXM4_80GB),
    GpuGroup.HOPPER_141: (GpuType.NVIDIA_H200,),
}
"""Which GPU models each pool contains."""

_POOL_OF_TYPE: dict[GpuType, GpuGroup] = {
    gpu_type: group for group, types in GPU_POOLS.items() for gpu_type in types
}


def _parse_gpu_group(token: str) -> GpuGroup:
    try:
        return GpuGroup(token)
    except ValueError:
        names = ", ".join(g.value for g in GpuGroup.all())
        raise ValueError(f"Unknown GPU pool {token!r} in gpuIds; use one of: {names}") from None


def _parse_gpu_type(token: str) -> GpuType:
    try:
        return GpuType(token)
    except ValueError:
        raise ValueError(
            f"Unknown GPU model {token!r} in gpuIds; use a GpuType value such as "
            f"{GpuType.NVIDIA_L4.value!r}"
        ) from None


class CpuInstanceType(str, Enum):
    """A CPU worker size, ``cpu<gen><kind>-<vCPUs>-<RAM GB>``; ``ANY`` lets the platform pick."""

    ANY = "any"
    CPU3G_1_4 = "cpu3g-1-4"
    CPU3G_2_8 = "cpu3g-2-8"
    CPU3G_4_16 = "cpu3g-4-16"
    CPU3G_8_32 = "cpu3g-8-32"
    CPU3C_1_2 = "cpu3c-1-2"
    CPU3C_2_4 = "cpu3c-2-4"
    CPU3C_4_8 = "cpu3c-4-8"
    CPU3C_8_16 = "cpu3c-8-16"
    CPU5C_1_2 = "cpu5c-1-2"
    CPU5C_2_4 = "cpu5c-2-4"
    CPU5C_4_8 = "cpu5c-4-8"
    CPU5C_8_16 = "cpu5c-8-16"


class ServerlessScalerType(str, Enum):
    """What the autoscaler watches: queue wait time (QB) or in-flight requests (LB)."""

    QUEUE_DELAY = "QUEUE_DELAY"
    REQUEST_COUNT = "REQUEST_COUNT"


class ServerlessType(str, Enum):
    """Queue-based (jobs) or load-balanced (HTTP routes) endpoint."""

    QB = "QB"
    LB = "LB"


class CudaVersion(str, Enum):
    """CUDA versions a GPU worker may be placed on."""

    V11_8 = "11.8"
    V12_0 = "12.0"
    V12_1 = "12.1"
    V12_2 = "12.2"
    V12_3 = "12.3"
    V12_4 = "12.4"
    V12_5 = "12.5"
    V12_6 = "12.6"
    V12_7 = "12.7"
    V12_8 = "12.8"


class DataCenter(str, Enum):
    """Where endpoints and volumes live; kept for API compatibility (one location)."""

    EU_RO_1 = "EU-RO-1"
