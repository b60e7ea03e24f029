"""`.env` files: parsing, loading without override, the auto-load rule, and keeping secrets out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runpod_flash import envfile
from runpod_flash.build.ignore import collect_files
from runpod_flash.envfile import (
    EnvFileError,
    child_environ,
    find_env_file,
    load_project_env,
    mask_env,
)

NAMES = ("FT_PLAIN", "FT_DOUBLE", "FT_SINGLE", "FT_EXPORTED", "FT_HASH", "FT_EXPANDED",
         "FT_PRESET", "FT_BARE", "FT_EMPTY", "FT_MULTI")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every variable a test may load is unset before and removed after; the load record too."""
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(envfile, "_loaded", set())
    monkeypatch.setattr(envfile, "_autoloaded", False)
    yield
    for name in NAMES:
        os.environ.pop(name, None)


def write_env(directory: Path, text: str) -> Path:
    path = directory / ".env"
    path.write_text(text, encoding="utf-8")
    return path


def test_parses_quotes_export_comments_and_expansion(tmp_path: Path) -> None:
    write_env(tmp_path, (
        "# a comment line\n"
        "\n"
        "FT_PLAIN=plain value # inline comment\n"
        'FT_DOUBLE="two words # not a comment"\n'
        "FT_SINGLE='no \\n escapes in single quotes'\n"
        "export FT_EXPORTED=yes\n"
        'FT_HASH="a#b"\n'
        "FT_EXPANDED=${FT_PLAIN}!\n"
        "FT_EMPTY=\n"
        'FT_MULTI="line1\\nline2"\n'
    ))
    loaded = load_project_env(tmp_path)
    assert loaded == ["FT_PLAIN", "FT_DOUBLE", "FT_SINGLE", "FT_EXPORTED", "FT_HASH",
                      "FT_EXPANDED", "FT_EMPTY", "FT_MULTI"]
    assert os.environ["FT_PLAIN"] == "plain value"
    assert os.environ["FT_DOUBLE"] == "two words # not a comment"
    assert os.environ["FT_SINGLE"] == "no \\n escapes in single quotes"
    assert os.environ["FT_EXPORTED"] == "yes"
    assert os.environ["FT_HASH"] == "a#b"
    assert os.environ["FT_EXPANDED"] == "plain value!"
    assert os.environ["FT_EMPTY"] == ""
    assert os.environ["FT_MULTI"] == "line1\nline2"


def test_never_overrides_a_set_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FT_PRESET", "from the shell")
    write_env(tmp_path, "FT_PRESET=from the file\nFT_EXPANDED=${FT_PRESET}\nFT_BARE\n")
    assert load_project_env(tmp_path) == ["FT_EXPANDED"]  # a bare name sets nothing
    assert os.environ["FT_PRESET"] == "from the shell"
    assert os.environ["FT_EXPANDED"] == "from the shell"  # expansion sees the winner
    assert "FT_BARE" not in os.environ


@pytest.mark.parametrize("line", ["this is not an assignment", 'FT_PLAIN="never closed'])
def test_a_malformed_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    path = write_env(tmp_path, f"FT_PLAIN=ok\n# fine\n{line}\n")
    with pytest.raises(EnvFileError) as raised:
        load_project_env(tmp_path)
    assert f"{path}:3:" in str(raised.value)
    assert "NAME=value" in str(raised.value)
    assert "FT_PLAIN" not in os.environ  # nothing is loaded from a file with an error


def test_no_env_file_loads_nothing(tmp_path: Path) -> None:
    assert load_project_env(tmp_path) == []


def test_find_env_file_searches_upward_from_the_start(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    before = find_env_file(nested)  # a `.env` above the temp dir may exist; not ours
    assert before is None or tmp_path not in before.parents
    write_env(tmp_path, "FT_PLAIN=1\n")
    assert find_env_file(nested) == tmp_path / ".env"
    write_env(nested, "FT_PLAIN=2\n")
    assert find_env_file(nested) == nested / ".env"


def test_autoload_in_a_worker_reads_only_its_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker never picks up a `.env` above its directory (say, above FLASH_HOME)."""
    write_env(tmp_path, "FT_PLAIN=from above\n")
    app = tmp_path / "app"
    app.mkdir()
    monkeypatch.chdir(app)
    monkeypatch.setenv("FLASH_WORKER_ID", "w-test")
    assert envfile.autoload() == []
    write_env(app, "FT_PLAIN=shipped with the app\n")
    monkeypatch.setattr(envfile, "_autoloaded", False)
    assert envfile.autoload() == ["FT_PLAIN"]
    assert os.environ["FT_PLAIN"] == "shipped with the app"
    assert envfile.autoload() == []  # once per process


def test_child_environ_leaves_out_loaded_names(tmp_path: Path) -> None:
    write_env(tmp_path, "FT_PLAIN=secret\n")
    load_project_env(tmp_path)
    child = child_environ()
    assert "FT_PLAIN" not in child
    assert child["PATH"] == os.environ["PATH"]


def test_mask_env_hides_every_value() -> None:
    assert mask_env({"HF_TOKEN": "hf_x", "LOG_LEVEL": "debug"}) == {
        "HF_TOKEN": "***", "LOG_LEVEL": "***"}
    assert mask_env(None) == {}


def test_env_files_stay_out_of_builds_unless_unignored(tmp_path: Path) -> None:
    for name in (".env", ".env.local", ".env.example", "app.py"):
        (tmp_path / name).write_text("x=1\n")
    assert collect_files(tmp_path) == [".env.example", "app.py"]
    (tmp_path / ".flashignore").write_text("!.env\n")
    assert collect_files(tmp_path) == [".env", ".env.example", ".flashignore", "app.py"]


def run_in(directory: Path, code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in NAMES}
    result = subprocess.run([sys.executable, "-c", code], cwd=directory, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_scripts_load_env_on_first_use_of_the_api(tmp_path: Path) -> None:
    """`from runpod_flash import remote` loads the `.env` of the CWD (or above)."""
    write_env(tmp_path, "FT_PLAIN=loaded\n")
    (tmp_path / "sub").mkdir()
    code = "import os; from runpod_flash import remote; print(os.environ.get('FT_PLAIN'))"
    assert run_in(tmp_path / "sub", code) == "loaded"


def test_bare_import_stays_fast(tmp_path: Path) -> None:
    """`import runpod_flash` neither reads `.env` nor imports dotenv."""
    write_env(tmp_path, "FT_PLAIN=loaded\n")
    code = ("import os, sys, runpod_flash; "
            "print(os.environ.get('FT_PLAIN'), 'dotenv' in sys.modules)")
    assert run_in(tmp_path, code) == "None False"


def test_a_script_with_a_malformed_env_gets_the_file_and_line(tmp_path: Path) -> None:
    path = write_env(tmp_path, "FT_PLAIN=ok\nnot valid\n")
    result = subprocess.run([sys.executable, "-c", "from runpod_flash import remote"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"EnvFileError: {path}:2: cannot parse 'not valid'" in result.stderr
