"""What a worker is started with: its environment (own credentials, never the platform's),
its program, and the dependency environment its endpoint needs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runpod_flash import config
from runpod_flash.control import ENV_ENVIRONMENT
from runpod_flash.dependencies import APPROVED_KEY
from runpod_flash.platform.credentials import Grant
from runpod_flash.platform.endpoints import Endpoint, Worker
from runpod_flash.platform.environments import choose_torch_backend, ensure_environment
from runpod_flash.platform.providers.base import RUNTIME_ARGS, Resources, WorkerLaunch


async def prepare_environment(
    spec: dict[str, Any], progress: Callable[[str], None], *, gpus_present: bool
) -> str:
    """The interpreter of the endpoint's dependency environment, built once per set."""
    return await ensure_environment(
        spec.get("python") or "python3",
        list(spec.get("dependencies") or []),
        list(spec.get("system_dependencies") or []),
        config.envs_dir(),
        progress,
        torch_backend=choose_torch_backend(spec, gpus_present=gpus_present),
        approved_system_dependencies=list(spec.get(APPROVED_KEY) or []),
        endpoint=str(spec.get("name", "")),
    )


def worker_launch(
    endpoint: Endpoint,
    worker: Worker,
    spec: dict[str, Any],
    python: str,
    env: dict[str, str],
) -> WorkerLaunch:
    """A deployed handler script runs as is; everything else runs our worker runtime."""
    handler = spec.get("handler_file")
    return WorkerLaunch(
        worker.id, endpoint.id, python, env, worker.log_path,
        spec.get("app_dir") or spec.get("cwd") or str(config.flash_home()),
        ("-m", "runpod_flash.runtime.script", handler) if handler else RUNTIME_ARGS,
        Resources.of(spec),
        tuple(spec.get("dependencies") or ()),
        spec.get("artifact"),
    )


def worker_env(
    platform_url: str,
    endpoint: Endpoint,
    worker: Worker,
    spec: dict[str, Any],
    grant: Grant,
    volume_env: dict[str, str],
) -> dict[str, str]:
    """The worker's environment: its own token (never the platform's) and secret."""
    env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
    env.update({
        config.ENV_PLATFORM_URL: platform_url,
        config.ENV_PLATFORM_TOKEN: grant.token,
        config.ENV_GATEWAY_SECRET: grant.gateway_secret,
        config.ENV_WORKER_ID: worker.id,
        config.ENV_ENDPOINT_ID: endpoint.id,
        "FLASH_RESOURCE_NAME": endpoint.name,
    })
    if spec.get("app_dir"):
        env["FLASH_APP_DIR"] = spec["app_dir"]
    if spec.get("peers"):
        env[config.ENV_PEER_ENDPOINTS] = json.dumps(spec["peers"])
    if spec.get("environment"):  # deployed calls from this worker address its own
        env[ENV_ENVIRONMENT] = str(spec["environment"])
        env["FLASH_APP"] = str(spec.get("app") or "")
    env.update(volume_env)
    queued = spec.get("type") == "QB"
    env["FLASH_WORKER_MODE"] = ("queue-" if queued else "") + (
        "deployed" if spec.get("app_dir") else "live"
    )
    if queued:
        env.update(runpod_worker_env(platform_url, endpoint, worker, grant.token))
    return env


def runpod_worker_env(platform_url: str, endpoint: Endpoint, worker: Worker, token: str
                      ) -> dict[str, str]:
    """The variables a Runpod worker (ours or `runpod.serverless.start`) pulls jobs with."""
    base = f"{platform_url}/v2/{endpoint.id}"
    return {
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=local",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=local",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=local",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=local",
        "RUNPOD_AI_API_KEY": token,
        "RUNPOD_POD_ID": worker.id,
        "RUNPOD_ENDPOINT_ID": endpoint.id,
        "RUNPOD_PING_INTERVAL": "2000",
        "FLASH_JOB_CONCURRENCY": str(endpoint.spec.get("concurrency", 1)),
    }


def log_path(endpoint_id: str, worker_id: str) -> Path:
    return config.logs_dir() / endpoint_id / f"{worker_id}.log"
