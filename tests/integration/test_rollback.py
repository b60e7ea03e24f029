"""`flash rollback` on a real platform: kept versions come back with a zero-downtime rollout,
bad references change nothing, and builds past the kept versions leave the disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from helpers import flash, platform_in, stop_platform, wait_for
from runpod_flash.http.blocking import request

NAME = "versioned"
CODE = f"""
from runpod_flash import CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="{NAME}")


@remote(api, method="GET", path="/version")
def version():
    return "{{answer}}"
"""


@dataclass
class Site:
    """A platform of its own (it keeps 2 versions per endpoint) and the project it deploys."""

    home: Path
    project: Path

    @property
    def env(self) -> dict[str, str]:
        return {"FLASH_HOME": str(self.home), "FLASH_KEEP_VERSIONS": "2"}

    def flash(self, *args: str) -> subprocess.CompletedProcess[str]:
        return flash(*args, env=self.env)

    def deploy(self, answer: str) -> dict[str, Any]:
        (self.project / "versioned.py").write_text(CODE.format(answer=answer))
        result = self.flash("deploy", str(self.project), "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)[0]  # type: ignore[no-any-return]

    def kept(self) -> dict[str, Any]:
        result = self.flash("rollback", NAME, "--list", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        platform = platform_in(self.home)
        assert platform is not None
        endpoints = platform.call("GET", "/api/v1/status")["endpoints"]
        return next(e for e in endpoints if e["name"] == NAME)


def get(url: str) -> tuple[int, str]:
    status, data = request("GET", url, None, {}, 30)
    return status, data.decode(errors="replace")


def answer(url: str) -> str:
    status, body = get(url + "/version")
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("rollback")
    site = Site(root / "home", root / "project")
    site.home.mkdir(mode=0o700)
    site.project.mkdir()
    try:
        assert site.flash("platform", "start").returncode == 0
        yield site
    finally:
        stop_platform(site.home)


def test_rollback_under_load_serves_the_previous_version_again(site: Site) -> None:
    v1 = site.deploy("v1")
    v2 = site.deploy("v2")
    url = v2["url"]
    assert answer(url) == "v2"
    kept = site.kept()
    assert kept["keep"] == 2 and kept["current"] == v2["version"]
    assert [(k["version"], k["how"], k["current"]) for k in kept["versions"]] == [
        (v2["version"], "deploy", True), (v1["version"], "deploy", False)]

    failures: list[Any] = []
    answers: list[tuple[float, str]] = []  # (when the request was sent, what came back)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status, body = get(url + "/version")
            except OSError as exc:
                failures.append(exc)
                continue
            if status == 200:
                answers.append((sent, json.loads(body)))
            else:
                failures.append((status, body))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: answers)
        result = site.flash("rollback", NAME)
        assert result.returncode == 0, result.stderr
        assert f"rolled back to version {v1['version']}" in result.stdout
        rolled_back = time.monotonic()
        wait_for(lambda: sum(sent > rolled_back for sent, _ in answers) > 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:3]
    assert answers[0][1] == "v2"
    assert {body for sent, body in answers if sent > rolled_back} == {"v1"}
    kept = site.kept()
    assert [(k["version"], k["how"], k["current"]) for k in kept["versions"]] == [
        (v1["version"], "rollback", True), (v2["version"], "deploy", False)]


def test_rollback_to_a_named_version_and_bad_references_change_nothing(site: Site) -> None:
    v1 = site.deploy("v1")
    v2 = site.deploy("v2")
    url = v2["url"]
    result = site.flash("rollback", NAME, v1["version"][:6], "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == v1["version"]
    assert answer(url) == "v1"
    result = site.flash("rollback", NAME, "2")  # the list's second: v2
    assert result.returncode == 0, result.stderr
    assert answer(url) == "v2"
    before = site.kept()

    for args, says in [
        ((NAME, "zzzz"), f"no kept version 'zzzz'; kept versions, newest first: 1 "
                         f"{v2['version']} (current), 2 {v1['version']}"),
        ((NAME, "7"), "there is no version number 7"),
        ((NAME, "ab"), "too short"),
        (("nosuch",), f"no deployed endpoint named 'nosuch'. Deployed: {NAME}"),
        ((NAME, "--env", "staging"), "no deployed endpoint named 'versioned' in environment "
                                     "'staging'"),
    ]:
        result = site.flash("rollback", *args)
        assert result.returncode == 1, result.stdout
        assert says in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.stderr
    assert site.kept() == before
    assert site.status()["version"] == v2["version"] and answer(url) == "v2"

    platform = platform_in(site.home)
    assert platform is not None
    status, _ = request("GET", f"{platform.url}/api/v1/endpoints/{NAME}/versions", None, {}, 10)
    assert status == 401
    status, _ = request("POST", f"{platform.url}/api/v1/endpoints/{NAME}/rollback", b"{}", {},
                        10)
    assert status == 401


def test_the_dashboard_shows_the_kept_versions(site: Site) -> None:
    v1 = site.deploy("v1")
    v2 = site.deploy("v2")
    platform = platform_in(site.home)
    assert platform is not None
    login = platform.call("POST", "/api/v1/dashboard/login-codes")
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    browser.open(platform.url + login["path"], timeout=30).read()  # signs in, keeps the cookie
    with browser.open(f"{platform.url}/dashboard/endpoints/{NAME}", timeout=30) as page:
        html = page.read().decode()
    assert "Kept versions" in html and f"flash rollback {NAME} --env production NUMBER" in html
    assert f"<code>{v2['version']}</code> (current)" in html
    assert f"<code>{v1['version']}</code></td>" in html


def test_builds_past_the_kept_versions_leave_the_disk(site: Site) -> None:
    v1 = site.deploy("v1")
    v2 = site.deploy("v2")
    wait_for(lambda: all(w["version"] == v2["version"] for w in site.status()["workers"]))
    shelf = site.home / "artifacts"
    builds = {k["version"]: shelf / k["artifact"] for k in site.kept()["versions"]}
    assert all(build.is_dir() for build in builds.values())
    long_ago = time.time() - 2 * 3600  # uploaded long ago: no deployment is about to use them
    for build in builds.values():
        os.utime(build, (long_ago, long_ago))
    leftover = shelf / "tmpleftover.upload"
    leftover.write_bytes(b"half an upload")
    os.utime(leftover, (long_ago, long_ago))

    v3 = site.deploy("v3")
    assert [k["version"] for k in site.kept()["versions"]] == [v3["version"], v2["version"]]
    assert not builds[v1["version"]].exists() and not leftover.exists()
    assert builds[v2["version"]].is_dir()

    shutil.rmtree(builds[v2["version"]])  # gone behind the platform's back
    result = site.flash("rollback", NAME)
    assert result.returncode == 1
    assert f"the build of version {v2['version']}" in result.stderr
    assert "is no longer on this platform" in " ".join(result.stderr.split())
    assert answer(v3["url"]) == "v3"


def test_a_bad_keep_setting_stops_the_platform_with_its_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    try:
        result = flash("platform", "start", env={"FLASH_HOME": str(home),
                                                 "FLASH_KEEP_VERSIONS": "none"})
        assert result.returncode == 1
        assert "FLASH_KEEP_VERSIONS='none' is not a number of versions" in " ".join(
            result.stdout.split())
    finally:
        stop_platform(home)
