"""Dependency hygiene without network: Flash's own names left out, the PyTorch build chosen
for the machine, pip's sources handed to uv, uv's output as phases, system packages asked
for and only installed when approved."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from runpod_flash import dependencies
from runpod_flash.build.manifest import read_requirements
from runpod_flash.dependencies import (
    SystemPackagesRefused,
    approve_system_packages,
    split_framework,
)
from runpod_flash.platform import environments
from runpod_flash.platform.endpoints import spec_digest
from runpod_flash.platform.environments import (
    DependencyInstallError,
    _environment_key,
    _UvPhases,
    choose_torch_backend,
    ensure_environment,
    pip_sources,
)

CPU = {"name": "c", "cpu": True, "gpuCount": 0}
GPU = {"name": "g", "cpu": False, "gpuCount": 1}
MISSING = "flash-no-such-syspkg-zzz"


class Terminal(io.StringIO):
    """A stdin that is a terminal with a prepared answer."""

    def isatty(self) -> bool:
        return True


class NoAnswer(io.StringIO):
    """A stdin that must never be read: nothing should be asked."""

    def readline(self, *args: object) -> str:
        raise AssertionError("asked although nothing needed approval")


@pytest.fixture(autouse=True)
def _fresh_approvals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dependencies, "_approved", set())
    monkeypatch.delenv("FLASH_ASSUME_YES", raising=False)


# -- Flash's own distribution -------------------------------------------------------------


def test_framework_names_are_split_off_under_any_spelling() -> None:
    kept, dropped = split_framework(
        ["runpod-flash>=1.0", "Runpod_Flash[x]", "openflash", "tetra-rp", "numpy", "flashy"])
    assert kept == ["numpy", "flashy"]
    assert dropped == ["runpod-flash>=1.0", "Runpod_Flash[x]", "openflash", "tetra-rp"]


def test_pyproject_dependencies_are_read_without_requirements_txt(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "p"\ndependencies = ["runpod-flash", "tabulate==0.9.0"]\n')
    warnings: list[str] = []
    assert read_requirements(tmp_path, warnings.append) == ["tabulate==0.9.0"]
    assert len(warnings) == 1
    assert warnings[0].startswith("pyproject.toml: runpod-flash left out")
    assert "shadow" in warnings[0]


def test_requirements_txt_wins_over_pyproject_with_one_warning(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("openflash\nrunpod-flash\nnumpy==2.0\n")
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["runpod-flash", "x"]\n')
    warnings: list[str] = []
    assert read_requirements(tmp_path, warnings.append) == ["numpy==2.0"]
    assert warnings == [
        "requirements.txt: openflash, runpod-flash left out of worker environments: workers "
        "already run with this openflash, and the package from the index would shadow it"
    ]


def test_clean_requirements_give_no_warning(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.other]\nx = 1\n')
    warnings: list[str] = []
    assert read_requirements(tmp_path, warnings.append) == []
    assert warnings == []


@pytest.mark.asyncio
async def test_platform_never_installs_framework_names(tmp_path: Path) -> None:
    lines: list[str] = []
    python = await ensure_environment(
        sys.executable, ["runpod-flash", "openflash>=0.1"], [], tmp_path, lines.append)
    assert python == sys.executable  # nothing left to install, no environment built
    assert lines == [
        "Not installing runpod-flash, openflash>=0.1: workers already run with this "
        "platform's runpod_flash, and the package from the index would shadow it"
    ]
    assert list(tmp_path.iterdir()) == []


# -- the PyTorch build --------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "gpus", "backend"), [
    (CPU, False, "cpu"),
    (CPU, True, "cpu"),    # a CPU endpoint never needs CUDA wheels
    (GPU, False, "cpu"),   # runs on the CPU here
    (GPU, True, "auto"),   # uv picks the build for the NVIDIA driver
])
def test_torch_backend_follows_resource_and_machine(
    spec: dict[str, object], gpus: bool, backend: str
) -> None:
    assert choose_torch_backend(spec, gpus, environ={}) == backend


def test_torch_backend_overrides() -> None:
    assert choose_torch_backend(CPU, False, {"FLASH_TORCH_BACKEND": "cu126"}) == "cu126"
    assert choose_torch_backend(GPU, True, {"FLASH_TORCH_BACKEND": "none"}) is None
    assert choose_torch_backend(GPU, True, {"UV_TORCH_BACKEND": "cpu"}) == "cpu"
    both = {"FLASH_TORCH_BACKEND": "cu128", "UV_TORCH_BACKEND": "cpu"}
    assert choose_torch_backend(CPU, False, both) == "cu128"


def test_cpu_and_gpu_environments_are_kept_apart() -> None:
    keys = {_environment_key(sys.executable, "3.11.7", ["torch"], backend)
            for backend in ("cpu", "auto", None)}
    assert len(keys) == 3


# -- package sources ----------------------------------------------------------------------


def test_pip_settings_become_uv_sources(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror/simple\n"
                    "[install]\nfind-links = /wheels /more\n")
    environ = {"PIP_CONFIG_FILE": str(conf), "XDG_CONFIG_DIRS": str(tmp_path / "none"),
               "XDG_CONFIG_HOME": str(tmp_path / "none"),
               "PIP_EXTRA_INDEX_URL": "file:///a/simple"}
    assert pip_sources(environ) == [
        "--index-url", "https://mirror/simple", "--extra-index-url", "file:///a/simple",
        "--find-links", "/wheels", "--find-links", "/more",
        "--index-strategy", "unsafe-best-match",
    ]


def test_uv_source_settings_win_over_pip() -> None:
    assert pip_sources({"UV_INDEX_URL": "https://x/simple", "PIP_FIND_LINKS": "/w"}) == []


# -- uv's output as phases ----------------------------------------------------------------


def test_uv_output_becomes_phase_lines() -> None:
    lines: list[str] = []
    phases = _UvPhases(lines.append)
    for line in ["Using Python 3.11.7 environment at: /x", "Resolved 2 packages in 3ms",
                 "Downloading numpy (16.1MiB)", " Downloaded numpy", "Prepared 2 packages in 1s",
                 "Installed 2 packages in 36ms", " + numpy==2.4.6", " + tabulate==0.9.0"]:
        phases(line)
    phases.finish()
    assert lines == [
        "Resolved 2 packages in 3ms", "Downloading numpy (16.1MiB)", "Downloaded numpy",
        "Prepared 2 packages in 1s",
        "Installed 2 packages in 36ms: numpy==2.4.6, tabulate==0.9.0",
    ]


# -- system packages ----------------------------------------------------------------------


def test_installed_system_package_needs_no_question() -> None:
    out = io.StringIO()
    assert approve_system_packages("e", ["coreutils", "sh"], stdin=NoAnswer(), out=out) == []
    assert out.getvalue() == ""


def test_missing_system_package_without_terminal_is_refused() -> None:
    out = io.StringIO()
    with pytest.raises(SystemPackagesRefused) as error:
        approve_system_packages("enc", [MISSING], stdin=io.StringIO(), out=out)
    assert f"apt-get will install: {MISSING} (system_dependencies of endpoint 'enc')" in (
        out.getvalue())
    assert "--yes" in str(error.value) and "FLASH_ASSUME_YES=1" in str(error.value)


def test_missing_system_package_is_asked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    assert approve_system_packages("e", [MISSING], stdin=Terminal("y\n"), out=out) == [MISSING]
    assert "Install them? [y/N]" in out.getvalue()
    # approved in this process: a second endpoint with it is not asked again
    assert approve_system_packages("f", [MISSING], stdin=NoAnswer(), out=out) == [MISSING]
    monkeypatch.setattr(dependencies, "_approved", set())
    with pytest.raises(SystemPackagesRefused, match="declined"):
        approve_system_packages("e", [MISSING], stdin=Terminal("\n"), out=out)


def test_yes_and_assume_yes_skip_the_question(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    assert approve_system_packages("e", [MISSING], yes=True, stdin=NoAnswer(), out=out) == [
        MISSING]
    monkeypatch.setattr(dependencies, "_approved", set())
    monkeypatch.setenv("FLASH_ASSUME_YES", "1")
    assert approve_system_packages("e", [MISSING], stdin=NoAnswer(), out=out) == [MISSING]
    assert out.getvalue().count("apt-get will install") == 2  # shown even when not asked


def test_invalid_system_names_are_rejected_before_asking() -> None:
    with pytest.raises(ValueError, match="Invalid system dependency names"):
        approve_system_packages("e", ["-o=evil"], stdin=NoAnswer())


@pytest.mark.asyncio
async def test_platform_refuses_unapproved_system_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environments, "_apt_available", lambda: True)

    async def no_apt(*args: object) -> None:
        raise AssertionError("apt-get ran without approval")

    monkeypatch.setattr(environments, "_apt_get_install", no_apt)
    with pytest.raises(DependencyInstallError) as error:
        await ensure_environment(sys.executable, [], [MISSING, "coreutils"], tmp_path, print)
    assert f"Missing system packages: {MISSING}; installing them was not approved" in str(
        error.value)
    assert "--yes" in str(error.value) and f"apt-get install {MISSING}" in str(error.value)


@pytest.mark.asyncio
async def test_approved_system_packages_are_installed_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASH_HOME", str(tmp_path))
    monkeypatch.setattr(environments, "_apt_available", lambda: True)
    installed: list[list[str]] = []

    async def fake_apt(names: list[str], progress: object) -> tuple[bool, list[str]]:
        installed.append(names)
        return True, []

    monkeypatch.setattr(environments, "_apt_get_install", fake_apt)
    lines: list[str] = []
    for endpoint in ("first", "second"):
        await ensure_environment(sys.executable, [], [MISSING], tmp_path, lines.append,
                                 approved_system_dependencies=[MISSING], endpoint=endpoint)
    assert installed == [[MISSING], [MISSING]]
    assert f"apt-get will install: {MISSING}" in lines
    assert any(line.startswith(f"Installed system packages: {MISSING} (recorded in ")
               for line in lines)
    record = json.loads((tmp_path / "system-packages.json").read_text())
    assert [(e["package"], e["endpoint"]) for e in record] == [
        (MISSING, "first"), (MISSING, "second")]
    assert all(e["installed_at"].endswith("Z") for e in record)


def test_an_approval_is_not_part_of_an_endpoints_identity() -> None:
    spec = {"name": "e", "system_dependencies": ["ffmpeg"]}
    assert spec_digest(spec) == spec_digest({**spec, "approved_system_dependencies": ["ffmpeg"]})
