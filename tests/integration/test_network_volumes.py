"""Network volumes on the real platform: workers see their endpoint's volume at /runpod-volume.

Tests that need a real mount skip, with the probe's reason, only where this machine cannot
mount one (not Linux, no privilege, no /runpod-volume for a non-root user); the refusal test
runs everywhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    flash,
    platform_in,
    platform_status,
    run_python,
    stop_platform,
    wait_for,
    worker_pids,
)
from runpod_flash import CpuLiveLoadBalancer, CpuLiveServerless, NetworkVolume, remote

VOLUMES = Path(os.environ["FLASH_HOME"]) / "volumes"  # the session platform's

models = NetworkVolume(name="vol-models", size=50)
lb_api = CpuLiveLoadBalancer(name="vol-lb", networkVolume=models)
queue_api = CpuLiveServerless(name="vol-queue", networkVolume=models)
# One resource name, two volumes: two endpoints, each with its own volume.
left_api = CpuLiveLoadBalancer(name="vol-pair", networkVolume=NetworkVolume(name="vol-left"))
right_api = CpuLiveLoadBalancer(name="vol-pair", networkVolume=NetworkVolume(name="vol-right"))
survivor_api = CpuLiveLoadBalancer(name="vol-survivor", workersMax=1,
                                   networkVolume=NetworkVolume(name="vol-survive"))
doomed_api = CpuLiveLoadBalancer(name="vol-doomed", workersMax=1,
                                 networkVolume=NetworkVolume(name="vol-doomed"))


def read_volume() -> dict[str, str]:
    """The example's pattern: list the files in /runpod-volume and read them."""
    root = "/runpod-volume"
    files = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path) as handle:
                files[name] = handle.read()
    return files


@remote(lb_api, method="GET", path="/files")
def lb_files() -> dict[str, str]:
    return read_volume()


@remote(queue_api)
def queue_files(name: str, text: str) -> dict[str, str]:
    with open(os.path.join("/runpod-volume", name), "w") as handle:
        handle.write(text)
    return read_volume()


@remote(left_api, method="GET", path="/left")
def left_files() -> dict[str, str]:
    return read_volume()


@remote(right_api, method="GET", path="/right")
def right_files() -> dict[str, str]:
    return read_volume()


@remote(survivor_api, method="POST", path="/count")
def count_in_volume() -> tuple[int, int]:
    path = "/runpod-volume/count.txt"
    count = 1
    if os.path.exists(path):
        with open(path) as handle:
            count += int(handle.read())
    with open(path, "w") as handle:
        handle.write(str(count))
    return count, os.getpid()


@remote(doomed_api, method="GET", path="/pid")
def doomed_pid() -> int:
    os.listdir("/runpod-volume")
    return os.getpid()


@pytest.fixture(scope="module")
def mountable(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip where this machine cannot attach a volume (the platform would refuse too)."""
    probe = subprocess.run(
        [sys.executable, "-m", "runpod_flash.runtime.volume", "--check",
         str(tmp_path_factory.mktemp("probe"))],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"this machine cannot mount network volumes: {probe.stderr.strip()}")


@pytest.fixture
def fresh_home(tmp_path: Path) -> Iterator[Path]:
    """A FLASH_HOME of its own; its platform (and workers) are stopped afterwards."""
    home = tmp_path / "flash-home"
    home.mkdir()
    yield home
    stop_platform(home)


def said(result: subprocess.CompletedProcess[str]) -> str:
    """A command's output with the terminal's line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def write_files(volume: str, files: dict[str, str]) -> Path:
    path = VOLUMES / volume
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_live_lb_worker_lists_and_reads_files_in_runpod_volume(mountable: None) -> None:
    write_files("vol-models", {"model.txt": "weights v1", "config.json": '{"layers": 2}'})
    files = lb_files()
    assert files["model.txt"] == "weights v1" and files["config.json"] == '{"layers": 2}'
    # Mounted privately: this process (outside the worker) does not see the volume there.
    assert "model.txt" not in os.listdir("/runpod-volume")


def test_live_queue_worker_reads_and_writes_its_volume(mountable: None) -> None:
    path = write_files("vol-models", {"model.txt": "weights v1"})
    files = queue_files("from-worker.txt", "written by a queue worker")
    assert files["model.txt"] == "weights v1"
    assert (path / "from-worker.txt").read_text() == "written by a queue worker"
    assert lb_files()["from-worker.txt"] == "written by a queue worker"  # one volume, shared


def test_two_endpoints_with_different_volumes_each_see_their_own(mountable: None) -> None:
    write_files("vol-left", {"side.txt": "left"})
    write_files("vol-right", {"side.txt": "right"})
    assert left_files() == {"side.txt": "left"}
    assert right_files() == {"side.txt": "right"}
    pair = [e for e in platform_status()["endpoints"] if e["name"] == "vol-pair"]
    assert len(pair) == 2


def test_data_written_by_a_worker_survives_the_worker_being_killed(mountable: None) -> None:
    first, pid = count_in_volume()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid not in worker_pids(platform_status(), "vol-survivor"))
    second, new_pid = count_in_volume()
    assert (second, new_pid != pid) == (first + 1, True)
    assert (VOLUMES / "vol-survive" / "count.txt").read_text() == str(second)


