"""Dependency environments side by side: build time cold, rebuilt, cached, and size on disk.

For each dependency set the platform builds a layered uv venv (`platform/environments.py`):

- cold:    an empty uv cache, so everything is downloaded (from the configured index/mirror);
- rebuild: the environment is gone but uv's cache is warm (a new machine-local env);
- cached:  the environment exists (what every later worker start of the endpoint pays).

PyTorch is built for a CPU endpoint with the backend the platform chooses on this machine
(`choose_torch_backend`: `cpu` without GPUs). When the index for that build cannot be reached
the row is skipped with the reason. For an offline mirror, point pip or uv at it and run e.g.
`FLASH_TORCH_BACKEND=none BENCH_TORCH='torch==2.13.0' python benchmarks/environments.py`.

    python benchmarks/environments.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from runpod_flash.platform.environments import (
    DependencyInstallError,
    choose_torch_backend,
    directory_size,
    ensure_environment,
)
from runpod_flash.platform.gpus import detect_gpus

CPU_SPEC = {"cpu": True, "gpuCount": 0}


def dependency_sets() -> list[tuple[str, list[str]]]:
    return [
        ("pure Python", ["tabulate==0.9.0"]),
        ("numpy", ["numpy"]),
        ("torch", [os.environ.get("BENCH_TORCH", "torch")]),
    ]


async def build(
    deps: list[str], envs: Path, backend: str | None
) -> tuple[float, str]:
    """Seconds one ensure_environment took, and the python it returned."""
    started = time.perf_counter()
    python = await ensure_environment(sys.executable, deps, [], envs, lambda _: None,
                                      torch_backend=backend)
    return time.perf_counter() - started, python


async def measure(deps: list[str], work: Path, backend: str | None) -> tuple[float, ...]:
    """(cold s, rebuild s, cached ms, size MB) for one dependency set."""
    envs = work / "envs"
    os.environ["UV_CACHE_DIR"] = str(work / "uv-cache")  # empty: a cold build
    cold, python = await build(deps, envs, backend)
    env_dir = Path(python).parents[1]
    size = directory_size(env_dir) / 1e6
    shutil.rmtree(env_dir)
    rebuild, _ = await build(deps, envs, backend)
    cached, _ = await build(deps, envs, backend)
    return cold, rebuild, cached * 1000, size


def reason(error: DependencyInstallError) -> str:
    """The line of uv's failure that says why, and our hint."""
    lines = str(error).splitlines()
    why = next((line.strip() for line in lines if "Failed to fetch" in line),
               next((line for line in lines if line.startswith("error:")), lines[0]))
    return f"{why}\n    {lines[-1]}"


async def main() -> None:
    backend = choose_torch_backend(CPU_SPEC, gpus_present=bool(detect_gpus()))
    print(f"uv torch backend for a CPU endpoint on this machine: {backend or 'none'}\n")
    print(f"{'set':<12} {'requirements':<22} {'cold s':>8} {'rebuild s':>10} {'cached ms':>10} "
          f"{'size MB':>8}")
    saved_cache = os.environ.get("UV_CACHE_DIR")
    try:
        for label, deps in dependency_sets():
            with tempfile.TemporaryDirectory(prefix="flash-bench-env-") as work:
                try:
                    cold, rebuild, cached, size = await measure(deps, Path(work), backend)
                except DependencyInstallError as exc:
                    print(f"{label:<12} {' '.join(deps):<22} skipped: {reason(exc)}")
                    continue
            print(f"{label:<12} {' '.join(deps):<22} {cold:>8.1f} {rebuild:>10.1f} "
                  f"{cached:>10.2f} {size:>8.1f}")
    finally:
        if saved_cache is None:
            os.environ.pop("UV_CACHE_DIR", None)
        else:
            os.environ["UV_CACHE_DIR"] = saved_cache


if __name__ == "__main__":
    asyncio.run(main())
