"""The worker process: `python -m runpod_flash.runtime`."""
