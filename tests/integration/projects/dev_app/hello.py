"""A file with one queue function: served at POST /hello/runsync.

Its greeting comes from the project's `.env` (DEV_APP_GREETING), which `flash run` loads;
the endpoint's `env` passes it on to the workers.
"""

import os

from runpod_flash import CpuLiveServerless, remote

worker = CpuLiveServerless(
    name="dev-app-hello", env={"GREETING": os.environ.get("DEV_APP_GREETING", "Hi")}
)


@remote(worker)
async def hello(payload: dict) -> dict:
    """Greet the caller.

    The worker's print below shows in the dev server's terminal, tagged with the endpoint.
    """
    import os

    print("greeting", payload.get("name"))
    return {"message": f"{os.environ['GREETING']}, {payload.get('name', 'world')}!"}
