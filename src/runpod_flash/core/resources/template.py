"""`runpod_flash.core.resources.template`: pod templates and their env pairs (re-exported)."""

from runpod_flash.resources.template import KeyValuePair, PodTemplate

__all__ = ["KeyValuePair", "PodTemplate"]
