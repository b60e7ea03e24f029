from runpod_flash import CpuLiveServerless, remote

cpu = CpuLiveServerless(name="01_03_cpu")


@remote(cpu)
async def preprocess_text(payload: dict) -> dict:
    """Cleans the text and counts its words."""
    import os

    cleaned = " ".join(payload["text"].split()).lower()
    return {"cleaned_text": cleaned, "word_count": len(cleaned.split()),
            "endpoint": os.environ.get("FLASH_ENDPOINT_ID")}


@remote(cpu)
async def postprocess_results(payload: dict) -> dict:
    """Picks the best prediction."""
    best = max(payload["predictions"], key=lambda p: p["score"])
    return {"label": best["label"], "metadata": payload["metadata"]}
