"""Version history and artifact retention, on a real store and a real artifacts folder."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from runpod_flash import config
from runpod_flash.config import InvalidSetting
from runpod_flash.platform import artifacts, versions
from runpod_flash.platform.artifact_retention import Retention
from runpod_flash.platform.endpoints import Endpoint, Worker, spec_version
from runpod_flash.platform.store import Store
from runpod_flash.platform.versions import RollbackRefused

HOUR = 3600.0


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "home"))
    store = Store(tmp_path / "state.db")
    yield store
    store.close()


def spec(artifact: str, **extra: Any) -> dict[str, Any]:
    return {"name": "api", "type": "LB", "artifact": artifact, **extra}


def sha(char: str) -> str:
    return char * 64


def deploy(store: Store, endpoint_id: str, spec: dict[str, Any], keep: int = 3,
           how: str = "deploy", at: float = 0.0) -> None:
    """What a successful deploy leaves: the endpoint's row and its version recorded."""
    store.save_endpoint(endpoint_id, "api", "deployed", spec)
    versions.record(store, endpoint_id, spec, how, keep, deployed_at=at or None)


def test_keep_versions_is_validated_and_names_its_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASH_KEEP_VERSIONS", raising=False)
    assert versions.keep_versions() == 5
    monkeypatch.setenv("FLASH_KEEP_VERSIONS", "2")
    assert versions.keep_versions() == 2
    for bad in ("0", "-1", "2.5", "two", "٣"):
        monkeypatch.setenv("FLASH_KEEP_VERSIONS", bad)
        with pytest.raises(InvalidSetting, match=r"FLASH_KEEP_VERSIONS=.* 1 or more"):
            versions.keep_versions()


def test_history_is_newest_first_bounded_and_a_redeployed_version_moves_up(
        store: Store) -> None:
    for n, char in enumerate("abcd", 1):
        deploy(store, "api", spec(sha(char)), keep=3, at=n)
    kept = versions.kept(store, "api")
    assert [v.artifact for v in kept] == [sha("d"), sha("c"), sha("b")]
    assert kept[0].version == spec_version(spec(sha("d"))) and kept[0].how == "deploy"
    deploy(store, "api", spec(sha("b")), keep=3, how="rollback", at=5)
    kept = versions.kept(store, "api")
    assert [(v.artifact, v.how) for v in kept] == [
        (sha("b"), "rollback"), (sha("d"), "deploy"), (sha("c"), "deploy")]
    assert kept[0].spec == spec(sha("b"))
    assert versions.listing(kept, kept[0].version)[0] == {
        "index": 1, "version": kept[0].version, "artifact": sha("b"), "deployed_at": 5,
        "how": "rollback", "current": True}
    assert "spec" not in versions.listing(kept, None)[1]  # its env may hold secrets


def test_history_survives_a_restart(tmp_path: Path, store: Store) -> None:
    deploy(store, "api", spec(sha("a")))
    reopened = Store(tmp_path / "state.db")
    try:
        assert [v.artifact for v in versions.kept(reopened, "api")] == [sha("a")]
    finally:
        reopened.close()


def test_at_start_older_endpoints_are_adopted_and_a_lower_keep_applies(store: Store) -> None:
    store.save_endpoint("old", "old", "deployed", spec(sha("a")))
    store.save_endpoint("live-x", "x", "live", {"name": "x"})
    for n, char in enumerate("bcd", 1):
        deploy(store, "api", spec(sha(char)), keep=3, at=n)
    versions.settle(store, keep=2)
    versions.settle(store, keep=2)  # adopted once
    assert [(v.endpoint_id, v.artifact) for v in versions.kept(store)] == [
        ("old", sha("a")), ("api", sha("d")), ("api", sha("c"))]


def kept_list(store: Store) -> list[versions.KeptVersion]:
    for n, char in enumerate("abc", 1):
        deploy(store, "api", spec(sha(char)), at=n)
    return versions.kept(store, "api")  # c (current), b, a


def test_resolve_default_index_and_prefix(store: Store) -> None:
    kept = kept_list(store)
    current = kept[0].version
    assert versions.resolve(kept, None, current) is kept[1]
    assert versions.resolve(kept, None, kept[1].version) is kept[2]  # the one before that
    assert versions.resolve(kept, "3", current) is kept[2]
    assert versions.resolve(kept, kept[2].version[:6].upper(), current) is kept[2]
    assert versions.resolve(kept, kept[1].version, current) is kept[1]


@pytest.mark.parametrize(("ref", "status", "message"), [
    ("4", 404, "there is no version number 4; kept versions, newest first: 1 "),
    ("0", 404, "there is no version number 0"),
    ("ab", 400, "too short: give its number or at least 4 characters"),
    ("zzzz", 404, "no kept version 'zzzz'; kept versions, newest first: 1 "),
])
def test_resolve_refusals_list_the_kept_versions(store: Store, ref: str, status: int,
                                                 message: str) -> None:
    kept = kept_list(store)
    with pytest.raises(RollbackRefused, match=message) as refused:
        versions.resolve(kept, ref, kept[0].version)
    assert refused.value.status == status
    if status == 404:
        assert f"1 {kept[0].version} (current)" in str(refused.value)


