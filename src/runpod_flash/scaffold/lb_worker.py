"""A load-balanced API: each function is an HTTP route of the endpoint's workers.

`flash run` serves these routes under the file's prefix: POST /lb_worker/process and
GET /lb_worker/health.
"""

from datetime import datetime, timezone

from runpod_flash import CpuLiveLoadBalancer, remote

# For GPU routes, use LiveLoadBalancer(name=..., gpus=[GpuGroup.ANY]) instead.
api_config = CpuLiveLoadBalancer(name="{{project_name}}-api")


@remote(resource_config=api_config, method="POST", path="/process")
async def process(input_data: dict) -> dict:
    """Echo the request body back with a timestamp."""
    return {
        "status": "success",
        "echo": input_data,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }


@remote(resource_config=api_config, method="GET", path="/health")
async def health() -> dict:
    """Report that the API's workers answer."""
    return {"status": "healthy"}
