"""A plain Runpod worker script, unchanged from what runs on Runpod."""

import runpod


def handler(job):
    data = job["input"]
    if data.get("stream"):
        return streamer(data["stream"])
    return {"echo": data, "job": job["id"]}


def streamer(n):
    for i in range(n):
        yield {"chunk": i}


def dispatch(job):
    if job["input"].get("stream"):
        yield from streamer(job["input"]["stream"])
    else:
        yield {"echo": job["input"]}


runpod.serverless.start({"handler": dispatch, "return_aggregate_stream": True})
