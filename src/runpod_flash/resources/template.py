"""Pod template and network volume models attached to serverless resources."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runpod_flash.control import PlatformError, ensure_platform, find_running, slug

from .base import DeployableResource
from .enums import DataCenter

_STRICT = ConfigDict(validate_by_name=True, validate_default=True, extra="forbid")


class KeyValuePair(BaseModel):
    """One environment variable of a pod template (the platform's list-of-pairs shape)."""

    model_config = _STRICT

    key: str
    value: str

    @classmethod
    def from_dict(cls, values: dict[str, str]) -> list[KeyValuePair]:
        """An env mapping as the template's list of pairs."""
        return [cls(key=key, value=value) for key, value in values.items()]


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


class NetworkVolume(DeployableResource):
    """Persistent storage shared by an endpoint's workers, identified by name.

    On the platform a volume is a directory known by a slug of its name, which is its ``id``
    once created; an endpoint naming it creates it too, so ``deploy()`` is only needed to
    fill the volume before any endpoint uses it.
    """

    model_config = _STRICT

    name: str
    size: int = 100
    dataCenterId: DataCenter = DataCenter.EU_RO_1

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

    @property
    def is_created(self) -> bool:
        """Whether ``deploy()`` created (or found) it, so ``id`` is known."""
        return self.id is not None

    def is_deployed(self) -> bool:
        """Whether the running platform has this volume now."""
        platform = find_running()
        if platform is None:
            return False
        try:
            volumes = platform.call("GET", "/api/v1/volumes")["volumes"]
        except PlatformError:
            return False
        wanted = self.id or slug(self.name)
        return any(volume["name"] == wanted for volume in volumes)

    async def deploy(self) -> NetworkVolume:
        """Create the volume on the platform (starting it if needed), or find the one of the
        same name; fills ``id``."""
        answer = await asyncio.to_thread(
            lambda: ensure_platform().call(
                "POST", "/api/v1/volumes", {"name": self.name, "size": self.size}
            )
        )
        self.id = answer["name"]
        return self

    async def undeploy(self) -> NoReturn:
        """Refused, as in the original: a volume's data outlives the endpoints using it."""
        raise NotImplementedError(
            f"NetworkVolume undeploy is not supported: the data of volume '{self.name}' "
            f"outlives its endpoints; delete it with `flash volume delete {self.name}`"
        )
