"""The original's CLI surface, through the real `flash` command on the session platform:
build flags, `undeploy list/-i/--force`, `logs --worker`, `--version`, `login`/`logout`,
and suggestions for typos."""

from __future__ import annotations

import json
import stat
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import flash, platform_in, platform_status, run_python
from runpod_flash import __version__

API = """
from runpod_flash import CpuLoadBalancerSlsResource, remote

api = CpuLoadBalancerSlsResource(name="parity-api")

@remote(api, method="GET", path="/hi"{dependencies})
def hi():
    print("hello from parity-api")
    return "hi"
"""

TEMP = """
from runpod_flash import CpuLoadBalancerSlsResource, remote

a = CpuLoadBalancerSlsResource(name="parity-temp-a")
b = CpuLoadBalancerSlsResource(name="parity-temp-b")

@remote(a, method="GET", path="/a")
def route_a():
    return "a"

@remote(b, method="GET", path="/b")
def route_b():
    return "b"
"""


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with requirements, for the build flags."""
    path = tmp_path_factory.mktemp("parity") / "parity"
    path.mkdir()
    dependencies = ', dependencies=["Requests_Toolbelt>=1.0"]'
    (path / "api.py").write_text(API.format(dependencies=dependencies))
    (path / "requirements.txt").write_text("numpy>=1.0\nrequests\n")
    return path


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`parity-api`, without requirements, deployed on the session platform: its URL."""
    path = tmp_path_factory.mktemp("parity-deployed")
    (path / "api.py").write_text(API.format(dependencies=""))
    result = flash("deploy", str(path), "--json")
    assert result.returncode == 0, result.stderr
    yield json.loads(result.stdout)[0]["url"]
    flash("undeploy", "parity-api", "--force")


def manifest_dependencies(path: Path) -> list[str]:
    return json.loads(path.read_text())["resources"]["parity-api"]["dependencies"]


def test_build_exclude_warns_for_unmatched_names_and_output_names_the_artifact(
    project: Path,
) -> None:
    result = flash("build", str(project), "--exclude", "NumPy,requests-toolbelt,nope",
                   "-o", "parity.tar.gz")
    assert result.returncode == 0, result.stderr
    assert "No packages matched exclusions: nope" in result.stderr
    manifest = project / ".flash" / "flash_manifest.json"
    assert manifest_dependencies(manifest) == ["requests"]
    artifact = project / ".flash" / "parity.tar.gz"
    assert str(artifact) in result.stdout
    with tarfile.open(artifact) as tar:
        packed = json.load(tar.extractfile("flash_manifest.json"))
    assert packed["resources"]["parity-api"]["dependencies"] == ["requests"]


def test_build_no_deps_builds_no_environment(project: Path) -> None:
    result = flash("build", str(project), "--no-deps")
    assert result.returncode == 0, result.stderr
    assert "--no-deps: no environment is built for Requests_Toolbelt>=1.0, numpy>=1.0, " \
           "requests" in result.stderr
    assert manifest_dependencies(project / ".flash" / "flash_manifest.json") == []
    assert (project / ".flash" / "artifact.tar.gz").is_file()


def test_build_output_must_be_a_file_name(project: Path) -> None:
    result = flash("build", str(project), "--output", "../escape.tar.gz")
    assert result.returncode == 1
    assert "must be a plain file name" in result.stderr
    assert not (project.parent / "escape.tar.gz").exists()


def test_undeploy_list_shows_deployed_endpoints(deployed: str) -> None:
    result = flash("undeploy", "list")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "parity-api" in line)
    assert "active" in row and "inactive" not in row


def test_undeploy_unknown_name_suggests_the_closest(deployed: str) -> None:
    result = flash("undeploy", "parity-apj")
    assert result.returncode == 1
    assert "no deployed endpoint named 'parity-apj'. Did you mean 'parity-api'?" in result.stderr


def test_logs_of_one_worker(deployed: str) -> None:
    assert get(deployed + "/hi") == "hi"
    endpoint = next(e for e in platform_status()["endpoints"] if e["name"] == "parity-api")
    worker = endpoint["workers"][0]["id"]
    result = flash("logs", "parity-api", "--worker", worker)
    assert result.returncode == 0, result.stderr
    assert f"[{worker}] hello from parity-api" in result.stdout
    unknown = flash("logs", "parity-api", "--worker", "w-nope")
    assert unknown.returncode == 1
    assert "no log of worker 'w-nope'" in unknown.stderr and worker in unknown.stderr


