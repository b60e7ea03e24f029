"""Load-balanced routes: served under /api with their own method and path."""

from runpod_flash import CpuLiveLoadBalancer, remote

api = CpuLiveLoadBalancer(name="dev-app-api")


@remote(api, method="GET", path="/users/{user_id}")
async def get_user(user_id: int, verbose: bool = False) -> dict:
    """Look a user up."""
    return {"user_id": user_id, "verbose": verbose}


@remote(api, method="POST", path="/echo")
async def echo(message: str, times: int = 1) -> dict:
    """Echo a message."""
    return {"echo": " ".join([message] * times)}


@remote(api, method="POST", path="/validate")
def validate(text: str) -> dict:
    """Refuse empty text (a ValueError: 422)."""
    if not text.strip():
        raise ValueError("text must not be empty")
    return {"valid": True}


@remote(api, method="POST", path="/count")
async def count(upto: int):
    """Stream numbers as server-sent events."""
    for number in range(upto):
        yield {"n": number}
