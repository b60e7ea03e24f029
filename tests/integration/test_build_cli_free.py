"""`build_project` on the repository's own example, then the artifact round trip a deploy does.

No CLI and no platform: build, extract, and import the extracted code the way a worker would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from runpod_flash.build import build_project
from runpod_flash.build.artifact import extract_artifact

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello_api.py"

CHECK = """
import importlib, json, sys
manifest = json.load(open("flash_manifest.json"))
seen = {}
for name, resource in manifest["resources"].items():
    for fn in resource["functions"]:
        config = getattr(importlib.import_module(fn["module"]), fn["name"]).__remote_config__
        seen[f"{config['method']} {config['path']}"] = fn["name"]
print(json.dumps(seen))
"""


def test_example_builds_extracts_and_imports(tmp_path: Path) -> None:
    source = tmp_path / "project"
    source.mkdir()
    shutil.copy(EXAMPLE, source)
    result = build_project(source)
    routes = result.manifest["routes"]["hello-api"]
    assert routes["POST /api/greet"] == "greet_user"

    release = tmp_path / "release"
    extract_artifact(result.artifact_path, release)
    assert sorted(p.name for p in release.iterdir()) == ["flash_manifest.json", "hello_api.py"]
    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=release, capture_output=True, text=True, timeout=60,
        env={**os.environ, "FLASH_BUILD": "1"}, check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == routes
