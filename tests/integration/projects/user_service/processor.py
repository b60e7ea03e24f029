"""The seed's "Verifying Deployment" route: POST /api/process {"x": 5, "y": 3}."""

from runpod_flash import CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="processor", workersMax=2)


@remote(api, method="POST", path="/api/process")
async def process_data(x: int, y: int):
    return {"result": x + y}
