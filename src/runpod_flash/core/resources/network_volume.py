"""`runpod_flash.core.resources.network_volume`: network volumes and datacenters
(re-exported)."""

from runpod_flash.resources.enums import DataCenter
from runpod_flash.resources.template import NetworkVolume

__all__ = ["DataCenter", "NetworkVolume"]
