"""An endpoint another caller (a script) provisions before `flash run` starts."""

from runpod_flash import CpuLiveServerless, remote

shared = CpuLiveServerless(name="dev-cleanup-shared")


@remote(shared)
def ping_shared() -> str:
    return "pong"


if __name__ == "__main__":
    print(ping_shared())
