"""The base classes every resource shares, under the original API's names.

Code written for the original checks ``isinstance(x, DeployableResource)`` and prints
resources as ``<Class>:<id>``; both keep working here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel


class BaseResource(BaseModel):
    """A resource the platform knows by ``id`` once it exists (None before)."""

    id: str | None = None

    def __str__(self) -> str:
        return f"{type(self).__name__}:{self.id}"


class DeployableResource(BaseResource, ABC):
    """A resource that can be created on the platform, checked, and removed."""

    @abstractmethod
    def is_deployed(self) -> bool:
        """Whether the platform has it now (asks the platform; False when none runs)."""

    @abstractmethod
    async def deploy(self) -> DeployableResource:
        """Create it on the platform (idempotent); fills ``id``."""

    @abstractmethod
    async def undeploy(self) -> Any:
        """Remove it from the platform."""
