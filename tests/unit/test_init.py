"""`flash init`: the scaffold it writes, what it refuses, and the names it accepts."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runpod_flash.build.manifest import read_requirements
from runpod_flash.cli.init_command import InitError, resolve_target, scaffold, templates
from runpod_flash.cli.main import app

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SCAFFOLD = [".env.example", ".flashignore", ".gitignore", "README.md", "cpu_worker.py",
            "lb_worker.py", "pyproject.toml", "requirements.txt"]


def test_templates_are_package_data() -> None:
    assert [t.target for t in templates()] == SCAFFOLD


def test_scaffold_writes_a_named_project(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    assert scaffold(project, "demo") == SCAFFOLD
    for name in SCAFFOLD:
        text = (project / name).read_text()
        assert "{{" not in text, name
        if name.endswith(".py"):
            ast.parse(text, name)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "demo"
    assert "openflash" in pyproject["project"]["dependencies"][0]
    assert 'CpuLiveServerless(name="demo-cpu-worker")' in (project / "cpu_worker.py").read_text()
    readme = (project / "README.md").read_text()
    assert readme.index("flash run") < readme.index("curl") < readme.index("flash deploy")
    assert "POST http://localhost:8888/cpu_worker/runsync" in readme
    assert "POST http://localhost:8888/lb_worker/process" in readme
    assert "curl http://localhost:8888/lb_worker/health" in readme
    assert ".env\n" in (project / ".flashignore").read_text()


def test_refuses_to_overwrite_and_lists_the_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("mine\n")
    (tmp_path / "lb_worker.py").write_text("mine\n")
    with pytest.raises(InitError, match=r"README\.md, lb_worker\.py.*--force"):
        scaffold(tmp_path, "demo")
    assert (tmp_path / "README.md").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "lb_worker.py"]


def test_force_overwrites_scaffold_files_only(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("mine\n")
    (tmp_path / "notes.txt").write_text("kept\n")
    scaffold(tmp_path, "demo", force=True)
    assert (tmp_path / "README.md").read_text().startswith("# demo")
    assert (tmp_path / "notes.txt").read_text() == "kept\n"


@pytest.mark.parametrize(("name", "message"), [
    ("", "empty"), ("  ", "empty"), ("a/b", "is a path"), ("a\\b", "is a path"),
    ("..", "is a path"), ("-demo", "not valid"), ("my project", "not valid"),
])
def test_bad_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(InitError, match=message):
        resolve_target(name, tmp_path)


def test_dot_and_no_name_use_the_current_directory(tmp_path: Path) -> None:
    here = tmp_path / "My Project"
    here.mkdir()
    assert resolve_target(None, here) == (here, "My-Project")
    assert resolve_target(".", here) == (here, "My-Project")
    assert resolve_target("demo", here) == (here / "demo", "demo")


def test_cli_init_refusal_and_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["init", "demo"])
    assert first.exit_code == 0, first.output
    assert "cd demo" in first.output and "flash run" in first.output
    again = runner.invoke(app, ["init", "demo"])
    assert again.exit_code == 1
    assert "--force" in again.output
    forced = runner.invoke(app, ["init", "demo", "-f"])
    assert forced.exit_code == 0, forced.output
    bad = runner.invoke(app, ["init", "x/y"])
    assert bad.exit_code == 1 and "is a path" in bad.output


def test_requirements_leave_flash_itself_out(tmp_path: Path) -> None:
    """The scaffold's `openflash` (or an original project's `runpod-flash`) is never installed
    into worker environments: the workers already have it."""
    (tmp_path / "requirements.txt").write_text(
        "openflash\nrunpod-flash>=1.0  # original name\nRunpod_Flash[extra]\nnumpy==2.0\n")
    assert read_requirements(tmp_path) == ["numpy==2.0"]
