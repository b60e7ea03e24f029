"""A load-balanced route that awaits queue functions of other endpoints."""

from jobs import add, double

from runpod_flash import CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="pipeline")


@remote(api, method="POST", path="/pipeline")
async def pipeline(x: int) -> dict:
    doubled = await double(x)
    total = add(doubled, 1)
    return {"doubled": doubled, "total": total}