def test_a_worker_never_runs_without_its_volume(mountable: None) -> None:
    pid = doomed_pid()
    forced = flash("volume", "delete", "vol-doomed", "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid not in worker_pids(platform_status(), "vol-doomed"))
    with pytest.raises(RuntimeError, match=(
            r"flash worker: cannot attach network volume 'vol-doomed' at /runpod-volume: its "
            r"directory .* is missing; create the volume again")):
        doomed_pid()


def test_flash_volume_create_list_delete() -> None:
    created = flash("volume", "create", "CLI Data", "--size", "5")
    assert created.returncode == 0, created.stderr
    assert f"volume cli-data created {VOLUMES / 'cli-data'}" in said(created)
    assert "already exists" in flash("volume", "create", "cli-data").stdout
    (VOLUMES / "cli-data" / "blob").write_bytes(b"x" * 2048)
    listed = json.loads(flash("volume", "list", "--json").stdout)
    entry = next(v for v in listed["volumes"] if v["name"] == "cli-data")
    assert (entry["bytes"], entry["size_gb"], entry["endpoints"]) == (2048, 5, [])
    kept = subprocess.run([sys.executable, "-m", "runpod_flash.cli", "volume", "delete",
                           "cli-data"], input="n\n", capture_output=True, text=True, timeout=60)
    assert kept.returncode == 1 and (VOLUMES / "cli-data" / "blob").exists()
    deleted = flash("volume", "delete", "cli-data", "--yes")
    assert deleted.returncode == 0 and "deleted volume cli-data" in said(deleted)
    assert not (VOLUMES / "cli-data").exists()
    missing = flash("volume", "delete", "cli-data", "--yes")
    assert missing.returncode == 1 and "no volume named 'cli-data'" in said(missing)


RESTART_CALL = """
import json, os
from runpod_flash import CpuLiveLoadBalancer, NetworkVolume, remote
api = CpuLiveLoadBalancer(name="vol-restart", networkVolume=NetworkVolume(name="vol-keep"))
@remote(api, method="POST", path="/note")
def note(text):
    with open("/runpod-volume/notes.txt", "a") as handle:
        handle.write(text + "\\n")
    return open("/runpod-volume/notes.txt").read().splitlines()
print(json.dumps(note(os.environ["NOTE"])))
"""


def test_data_survives_a_platform_restart(mountable: None, fresh_home: Path) -> None:
    first = run_python(RESTART_CALL, env={"FLASH_HOME": str(fresh_home), "NOTE": "before"})
    assert first.returncode == 0, first.stderr
    old_pid = platform_status(fresh_home)["pid"]
    stop_platform(fresh_home)
    second = run_python(RESTART_CALL, env={"FLASH_HOME": str(fresh_home), "NOTE": "after"})
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1]) == ["before", "after"]
    assert platform_status(fresh_home)["pid"] != old_pid
    assert (fresh_home / "volumes" / "vol-keep" / "notes.txt").read_text() == "before\nafter\n"


