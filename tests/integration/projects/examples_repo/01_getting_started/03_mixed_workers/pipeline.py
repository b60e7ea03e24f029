# CPU preprocess -> GPU inference -> CPU postprocess, orchestrated by a load-balanced route.
import os

from cpu_worker import postprocess_results, preprocess_text
from gpu_worker import gpu_inference

from runpod_flash import CpuLiveLoadBalancer, remote

pipeline = CpuLiveLoadBalancer(name="01_03_pipeline")


@remote(pipeline, method="POST", path="/classify")
async def classify(text: str) -> dict:
    """The whole pipeline: every step runs on its own endpoint."""
    pre = await preprocess_text({"text": text})
    scored = await gpu_inference({"cleaned_text": pre["cleaned_text"]})
    result = await postprocess_results({
        "predictions": scored["predictions"],
        "metadata": {"word_count": pre["word_count"]},
    })
    return {**result, "steps": [pre["endpoint"], scored["endpoint"]],
            "stage": os.environ.get("STAGE")}
