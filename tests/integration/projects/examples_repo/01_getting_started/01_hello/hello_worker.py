from runpod_flash import CpuLiveServerless, remote

hello = CpuLiveServerless(name="01_01_hello")


@remote(hello)
async def hello_world(payload: dict) -> dict:
    """Greets whoever the payload names."""
    return {"message": f"Hello, {payload.get('name', 'world')}!"}