VOLUME_APP = '''
import os

from runpod_flash import CpuLoadBalancerSlsResource, CpuServerlessEndpoint, NetworkVolume, remote

volume = NetworkVolume(name="deployed-data", size=10)
api = CpuLoadBalancerSlsResource(name="vol-api", networkVolume=volume)
jobs = CpuServerlessEndpoint(name="vol-jobs", networkVolume=volume)


@remote(api, method="GET", path="/files")
def files() -> dict:
    root = "/runpod-volume"
    return {name: open(os.path.join(root, name)).read() for name in sorted(os.listdir(root))}


@remote(jobs)
def save(name: str, text: str) -> list:
    with open(os.path.join("/runpod-volume", name), "w") as handle:
        handle.write(text)
    return sorted(os.listdir("/runpod-volume"))
'''


@pytest.fixture
def volume_project(tmp_path: Path) -> Path:
    project = tmp_path / "volume_app"
    project.mkdir()
    (project / "volume_app.py").write_text(textwrap.dedent(VOLUME_APP))
    return project


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def test_deployed_endpoints_see_their_volume_and_undeploy_keeps_it(
    mountable: None, fresh_home: Path, volume_project: Path
) -> None:
    env = {"FLASH_HOME": str(fresh_home)}
    volume = fresh_home / "volumes" / "deployed-data"
    volume.mkdir(parents=True)
    (volume / "a.txt").write_text("A")
    deployed = flash("deploy", str(volume_project), "--json", env=env)
    assert deployed.returncode == 0, deployed.stderr
    urls = {r["name"]: r["url"] for r in json.loads(deployed.stdout)}
    assert get_json(urls["vol-api"] + "/files") == {"a.txt": "A"}
    platform = platform_in(fresh_home)
    assert platform is not None
    job = platform.call("POST", "/v2/vol-jobs/runsync",
                        {"input": {"function": "save", "name": "b.txt", "text": "B"}}, 60)
    assert job["status"] == "COMPLETED" and job["output"] == ["a.txt", "b.txt"]
    assert get_json(urls["vol-api"] + "/files") == {"a.txt": "A", "b.txt": "B"}

    in_use = flash("volume", "delete", "deployed-data", "--yes", env=env)
    assert in_use.returncode == 1
    assert "used by endpoint(s) vol-api, vol-jobs" in said(in_use)
    assert flash("undeploy", "--all", "--yes", env=env).returncode == 0
    assert sorted(p.name for p in volume.iterdir()) == ["a.txt", "b.txt"]
    listed = json.loads(flash("volume", "list", "--json", env=env).stdout)["volumes"]
    assert [(v["name"], v["size_gb"], v["endpoints"]) for v in listed] == [
        ("deployed-data", 10, [])]


def test_deploy_and_live_call_are_refused_when_volumes_cannot_be_mounted(
    fresh_home: Path, volume_project: Path
) -> None:
    impossible = "/proc/flash-no-such-dir/runpod-volume"  # no one can create this mount point
    env = {"FLASH_HOME": str(fresh_home), "FLASH_VOLUME_MOUNT_POINT": impossible}
    refused = flash("deploy", str(volume_project), env=env)
    assert refused.returncode == 1
    message = said(refused)
    assert "names network volume 'deployed-data', but this machine cannot attach it to " \
           "workers" in message, message
    assert f"{impossible} does not exist and cannot be created" in message
    assert f"sudo mkdir {impossible}" in message
    assert platform_status(fresh_home)["endpoints"] == []
    assert not (fresh_home / "volumes" / "deployed-data").exists()
    live = run_python(RESTART_CALL, env={**env, "NOTE": "never"})
    assert live.returncode == 1
    assert "ProvisioningError" in live.stderr and f"sudo mkdir {impossible}" in live.stderr
    assert not (fresh_home / "volumes" / "vol-keep").exists()
