from runpod_flash import GpuGroup, LiveServerless, remote

gpu = LiveServerless(name="01_03_gpu", gpus=[GpuGroup.ANY])


@remote(gpu)
async def gpu_inference(payload: dict) -> dict:
    """Scores the text (a stand-in for a model on a GPU)."""
    import os

    positive = sum(word in {"good", "great", "love"} for word in payload["cleaned_text"].split())
    return {"predictions": [{"label": "positive", "score": positive},
                            {"label": "neutral", "score": 0.5}],
            "endpoint": os.environ.get("FLASH_ENDPOINT_ID")}
