"""A queue-based worker: each call is a job on the endpoint's queue, run by a worker process.

`flash run` serves it at POST /cpu_worker/runsync with a body {"input": {...}}.
"""

import platform
import sys
from datetime import datetime, timezone

from runpod_flash import CpuLiveServerless, remote

# CPU workers run on any machine. On a machine with NVIDIA GPUs, use a GPU endpoint instead:
#   from runpod_flash import GpuGroup, LiveServerless
#   gpu_config = LiveServerless(name="{{project_name}}-gpu-worker", gpus=[GpuGroup.ANY])
# and add dependencies=["torch"] to @remote; each worker then gets its own GPU.
cpu_config = CpuLiveServerless(name="{{project_name}}-cpu-worker")


@remote(resource_config=cpu_config)
async def cpu_hello(input_data: dict) -> dict:
    """Greet the caller from a worker process."""
    return {
        "message": f"Hello, {input_data.get('name', 'world')}!",
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "platform": platform.platform(),
        "python_version": sys.version.split()[0],
    }
