"""Pod template and network volume models attached to serverless resources."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .enums import DataCenter

_STRICT = ConfigDict(validate_by_name=True, validate_default=True, extra="forbid")


class KeyValuePair(BaseModel):
    """One environment variable of a pod template (the platform's list-of-pairs shape)."""

    model_config = _STRICT

    key: str
    value: str


class PodTemplate(BaseModel):
    """Container settings for an endpoint's workers; mirrors the original template fields."""

    model_config = _STRICT

    advancedStart: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    containerDiskInGb: int = 64
    containerRegistryAuthId: str = ""
    dockerArgs: str = ""
    env: list[KeyValuePair] = Field(default_factory=list)
    imageName: str = ""
    name: str = ""
    ports: str = ""
    startScript: str = ""

    @field_validator("containerDiskInGb")
    @classmethod
    def _disk_positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"containerDiskInGb must be at least 1 (got {value}); give GB")
        return value


class NetworkVolume(BaseModel):
    """Persistent storage shared by an endpoint's workers, identified by name."""

    model_config = _STRICT

    name: str
    size: int = 100
    dataCenterId: DataCenter = DataCenter.EU_RO_1
    id: str | None = None

    @field_validator("name")
    @classmethod
    def _name_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("NetworkVolume name must not be empty; pass name='my-volume'")
        return value

    @field_validator("size")
    @classmethod
    def _size_positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"NetworkVolume size must be greater than 0 GB (got {value})")
        return value
