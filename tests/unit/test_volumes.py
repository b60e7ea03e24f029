"""Network volumes: names, the volumes folder, the mount probe's cache, worker settings."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runpod_flash import CpuLiveLoadBalancer, CpuServerlessEndpoint, NetworkVolume
from runpod_flash.platform.endpoints import live_endpoint_id
from runpod_flash.platform.volumes import (
    ENV_VOLUMES_DIR,
    VolumeRefused,
    Volumes,
    users_by_volume,
    volume_dir_name,
)
from runpod_flash.runtime import volume as runtime_volume


class CountingProbe:
    """Stands in for the mount probe subprocess; answers `reasons` in turn."""

    def __init__(self, *reasons: str | None) -> None:
        self.reasons = list(reasons)
        self.calls: list[tuple[Path, str]] = []

    async def __call__(self, source: Path, target: str) -> str | None:
        self.calls.append((source, target))
        return self.reasons.pop(0)


def spec_with(volume: str | None, name: str = "api") -> dict[str, object]:
    spec: dict[str, object] = {"name": name, "type": "LB"}
    if volume is not None:
        spec["networkVolume"] = {"name": volume, "size": 7}
    return spec


@pytest.mark.parametrize(("name", "directory"), [
    ("models", "models"), ("My Models", "my-models"), ("../etc", "etc"), ("a/b", "a-b"),
])
def test_volume_names_map_to_one_directory_inside_the_folder(name: str, directory: str) -> None:
    assert volume_dir_name(name) == directory


@pytest.mark.parametrize("name", ["..", "/", " ", "_"])
def test_names_without_letters_or_digits_are_refused(name: str) -> None:
    with pytest.raises(VolumeRefused, match="has no letters or digits; use a name like"):
        volume_dir_name(name)


def test_create_list_and_delete(tmp_path: Path) -> None:
    volumes = Volumes(tmp_path)
    path, created = volumes.create("Models", 50)
    assert (path, created) == (tmp_path / "models", True)
    assert volumes.create("models") == (path, False)
    (path / "weights.bin").write_bytes(b"x" * 10)
    (path / "sub").mkdir()
    (path / "sub" / "more").write_bytes(b"y" * 5)
    users = users_by_volume([("api", spec_with("models")), ("other", spec_with(None))])
    [listed] = volumes.list(users)
    assert {k: listed[k] for k in ("name", "path", "bytes", "size_gb", "endpoints")} == {
        "name": "models", "path": str(path), "bytes": 15, "size_gb": 50, "endpoints": ["api"]}
    with pytest.raises(VolumeRefused, match=r"used by endpoint\(s\) api; undeploy") as refused:
        volumes.delete("models", ["api"])
    assert refused.value.status == 409 and path.is_dir()
    assert volumes.delete("models", ["api"], force=True) == path
    assert not path.exists() and volumes.list({}) == []
    with pytest.raises(VolumeRefused, match="no volume named 'models'") as missing:
        volumes.delete("models", [])
    assert missing.value.status == 404


def test_declared_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(VolumeRefused, match="whole number of GB above 0"):
        Volumes(tmp_path).create("models", 0)


def test_folder_is_flash_home_volumes_unless_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VOLUMES_DIR, raising=False)
    assert Volumes().root == Path(os.environ["FLASH_HOME"]) / "volumes"
    monkeypatch.setenv(ENV_VOLUMES_DIR, str(tmp_path / "elsewhere"))
    assert Volumes().root == tmp_path / "elsewhere"


@pytest.mark.asyncio
async def test_a_successful_probe_runs_once(tmp_path: Path) -> None:
    probe = CountingProbe(None)
    volumes = Volumes(tmp_path, probe)
    await volumes.prepare(spec_with("a"))
    await volumes.prepare(spec_with("b"))
    await volumes.prepare(spec_with(None))
    assert probe.calls == [(tmp_path, "/runpod-volume")]
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()
    assert volumes.list({})[0]["size_gb"] == 7


@pytest.mark.asyncio
async def test_a_failed_probe_refuses_and_is_tried_again(tmp_path: Path) -> None:
    probe = CountingProbe("no namespaces here", None)
    volumes = Volumes(tmp_path, probe)
    with pytest.raises(VolumeRefused, match=(
        "endpoint 'api' names network volume 'data', but this machine cannot attach it to "
        "workers: no namespaces here")) as refused:
        await volumes.prepare(spec_with("data"))
    assert refused.value.status == 409 and not (tmp_path / "data").exists()
    await volumes.prepare(spec_with("data"))  # e.g. after `sudo mkdir /runpod-volume`
    assert len(probe.calls) == 2 and (tmp_path / "data").is_dir()


def test_worker_env_names_the_volume_or_clears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runtime_volume.ENV_VOLUME_MOUNT_POINT, "/mnt/vol")
    volumes = Volumes(tmp_path)
    assert volumes.worker_env(spec_with("My Data")) == {
        "FLASH_VOLUME_SOURCE": str(tmp_path / "my-data"), "FLASH_VOLUME_NAME": "my-data",
        "FLASH_VOLUME_MOUNT_POINT": "/mnt/vol"}
    assert volumes.worker_env(spec_with(None)) == {
        "FLASH_VOLUME_SOURCE": "", "FLASH_VOLUME_NAME": ""}


def test_spec_carries_the_volume_and_a_different_volume_is_another_endpoint() -> None:
    plain = CpuLiveLoadBalancer(name="api")
    assert "networkVolume" not in plain.platform_spec()
    a = CpuLiveLoadBalancer(name="api", networkVolume=NetworkVolume(name="a", size=5))
    b = CpuLiveLoadBalancer(name="api", networkVolume=NetworkVolume(name="b"))
    assert a.platform_spec()["networkVolume"] == {"name": "a", "size": 5}
    assert CpuServerlessEndpoint(name="q", networkVolume=NetworkVolume(name="a")
                                 ).platform_spec()["networkVolume"] == {"name": "a", "size": 100}
    assert len({plain.config_hash, a.config_hash, b.config_hash}) == 3
    ids = {live_endpoint_id(r.platform_spec()) for r in (plain, a, b)}
    assert len(ids) == 3


def test_worker_without_a_volume_attaches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runtime_volume.ENV_VOLUME_SOURCE, "")
    runtime_volume.attach_from_env()  # returns before touching any namespace


def test_attach_needs_linux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(runtime_volume.VolumeError, match=(
            r"cannot attach network volume 'm' at /runpod-volume: network volumes need Linux "
            r"mount namespaces and this machine runs darwin; run the platform on Linux")):
        runtime_volume.attach(str(tmp_path), "/runpod-volume", "m")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_attach_refuses_once_threads_run(tmp_path: Path) -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        with pytest.raises(runtime_volume.VolumeError, match="already runs threads"):
            runtime_volume.attach(str(tmp_path), str(tmp_path / "mnt"), "m")
    finally:
        release.set()
        thread.join()


def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **env})


def test_worker_with_a_missing_volume_exits_with_one_clear_line(tmp_path: Path) -> None:
    result = run("from runpod_flash.runtime.volume import attach_or_exit; attach_or_exit()",
                 {"FLASH_VOLUME_SOURCE": str(tmp_path / "gone"), "FLASH_VOLUME_NAME": "gone"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"flash worker: cannot attach network volume 'gone' at /runpod-volume: its directory "
        f"{tmp_path / 'gone'} is missing; create the volume again (flash volume create gone)")


def test_probe_says_why_a_mount_point_cannot_be_used(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "runpod_flash.runtime.volume", "--check", str(tmp_path),
         "--mount-point", str(blocker)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"{blocker} exists and is not a directory" in result.stderr
