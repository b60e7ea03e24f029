"""A queue function that prints, then waits for a marker file: its output shows in the dev
server's terminal while the call is still running."""

from runpod_flash import CpuLiveServerless, remote

worker = CpuLiveServerless(name="dev-app-waits")


@remote(worker)
async def wait_for_marker(marker: str) -> bool:
    """Print a line, then wait (30 s at most) for `marker` to exist."""
    import os
    import time

    print("waiting for the marker", os.path.basename(marker))
    deadline = time.monotonic() + 30
    while not os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.path.exists(marker)
