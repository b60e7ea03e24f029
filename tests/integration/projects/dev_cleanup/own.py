"""An endpoint only the dev server provisions: Ctrl-C stops it."""

from runpod_flash import CpuLiveLoadBalancer, remote

own = CpuLiveLoadBalancer(name="dev-cleanup-own")


@remote(own, method="GET", path="/hi")
async def hi() -> dict:
    return {"hi": True}
