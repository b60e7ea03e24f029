"""A load-balanced API served by the embedded platform: run it with `python examples/hello_api.py`.

The first call starts the platform (in the background, bound to 127.0.0.1) and a worker
process; every call below runs in that worker, not in this script.
"""

import asyncio
import os

from runpod_flash import CpuLiveLoadBalancer, remote

api = CpuLiveLoadBalancer(name="hello-api", workersMax=2)

users_db = {1: {"id": 1, "name": "Alice"}}


class UserNotFound(Exception):
    pass


@remote(api, method="POST", path="/api/greet")
async def greet_user(name: str):
    return {"message": f"Hello, {name}!", "worker_pid": os.getpid()}


@remote(api, method="POST", path="/users")
async def create_user(name: str):
    user_id = max(users_db) + 1
    users_db[user_id] = {"id": user_id, "name": name}
    print(f"created user {user_id} on worker {os.getpid()}")  # shown in your terminal
    return users_db[user_id]


@remote(api, method="GET", path="/users/{user_id}")
def get_user(user_id: int):
    if user_id not in users_db:
        raise UserNotFound(f"User {user_id} not found")
    return users_db[user_id]


async def main() -> None:
    print(await greet_user("Alice"), "| this script's pid:", os.getpid())
    created = await create_user("Charlie")
    print("fetched back:", get_user(created["id"]))  # the worker kept it: module state
    try:
        get_user(999)
    except UserNotFound as exc:  # the remote exception, as its own class
        print("remote error:", repr(exc))
    results = await asyncio.gather(*(greet_user(f"caller-{i}") for i in range(20)))
    print("20 concurrent calls served by workers", sorted({r["worker_pid"] for r in results}))
    print("Inspect with `flash platform status`; stop with `flash platform stop`.")


if __name__ == "__main__":
    asyncio.run(main())
