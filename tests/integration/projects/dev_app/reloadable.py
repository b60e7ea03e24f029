"""Edited by the hot-reload tests (on a copy of this project)."""

from runpod_flash import CpuLiveServerless, remote

reload_worker = CpuLiveServerless(name="dev-app-reload")

VERSION = "v1"


def _label() -> str:
    return f"version {VERSION}"


@remote(reload_worker)
def version() -> str:
    """Which version of this file serves."""
    return _label()
