"""Where workers run: this machine's processes (`local`, the default) or a Ray cluster's
nodes (`ray`, with `pip install 'openflash[ray]'`). See `providers.base` for the interface."""

from __future__ import annotations

import os
from pathlib import Path

from runpod_flash.platform.providers.base import Provider

ENV_PROVIDER = "FLASH_PROVIDER"
ENV_RAY_ADDRESS = "FLASH_RAY_ADDRESS"
PROVIDERS = ("local", "ray")


class ProviderUnavailable(RuntimeError):
    """The chosen provider cannot run here; the message names the fix."""


def make_provider(logs_dir: Path) -> Provider:
    """The provider FLASH_PROVIDER names (`flash platform start --provider`)."""
    name = os.environ.get(ENV_PROVIDER, "local") or "local"
    if name == "local":
        from runpod_flash.platform.gpus import GpuAllocator, detect_gpus
        from runpod_flash.platform.providers.local import LocalProvider

        return LocalProvider(logs_dir, GpuAllocator(detect_gpus()))
    if name == "ray":
        from runpod_flash.platform.providers.ray import RayProvider

        return RayProvider.connect(os.environ.get(ENV_RAY_ADDRESS) or "auto", logs_dir)
    raise ProviderUnavailable(
        f"{ENV_PROVIDER}={name!r} names no provider; use one of: {', '.join(PROVIDERS)}"
    )