def test_resolve_ambiguous_prefix_and_nothing_earlier() -> None:
    def kept(version: str) -> versions.KeptVersion:
        return versions.KeptVersion("api", version, {}, None, 0.0, "deploy")

    both = [kept("abcd11111111"), kept("abcd22222222")]
    with pytest.raises(RollbackRefused, match="matches abcd11111111, abcd22222222"):
        versions.resolve(both, "abcd", "abcd11111111")
    with pytest.raises(RollbackRefused, match="no version before the current one"):
        versions.resolve(both[:1], None, "abcd11111111")


def endpoint(endpoint_id: str, spec: dict[str, Any], *worker_versions: str) -> Endpoint:
    found = Endpoint(endpoint_id, "api", "deployed", spec)
    for n, version in enumerate(worker_versions or (found.version,)):
        found.workers[f"w{n}"] = Worker(f"w{n}", endpoint_id, version, Path("log"), [])
    return found


def test_needed_artifacts_are_kept_current_in_progress_and_running(store: Store) -> None:
    deploy(store, "api", spec(sha("a")), keep=2)
    deploy(store, "api", spec(sha("b")), keep=2)
    deploy(store, "api", spec(sha("c")), keep=2)  # a is past the 2 kept
    endpoints = {"api": endpoint("api", spec(sha("c")))}
    retention = Retention(store, endpoints)
    assert retention.needed([]) == {sha("b"), sha("c")}
    assert retention.needed([spec(sha("d"))]) == {sha("b"), sha("c"), sha("d")}
    # A deployment replaces c with e: c's workers drain after it, and keep their build.
    retention.launching(spec(sha("e")), endpoints["api"])
    deploy(store, "api", spec(sha("e")), keep=1)
    endpoints["api"] = endpoint("api", spec(sha("e")), spec_version(spec(sha("c"))),
                                spec_version(spec(sha("e"))))
    assert retention.needed([]) == {sha("c"), sha("e")}
    endpoints["api"] = endpoint("api", spec(sha("e")))  # drained
    assert retention.needed([]) == {sha("e")}


def test_a_worker_of_an_unknown_build_stops_all_deleting(store: Store) -> None:
    deploy(store, "api", spec(sha("a")))
    retention = Retention(store, {"api": endpoint("api", spec(sha("a")), "0123456789ab")})
    assert retention.needed([]) is None


def test_versions_of_undeployed_endpoints_are_forgotten(store: Store) -> None:
    deploy(store, "api", spec(sha("a")))
    deploy(store, "gone", spec(sha("b")))
    store.delete_endpoint("gone")
    assert Retention(store, {}).needed([]) == {sha("a")}
    assert versions.kept(store, "gone") == []


def unpacked(char: str, age_s: float = 2 * HOUR) -> Path:
    folder = artifacts.app_dir(sha(char))
    folder.mkdir(parents=True)
    (folder / "flash_manifest.json").write_text("{}")
    past = time.time() - age_s
    os.utime(folder, (past, past))
    return folder


def aged(path: Path, age_s: float = 2 * HOUR) -> Path:
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def test_prune_deletes_unneeded_builds_and_stale_leftovers_only(store: Store) -> None:
    kept, unneeded, fresh = unpacked("a"), unpacked("b"), unpacked("c", age_s=60)
    root = config.artifacts_dir()
    stale_upload = root / "tmp1.upload"
    stale_upload.write_bytes(b"half")
    aged(stale_upload)
    fresh_upload = root / "tmp2.upload"
    fresh_upload.write_bytes(b"still coming")
    staging = root / f".{sha('d')}.x1.partial"
    staging.mkdir()
    aged(staging)
    unrelated = root / "notes.txt"
    unrelated.write_text("not ours to judge")
    aged(unrelated)
    artifacts.prune({sha("a")})
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [kept.name, fresh.name, fresh_upload.name, unrelated.name])
    assert not unneeded.exists()


def test_uploading_a_build_again_counts_as_new(store: Store) -> None:
    folder = unpacked("a")

    async def chunks() -> AsyncIterator[bytes]:
        yield b"ignored: the build is already here"

    asyncio.run(artifacts.store(sha("a"), chunks()))
    artifacts.prune(set())
    assert folder.exists()
    artifacts.prune(set(), now=time.time() + 2 * HOUR)
    assert not folder.exists()


def test_prune_at_start_keeps_what_the_deployed_endpoints_need(store: Store) -> None:
    deploy(store, "api", spec(sha("a")))
    kept, unneeded = unpacked("a"), unpacked("b")
    Retention(store, {}).prune_at_start()
    deadline = time.monotonic() + 10
    while unneeded.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kept.exists() and not unneeded.exists()
