"""Per-dependency-set environments built with real uv against the real package index."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from uv import find_uv_bin

from runpod_flash.platform.environments import DependencyInstallError, ensure_environment

pytestmark = [pytest.mark.integration]

TABULATE = ["tabulate==0.9.0"]


def _imports(python: str, module: str, *, keep_pythonpath: bool) -> bool:
    """Whether python can import module; PYTHONPATH is dropped to check the layering alone."""
    env = dict(os.environ)
    if not keep_pythonpath:
        env.pop("PYTHONPATH", None)
    result = subprocess.run([python, "-c", f"import {module}"], env=env, capture_output=True)
    return result.returncode == 0


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_no_dependencies_returns_base_python(tmp_path: Path) -> None:
    assert await ensure_environment(sys.executable, [], [], tmp_path, print) == sys.executable
    assert list(tmp_path.iterdir()) == []


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_installs_into_layered_env_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    python = await ensure_environment(sys.executable, TABULATE, [], tmp_path, lines.append)
    assert python != sys.executable
    assert any("tabulate" in line for line in lines)
    assert _imports(python, "tabulate", keep_pythonpath=False)
    assert _imports(python, "pydantic", keep_pythonpath=False)  # from the base venv
    assert _imports(python, "runpod_flash", keep_pythonpath=True)
    if importlib.util.find_spec("tabulate") is None:
        assert not _imports(sys.executable, "tabulate", keep_pythonpath=True)

    async def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"cache hit ran a subprocess: {args}")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_subprocess)
    started = time.monotonic()
    again = await ensure_environment(sys.executable, TABULATE, [], tmp_path, lines.append)
    assert again == python
    assert time.monotonic() - started < 0.5


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_env_sees_base_editable_installs_and_overrides_base_packages(tmp_path: Path) -> None:
    base = tmp_path / "base"
    subprocess.run([find_uv_bin(), "venv", "--python", sys.executable, str(base)], check=True)
    base_site = next((base / "lib").glob("python*/site-packages"))
    source = tmp_path / "src"
    source.mkdir()
    (source / "editable_probe.py").write_text("")
    (base_site / "_editable_impl_probe.pth").write_text(f"{source}\n")
    (base_site / "tabulate.py").write_text("")  # a stale copy the env must shadow
    envs = tmp_path / "envs"

    python = await ensure_environment(str(base / "bin" / "python"), TABULATE, [], envs, print)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import editable_probe, tabulate; print(tabulate.__file__)"
    result = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(envs)
    assert sorted(p.name for p in base_site.iterdir() if "tabulate" in p.name) == ["tabulate.py"]


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_concurrent_calls_build_once(tmp_path: Path) -> None:
    first: list[str] = []
    second: list[str] = []
    paths = await asyncio.gather(
        ensure_environment(sys.executable, TABULATE, [], tmp_path, first.append),
        ensure_environment(sys.executable, list(reversed(TABULATE)), [], tmp_path, second.append),
    )
    assert paths[0] == paths[1]
    assert bool(first) != bool(second)  # only the builder reports progress
    envs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(envs) == 1 and (envs[0] / ".ready").exists()


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_unknown_package_fails_without_caching(tmp_path: Path) -> None:
    with pytest.raises(DependencyInstallError) as error:
        await ensure_environment(
            sys.executable, ["flash-no-such-package-zzz"], [], tmp_path, lambda _: None
        )
    assert "flash-no-such-package-zzz" in str(error.value)
    assert not list(tmp_path.glob("*/.ready"))
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_invalid_requirement_fails(tmp_path: Path) -> None:
    with pytest.raises(DependencyInstallError) as error:
        await ensure_environment(sys.executable, ["tabulate==="], [], tmp_path, lambda _: None)
    assert "tabulate===" in str(error.value)


@pytest.mark.asyncio
@pytest.mark.timeout(360)
async def test_missing_system_dependency_is_named(tmp_path: Path) -> None:
    with pytest.raises(DependencyInstallError) as error:
        await ensure_environment(
            sys.executable, [], ["flash-no-such-syspkg-zzz"], tmp_path, lambda _: None
        )
    assert "flash-no-such-syspkg-zzz" in str(error.value)
    assert "apt-get install flash-no-such-syspkg-zzz" in str(error.value)

