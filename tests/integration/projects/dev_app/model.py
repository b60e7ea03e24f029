"""A class worker: each public method at POST /model/<method>/runsync, on one instance."""

from runpod_flash import CpuLiveServerless, remote

models = CpuLiveServerless(name="dev-app-model")


@remote(models)
class Model:
    def __init__(self) -> None:
        self.calls = 0

    async def predict(self, text: str) -> dict:
        """Label the text."""
        self.calls += 1
        return {"label": "long" if len(text) > 5 else "short", "calls": self.calls}

    def reset(self) -> int:
        self.calls = 0
        return self.calls
