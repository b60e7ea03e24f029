"""`flash init` output as a user gets it: it builds untouched, and `.env` values reach workers
named in `env` without ever being printed, packed or inherited by the platform."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import flash, run_python, stop_platform

SECRET = "s3cret-value-5f1c"
UNNAMED = "unnamed-value-9a2e"

ENV_SCRIPT = '''
import json
import os

from runpod_flash import CpuLiveServerless, remote

config = CpuLiveServerless(name="env-check", env={"INIT_TEST_TOKEN": os.environ["INIT_TEST_TOKEN"]})


@remote(config)
def worker_env() -> dict:
    import os
    return {name: os.environ.get(name) for name in ("INIT_TEST_TOKEN", "INIT_TEST_UNNAMED")}


if __name__ == "__main__":
    print(json.dumps(worker_env()))
'''


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A FLASH_HOME of this module; the platform a script starts there is stopped after."""
    path = tmp_path_factory.mktemp("init-home")
    yield path
    stop_platform(path)


@pytest.fixture(scope="module")
def env(home: Path) -> dict[str, str]:
    os.environ.pop("INIT_TEST_TOKEN", None)
    os.environ.pop("INIT_TEST_UNNAMED", None)
    return {"FLASH_HOME": str(home), "FLASH_PLATFORM_PORT": "0"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """`flash init demo` in an empty directory, plus a `.env` with a secret."""
    parent = tmp_path_factory.mktemp("init")
    result = flash("init", "demo", cwd=parent, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "flash run" in result.stdout
    project = parent / "demo"
    (project / ".env").write_text(
        f"INIT_TEST_TOKEN={SECRET}\nexport INIT_TEST_UNNAMED='{UNNAMED}'\n")
    return project


def test_init_refuses_to_overwrite(demo: Path, env: dict[str, str]) -> None:
    result = flash("init", "demo", cwd=demo.parent, env=env, timeout=60)
    assert result.returncode == 1
    assert "--force" in result.stderr and "cpu_worker.py" in result.stderr


def test_scaffold_builds_untouched(demo: Path, env: dict[str, str]) -> None:
    result = flash("build", cwd=demo, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Loaded INIT_TEST_TOKEN, INIT_TEST_UNNAMED from .env" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    manifest = json.loads((demo / ".flash" / "flash_manifest.json").read_text())
    assert sorted(manifest["resources"]) == ["demo-api", "demo-cpu-worker"]
    assert manifest["routes"]["demo-api"] == {
        "POST /process": "process", "GET /health": "health"}
    assert manifest["resources"]["demo-cpu-worker"]["dependencies"] == []  # no openflash
    with tarfile.open(demo / ".flash" / "artifact.tar.gz") as artifact:
        names = artifact.getnames()
    assert ".env" not in names and ".env.example" in names and "cpu_worker.py" in names


def test_env_value_reaches_a_worker_and_is_never_shown(demo: Path, env: dict[str, str]) -> None:
    (demo / "env_check.py").write_text(ENV_SCRIPT)
    # The script starts this home's platform, after loading `.env` on `from runpod_flash`.
    result = run_python("env_check.py", env=env, cwd=demo, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Named in env: there. Only in .env: not inherited through the platform's environment.
    assert seen == {"INIT_TEST_TOKEN": SECRET, "INIT_TEST_UNNAMED": None}

    as_json = flash("status", "--json", cwd=demo, env=env, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    endpoints = {e["name"]: e for e in json.loads(as_json.stdout)["endpoints"]}
    assert endpoints["env-check"]["env"] == {"INIT_TEST_TOKEN": "***"}
    table = flash("status", cwd=demo, env={**env, "COLUMNS": "300"}, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "INIT_TEST_TOKEN=***" in table.stdout
    for output in (as_json.stdout, table.stdout, table.stderr, result.stderr):
        assert SECRET not in output