def _number(name: str) -> str:
    """`name`'s number in `flash undeploy --interactive`'s list (the platform's order)."""
    names = [e["name"] for e in platform_status()["endpoints"] if e["kind"] == "deployed"]
    return str(names.index(name) + 1)


def test_undeploy_interactive_asks_and_force_does_not(tmp_path: Path) -> None:
    (tmp_path / "temp.py").write_text(TEMP)
    result = flash("deploy", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    urls = {r["name"]: r["url"] for r in json.loads(result.stdout)}
    try:
        declined = flash("undeploy", "-i", input=f"{_number('parity-temp-a')}\nn\n")
        assert declined.returncode == 1 and "Undeploy parity-temp-a" in declined.stdout
        assert get(urls["parity-temp-a"] + "/a") == "a"
        forced = flash("undeploy", "-i", "--force", input=f"{_number('parity-temp-a')}\n")
        assert forced.returncode == 0, forced.stderr
        assert "[y/N]" not in forced.stdout and "undeployed parity-temp-a" in forced.stdout
        yes = flash("undeploy", "--interactive", "--yes", input=f"{_number('parity-temp-b')}\n")
        assert yes.returncode == 0, yes.stderr
        names = {e["name"] for e in platform_status()["endpoints"]}
        assert not names & {"parity-temp-a", "parity-temp-b"}
    finally:
        for name in urls:
            flash("undeploy", name, "--force")


def test_version_has_the_originals_shape() -> None:
    for flag in ("--version", "-v"):
        result = flash(flag)
        assert result.returncode == 0
        assert result.stdout == f"flash, version {__version__} (openflash {__version__})\n"


def test_typos_suggest_the_closest_command_or_option() -> None:
    command = flash("stauts")
    assert command.returncode == 2
    assert "No such command 'stauts'. Did you mean 'status'?" in command.stderr
    nested = flash("platform", "stpo")
    assert nested.returncode == 2 and "Did you mean 'stop'?" in nested.stderr
    option = flash("build", "--exclud", "torch")
    assert option.returncode == 2
    assert "No such option: --exclud" in option.stderr and "--exclude" in option.stderr


def test_login_saves_a_remote_platform_the_cli_and_remote_use(
    deployed: str, tmp_path: Path
) -> None:
    remote = platform_in(None)
    assert remote is not None
    home = tmp_path / "home"
    env = {"FLASH_HOME": str(home)}
    config = home / "config.toml"

    refused = flash("login", "--url", remote.url, "--api-key", "wrong", env=env)
    assert refused.returncode == 1 and "refused the API key" in refused.stderr
    assert not config.exists()

    prompted = flash("login", env=env, input=f"{remote.url}/\n{remote.token}\n")
    assert prompted.returncode == 0, prompted.stderr
    assert remote.token not in prompted.stdout  # the key prompt is hidden
    assert f"Logged in to {remote.url}" in prompted.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    listed = flash("undeploy", "list", env=env)
    assert listed.returncode == 0 and "parity-api" in listed.stdout
    found = run_python(
        "from runpod_flash import control; p = control.find_running(); print(p.url, p.token)",
        env=env,
    )
    assert found.stdout.split() == [remote.url, remote.token], found.stderr
    called = run_python(
        "from runpod_flash import CpuLiveLoadBalancer, remote\n"
        "api = CpuLiveLoadBalancer(name='parity-login')\n"
        "@remote(api, method='GET', path='/one')\n"
        "def one():\n    return 1\n"
        "print(one())\n",
        env=env,
    )
    assert called.returncode == 0 and called.stdout.strip() == "1", called.stderr
    live = [e["id"] for e in platform_status()["endpoints"] if e["name"] == "parity-login"]
    assert live  # served by the logged-in platform, not a new local one
    assert not (home / "platform.json").exists()
    for endpoint_id in live:
        remote.call("DELETE", f"/api/v1/endpoints/{endpoint_id}")

    logged_out = flash("logout", env=env)
    assert logged_out.returncode == 0 and not config.exists()


def test_a_saved_platform_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[platform]\nurl = "http://127.0.0.1:9"\napi_key = "k"\n')
    env = {"FLASH_HOME": str(home)}
    for args in (("undeploy", "list"), ("platform", "status"), ("volume", "list")):
        result = flash(*args, env=env)
        assert result.returncode == 1, args
        assert "http://127.0.0.1:9" in result.stderr and "flash logout" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (home / "platform.json").exists()  # no local platform started in its place
