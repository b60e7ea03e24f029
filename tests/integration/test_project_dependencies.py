"""Dependency hygiene on the real platform: Flash's own names never installed, build progress
shown to the caller and in `flash deploy`, system packages installed only with approval."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import flash, wait_for
from runpod_flash import CpuLiveLoadBalancer, control, remote
from runpod_flash.stubs.live import ProvisioningError

pytestmark = [pytest.mark.integration]

MISSING = "flash-no-such-syspkg-zzz"
NO_ASSUME_YES = {"FLASH_ASSUME_YES": ""}

APP = textwrap.dedent('''
    from runpod_flash import CpuLoadBalancerSlsResource, remote

    api = CpuLoadBalancerSlsResource(name="hygiene")


    @remote(api, method="GET", path="/where", dependencies=["runpod-flash"],
            system_dependencies=["coreutils"])
    def where():
        import runpod_flash, sys, tabulate

        return {"flash": runpod_flash.__file__, "tabulate": tabulate.__file__,
                "python": sys.executable}
''')

NEEDS_MISSING = textwrap.dedent(f'''
    from runpod_flash import CpuLoadBalancerSlsResource, remote

    api = CpuLoadBalancerSlsResource(name="hygiene-sys")


    @remote(api, method="GET", path="/tool", system_dependencies=["{MISSING}"])
    def tool():
        return "never deployed"
''')

live_api = CpuLiveLoadBalancer(name="hygiene-live")


@remote(live_api, method="GET", path="/six", dependencies=["six==1.16.0", "openflash"],
        system_dependencies=["coreutils"])
def six_version() -> str:
    import six

    return six.__version__


@remote(live_api, method="GET", path="/tool", system_dependencies=[MISSING])
def needs_missing_tool() -> None:
    return None


def _project(tmp_path: Path, name: str, app: str, files: dict[str, str]) -> Path:
    project = tmp_path / name
    project.mkdir()
    (project / "app.py").write_text(app)
    for file, text in files.items():
        (project / file).write_text(text)
    return project


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The project deployed without --yes and without a terminal: (URL, deploy's stderr)."""
    project = _project(tmp_path_factory.mktemp("hygiene"), "hygiene", APP, {
        "requirements.txt": "runpod-flash>=1.0\nopenflash\ntabulate==0.8.10\n",
        "pyproject.toml": '[project]\nname = "hygiene"\nversion = "0.1.0"\n'
                          'dependencies = ["runpod-flash", "tabulate==0.8.10"]\n',
    })
    result = flash("deploy", str(project), "--json", env=NO_ASSUME_YES)
    assert result.returncode == 0, result.stderr
    [endpoint] = json.loads(result.stdout)
    yield endpoint["url"], result.stderr
    flash("undeploy", "hygiene", "--yes")


def test_deploy_leaves_flash_out_with_one_warning(deployed: tuple[str, str]) -> None:
    url, output = deployed
    with urllib.request.urlopen(url + "/where", timeout=30) as response:
        where = json.loads(response.read())
    envs = os.path.join(os.environ["FLASH_HOME"], "envs")
    assert where["tabulate"].startswith(envs)  # the project's requirement was installed
    assert where["python"].startswith(envs)
    import runpod_flash

    assert where["flash"] == runpod_flash.__file__  # ours, not a PyPI copy in the env
    warnings = [line for line in output.splitlines() if "warning:" in line]
    assert len(warnings) == 1, output
    assert "requirements.txt: runpod-flash>=1.0, openflash left out" in warnings[0]
    # the decorator's own `runpod-flash` is dropped by the platform, and said so
    assert "Not installing runpod-flash" in output


def test_deploy_shows_environment_build_phases(deployed: tuple[str, str]) -> None:
    _, output = deployed
    phases = ["Creating environment for tabulate==0.8.10",
              "Resolving requirements (PyTorch: cpu build)", "Resolved 1 package",
              "Installed 1 package in", "Environment ready in "]
    positions = [output.find(phase) for phase in phases]
    assert -1 not in positions and positions == sorted(positions), output
    assert "ms: tabulate==0.8.10" in output
    assert "apt-get will install" not in output  # coreutils is there: nothing to ask


def test_deploy_without_terminal_or_yes_refuses_missing_system_packages(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path, "needs_tool", NEEDS_MISSING, {})
    result = flash("deploy", str(project), env=NO_ASSUME_YES)
    assert result.returncode == 1
    assert f"apt-get will install: {MISSING} (system_dependencies of endpoint 'hygiene-sys')" \
        in result.stderr
    message = " ".join(result.stderr.split())
    assert "no terminal to ask for approval: pass `--yes`" in message
    assert "FLASH_ASSUME_YES=1" in message
    platform = control.find_running()
    if platform is not None:  # refused before anything reached the platform
        names = {e["name"] for e in platform.call("GET", "/api/v1/status")["endpoints"]}
        assert "hygiene-sys" not in names


def test_deploy_on_a_terminal_asks_once(tmp_path: Path) -> None:
    project = _project(tmp_path, "needs_tool", NEEDS_MISSING, {})
    main, terminal = pty.openpty()
    try:
        os.write(main, b"n\n")  # waits in the terminal until the question reads it
        result = subprocess.run(
            [sys.executable, "-m", "runpod_flash.cli", "deploy", str(project)],
            stdin=terminal, capture_output=True, text=True, timeout=120,
            env={**os.environ, **NO_ASSUME_YES},
        )
    finally:
        os.close(main)
        os.close(terminal)
    assert result.returncode == 1
    assert result.stderr.count("Install them? [y/N]") == 1
    assert f"Installing {MISSING} for endpoint 'hygiene-sys' was declined" in " ".join(
        result.stderr.split())


def test_live_call_shows_progress_and_needs_no_approval_for_installed_packages(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLASH_ASSUME_YES", raising=False)
    assert six_version() == "1.16.0"
    err = capfd.readouterr().err
    assert "[flash] hygiene-live: Not installing openflash" in err
    assert "[flash] hygiene-live: Resolved " in err
    assert "[flash] hygiene-live: Installed 1 package" in err and "six==1.16.0" in err
    assert "apt-get will install" not in err


def test_live_call_without_approval_is_refused_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLASH_ASSUME_YES", raising=False)
    with pytest.raises(ProvisioningError) as error:
        needs_missing_tool()
    assert MISSING in str(error.value)
    assert "FLASH_ASSUME_YES=1" in str(error.value)


def test_platform_refuses_missing_system_packages_nobody_approved() -> None:
    """A spec that reaches the platform without approval (an older or hand-written client)
    installs nothing."""
    platform = control.ensure_platform()
    spec = {**live_api.platform_spec(), "name": "hygiene-raw", "dependencies": [],
            "system_dependencies": [MISSING], "python": sys.executable}
    endpoint_id = platform.call("POST", "/api/v1/endpoints/live", spec)["id"]
    try:
        summary = wait_for(lambda: (s := platform.call(
            "GET", f"/api/v1/endpoints/{endpoint_id}"))["status"] != "building" and s)
        assert summary["status"] == "failed"
        assert MISSING in summary["error"]
        root_with_apt = os.geteuid() == 0 and shutil.which("apt-get") is not None
        expected = "installing them was not approved" if root_with_apt else "not running as root"
        assert expected in summary["error"]
    finally:
        platform.call("DELETE", f"/api/v1/endpoints/{endpoint_id}")
