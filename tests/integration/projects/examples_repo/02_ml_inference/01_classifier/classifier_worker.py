from runpod_flash import CpuServerlessEndpoint, remote

models = CpuServerlessEndpoint(name="02_01_classifier")


@remote(models)
class Classifier:
    """Loads its "model" once per instance; every call reuses it."""

    def __init__(self, threshold: float = 0.5) -> None:
        import os

        self.threshold = threshold
        self.loads = 1
        self.calls = 0
        self.pid = os.getpid()

    def predict(self, text: str) -> dict:
        """Labels the text."""
        self.calls += 1
        score = min(1.0, len(text) / 20)
        return {"label": "long" if score >= self.threshold else "short", "score": score,
                "calls": self.calls, "loads": self.loads}
