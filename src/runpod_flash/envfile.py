"""A project's `.env` file: find it, parse it strictly, load it without overriding.

Parsing is python-dotenv's (quotes, escapes, `export`, comments, `${VAR}` expansion), so a
`.env` means here what it means to the original Flash and to every other dotenv tool. Unlike
`load_dotenv`, a line dotenv cannot parse is an error naming file:line, not a logged warning
and a silently missing variable. dotenv is imported only when a `.env` file exists, so
`import runpod_flash` stays fast in a directory without one.
"""

from __future__ import annotations

import os
from pathlib import Path

from runpod_flash.config import ENV_WORKER_ID

ENV_FILE = ".env"

# Names this process set from `.env` files, kept out of the embedded platform's environment.
_loaded: set[str] = set()
_autoloaded = False

# What `flash status` and logs show instead of an env value (every value, see mask_env).
MASK = "***"


class EnvFileError(ValueError):
    """A `.env` line that cannot be parsed; the message names file:line and the fix."""


def find_env_file(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The `.env` in `start` (default: the CWD) or the nearest parent directory, if any.

    The same search as python-dotenv's `find_dotenv(usecwd=True)`, done with `os.path` so
    the common case (no `.env` anywhere) costs a few `stat` calls and no imports.
    """
    directory = os.path.abspath(os.fspath(start) if start is not None else os.getcwd())
    while True:
        candidate = os.path.join(directory, ENV_FILE)
        if os.path.isfile(candidate):
            return Path(candidate)
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _read_checked(path: Path) -> tuple[str, list[str]]:
    """The text of `path` and the names it assigns; raises EnvFileError for a malformed line."""
    import io

    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EnvFileError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    names = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.string.rstrip("\n")
            raise EnvFileError(
                f"{path}:{binding.original.line}: cannot parse {line!r}; write NAME=value "
                "(quote values with spaces or '#', close every quote, "
                "comment lines start with #)"
            )
        if binding.key is not None and binding.value is not None:
            names.append(binding.key)
    return text, names


def load_env_file(path: Path) -> list[str]:
    """Set the variables of `path` that are not already set; return the names it set.

    The setting itself is `load_dotenv(override=False)`, so `${VAR}` expands against the
    environment first, exactly as the original's import-time `load_dotenv()` does. A bare
    `NAME` line (no `=`) sets nothing.
    """
    import io

    from dotenv import load_dotenv

    text, names = _read_checked(path)
    before = set(os.environ)
    load_dotenv(stream=io.StringIO(text), override=False)
    loaded = [name for name in dict.fromkeys(names) if name not in before and name in os.environ]
    _loaded.update(loaded)
    return loaded


def load_project_env(project_dir: Path) -> list[str]:
    """Load `project_dir/.env` (if any) without overriding set variables; return names set.

    Used by `flash build`, `flash deploy` and `flash run`, which know their project directory
    and so look only there (no upward search).
    """
    path = Path(project_dir) / ENV_FILE
    if not path.is_file():
        return []
    return load_env_file(path)


def autoload() -> list[str]:
    """Load the `.env` a script sees, once per process; called on first use of the public API.

    A script (or REPL) loads the `.env` of its CWD or the nearest parent, as the original's
    import-time `load_dotenv()` does. A platform worker (FLASH_WORKER_ID set) looks only in its
    CWD, the unpacked app of a deployed endpoint, so a `.env` the user chose to ship is read
    there but a stray one above the platform's home never is.
    """
    global _autoloaded
    if _autoloaded:
        return []
    if os.environ.get(ENV_WORKER_ID):
        path = Path(ENV_FILE)
        found = path.resolve() if path.is_file() else None
    else:
        found = find_env_file()
    loaded = load_env_file(found) if found is not None else []
    _autoloaded = True  # only now: a malformed file raises again on the next use, not never
    return loaded


def child_environ() -> dict[str, str]:
    """os.environ without the names loaded from `.env`, for the embedded platform.

    The platform outlives the process that starts it and serves every project; its workers
    get a project's values through the endpoint's `env`, never by inheriting them from
    whichever script happened to start it.
    """
    return {name: value for name, value in os.environ.items() if name not in _loaded}


def mask_env(env: dict[str, str] | None) -> dict[str, str]:
    """`env` with every value replaced by `***`, for anything printed or logged.

    Every value, not only names like *_KEY: a DATABASE_URL or a webhook URL carries
    credentials too, and the names alone are what a status listing needs.
    """
    return {name: MASK for name in (env or {})}
