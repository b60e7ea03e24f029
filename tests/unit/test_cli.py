"""The CLI's pure parts: the login file, where the SDK looks for a platform, `--exclude` and
`--no-deps`, the artifact name, undeploy's name resolution and `--version`."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from runpod_flash import __version__, config, control
from runpod_flash.build import BuildError, _check_output_name, _trim_dependencies
from runpod_flash.cli.endpoint_commands import named_endpoints
from runpod_flash.cli.main import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLASH_HOME", str(tmp_path))
    monkeypatch.delenv("FLASH_PLATFORM_URL", raising=False)
    monkeypatch.delenv("FLASH_PLATFORM_TOKEN", raising=False)
    return tmp_path


def test_login_file_round_trips_any_value_with_owner_only_access(home: Path) -> None:
    assert config.read_login() is None
    odd = 'k"e\\y\n\t\x7f\x01é😀'
    path = config.save_login(config.Login("http://h:1", odd))
    assert path == home / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.read_login() == config.Login("http://h:1", odd)


def test_a_damaged_login_file_names_itself_and_the_fix(home: Path) -> None:
    (home / "config.toml").write_text("[platform]\nurl = 3\n")
    with pytest.raises(control.PlatformError, match=r"config.toml needs .*flash logout"):
        control.find_running()


def test_saved_platform_is_used_unless_the_environment_names_one(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.save_login(config.Login("http://127.0.0.1:9", "key"))
    assert control.local_token() == "key"
    with pytest.raises(control.PlatformError, match=r"127.0.0.1:9 .* does not answer.*logout"):
        control.ensure_platform()  # never a local platform in its place
    assert not (home / "platform.json").exists()
    monkeypatch.setenv("FLASH_PLATFORM_URL", "http://127.0.0.1:9")
    assert control.saved_login() is None
    assert control.local_token() == ""


MANIFEST = {"resources": {
    "a": {"dependencies": ["NumPy>=1", "requests", "torch_audio[x]"]},
    "b": {"dependencies": ["requests"]},
}}


def test_exclude_drops_exact_names_and_warns_for_the_rest() -> None:
    manifest = {"resources": {k: dict(v) for k, v in MANIFEST["resources"].items()}}
    lines: list[str] = []
    _trim_dependencies(manifest, ["numpy", "Torch-Audio", "torch", "nope"], False, lines.append)
    assert manifest["resources"]["a"]["dependencies"] == ["requests"]
    assert manifest["resources"]["b"]["dependencies"] == ["requests"]
    assert lines[-1] == "warning: No packages matched exclusions: torch, nope"


def test_no_deps_empties_every_environment_with_a_note() -> None:
    manifest = {"resources": {k: dict(v) for k, v in MANIFEST["resources"].items()}}
    lines: list[str] = []
    _trim_dependencies(manifest, [], True, lines.append)
    assert all(r["dependencies"] == [] for r in manifest["resources"].values())
    assert lines == ["--no-deps: no environment is built for NumPy>=1, requests, "
                     "torch_audio[x]; workers run with the packages installed where "
                     "`flash deploy` runs"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b.tar.gz", "flash_manifest.json"])
def test_output_must_be_a_plain_file_name(name: str) -> None:
    with pytest.raises(BuildError, match="plain file name"):
        _check_output_name(name)


ENDPOINTS = [
    {"id": "api", "name": "api", "environment": "production"},
    {"id": "api--staging", "name": "api", "environment": "staging"},
    {"id": "worker", "name": "worker"},
]


def test_undeploy_name_in_several_environments_asks_for_one(capsys: pytest.CaptureFixture
                                                             ) -> None:
    assert named_endpoints(ENDPOINTS, "worker", None) == [ENDPOINTS[2]]  # no environment field
    assert named_endpoints(ENDPOINTS, "api--staging", None) == [ENDPOINTS[1]]
    with pytest.raises(typer.Exit) as failed:
        named_endpoints(ENDPOINTS, "api", None)
    assert failed.value.exit_code == 1
    assert "in environments production, staging; choose one with --env" in \
        capsys.readouterr().err


def test_version_has_the_originals_shape() -> None:
    """Typos are covered by the integration tests: rendering typer's error panel costs 0.3 s."""
    assert runner.invoke(app, ["--version"]).output == (
        f"flash, version {__version__} (openflash {__version__})\n")
