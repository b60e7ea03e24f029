"""Where openflash keeps its state and how its processes find each other.

Every setting is an environment variable so the SDK, the platform and the workers agree on
them without sharing code paths; the defaults give a zero-setup single-user install. The one
file a user writes (through `flash login`) is FLASH_HOME/config.toml: a remote platform to use
instead of the embedded one; the environment variables still win over it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PLATFORM_PORT = 7770
PLATFORM_HOST = "127.0.0.1"
LOGIN_FILE = "config.toml"  # in FLASH_HOME: the remote platform `flash login` saved

# Environment variables, in one place so every process spells them the same way.
ENV_HOME = "FLASH_HOME"
ENV_PLATFORM_URL = "FLASH_PLATFORM_URL"
ENV_PLATFORM_TOKEN = "FLASH_PLATFORM_TOKEN"
ENV_PLATFORM_PORT = "FLASH_PLATFORM_PORT"
ENV_PLATFORM_HOST = "FLASH_PLATFORM_HOST"  # the address a new platform binds (loopback)
ENV_WORKER_ID = "FLASH_WORKER_ID"
ENV_ENDPOINT_ID = "FLASH_ENDPOINT_ID"
ENV_WORKER_HOST = "FLASH_WORKER_HOST"  # the address a worker binds to (its node's)
# JSON {resource name: gateway path} of the endpoints deployed with a worker (stubs.peers)
ENV_PEER_ENDPOINTS = "FLASH_PEER_ENDPOINTS"
# Where the gateway serves a load-balanced endpoint: {platform}/ep/<endpoint id>/<route path>
LB_PREFIX = "/ep"


class UnsafeHome(PermissionError):
    """FLASH_HOME is not private to this user; the message says how to fix it."""


class InvalidSetting(ValueError):
    """An environment variable's value is unusable; the message names it and what it takes."""


def flash_home() -> Path:
    """The state folder (`FLASH_HOME`, default `~/.flash`), private to this user: it holds
    the platform token and jobs' inputs and outputs."""
    home = Path(os.environ.get(ENV_HOME) or Path.home() / ".flash").expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    status = home.stat()
    if status.st_uid != os.getuid():
        raise UnsafeHome(
            f"{ENV_HOME} {home} belongs to another user (uid {status.st_uid}); set "
            f"{ENV_HOME} to a folder of your own"
        )
    if status.st_mode & 0o022:
        raise UnsafeHome(
            f"{ENV_HOME} {home} is writable by other users (mode {status.st_mode & 0o777:o}), "
            f"who could replace its files; run `chmod 700 {home}` or set {ENV_HOME} to a "
            "private folder"
        )
    _owner_only(home, status.st_mode)
    return home


def _private_dir(path: Path) -> Path:
    """A folder under FLASH_HOME, created (or narrowed) to owner-only access."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _owner_only(path, path.stat().st_mode)
    return path


def _owner_only(path: Path, mode: int) -> None:
    """Folders made by an earlier version, or by hand, may let other users read them."""
    if mode & 0o077:
        path.chmod(0o700)


@dataclass(frozen=True)
class Login:
    """A remote openflash platform saved by `flash login`: its URL and API key (its token)."""

    url: str
    api_key: str


def login_path() -> Path:
    """`flash login`'s file, read by the CLI and the SDK to reach a remote platform."""
    return flash_home() / LOGIN_FILE


def read_login() -> Login | None:
    """The platform `flash login` saved, or None; a damaged file is a ValueError naming it,
    never a silent fall-back to another platform."""
    path = login_path()
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        table = tomllib.loads(text).get("platform")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML ({exc}); run `flash login` again or "
                         "`flash logout`") from None
    if not isinstance(table, dict) or not all(
        isinstance(table.get(key), str) and table[key] for key in ("url", "api_key")
    ):
        raise ValueError(f"{path} needs [platform] url and api_key strings; run `flash login` "
                         "again or `flash logout`")
    return Login(table["url"].rstrip("/"), table["api_key"])


def save_login(login: Login) -> Path:
    """Write the login file whole, readable by its owner only (it holds a secret)."""
    path = login_path()
    text = (
        "# Written by `flash login`; `flash logout` removes it.\n[platform]\n"
        f"url = {_toml_string(login.url)}\napi_key = {_toml_string(login.api_key)}\n"
    )
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when a stale partial file had other permissions
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)
    return path


def _toml_string(value: str) -> str:
    """A TOML basic string; every character TOML forbids unescaped is written as \\uXXXX."""
    return '"' + "".join(
        f"\\u{ord(c):04x}" if c in '"\\\x7f' or (c < " " and c != "\t") else c
        for c in value
    ) + '"'


def platform_info_path() -> Path:
    """The file in which a running platform publishes its URL, pid and token."""
    return flash_home() / "platform.json"


def platform_lock_path() -> Path:
    """Held while a platform starts, so two first calls start one platform."""
    return flash_home() / "platform.lock"


def logs_dir() -> Path:
    return _private_dir(flash_home() / "logs")


def artifacts_dir() -> Path:
    """Uploaded build artifacts (`<sha256>.tar.gz`) and their unpacked apps (`<sha256>/`)."""
    return _private_dir(flash_home() / "artifacts")


def envs_dir() -> Path:
    return _private_dir(flash_home() / "envs")


def platform_host() -> str:
    """The address a new platform binds and tells its workers (`FLASH_PLATFORM_HOST`,
    default loopback): another address is for workers on other machines (a Ray cluster)."""
    host = os.environ.get(ENV_PLATFORM_HOST) or PLATFORM_HOST
    if host in ("0.0.0.0", "::", "*"):
        raise InvalidSetting(
            f"{ENV_PLATFORM_HOST}={host!r}: the platform tells its workers where to call it, "
            "so give one address they reach (the machine's IP on the cluster's network)"
        )
    return host


def requested_platform_port() -> int:
    """The port a new platform binds (`FLASH_PLATFORM_PORT`; 0 picks a free one)."""
    raw = os.environ.get(ENV_PLATFORM_PORT, "")
    if not raw:
        return DEFAULT_PLATFORM_PORT
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"{ENV_PLATFORM_PORT}={raw!r} is not a port number; set it to an integer (0 = any)"
        ) from None


def _positive_number(name: str, default: float, unit: str) -> float:
    """A positive number from the environment variable `name` (`default` when unset)."""
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of {unit}, e.g. "
                         f"{name}={int(default * 2)}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive (got {raw})")
    return value


MIB = 1024 * 1024
ENV_MAX_BODY_MB = "FLASH_MAX_BODY_MB"
DEFAULT_MAX_BODY_MB = 64


def max_body_bytes() -> int:
    """The largest request body an endpoint takes: one setting (`FLASH_MAX_BODY_MB`, the
    platform's environment, passed on to its workers) for the gateway and every worker, so a
    body the gateway lets through is one the worker takes."""
    return int(_positive_number(ENV_MAX_BODY_MB, DEFAULT_MAX_BODY_MB, "megabytes") * MIB)


ENV_MAX_RUN_MB = "FLASH_MAX_RUN_MB"
ENV_MAX_RUNSYNC_MB = "FLASH_MAX_RUNSYNC_MB"
DEFAULT_MAX_RUN_MB = 10  # Runpod's limits for /run and /runsync bodies
DEFAULT_MAX_RUNSYNC_MB = 20


def queue_input_setting(sync: bool) -> str:
    """The environment variable that sets `queue_input_limit(sync)`."""
    return ENV_MAX_RUNSYNC_MB if sync else ENV_MAX_RUN_MB


def queue_input_limit(sync: bool) -> int:
    """The largest job body (bytes) `/runsync` (`sync`) or `/run` takes; read by the queue API
    and by the SDK, which checks a job before sending it."""
    default = DEFAULT_MAX_RUNSYNC_MB if sync else DEFAULT_MAX_RUN_MB
    return int(_positive_number(queue_input_setting(sync), default, "megabytes") * MIB)


ENV_MAX_QUEUED_JOBS = "FLASH_MAX_QUEUED_JOBS"
ENV_MAX_FINISHED_JOBS = "FLASH_MAX_FINISHED_JOBS"


def max_queued_jobs() -> int:
    """Jobs one endpoint may have waiting; past it `/run` and `/runsync` answer 429."""
    return int(_positive_number(ENV_MAX_QUEUED_JOBS, 10_000, "jobs"))


def max_finished_jobs() -> int:
    """Finished jobs the platform keeps (results readable with `/status`), newest first;
    older ones go sooner than their 30 minutes."""
    return int(_positive_number(ENV_MAX_FINISHED_JOBS, 100_000, "jobs"))


def over_limit(what: str, size: int, limit: int | None, setting: str) -> str:
    """One wording wherever a body is over its limit (SDK, gateway, workers, queue): what,
    how large, the limit (None: the endpoint's, unknown here), the setting that changes it,
    and what to do instead."""
    shown = "the endpoint's limit" if limit is None else f"the {limit / MIB:g} MB limit"
    return (
        f"{what}: {size / MIB:.1f} MB once encoded, over {shown} "
        f"({setting}, read from the platform's environment by the platform and its workers). "
        "Pass large data by reference instead: save it on a network volume (/runpod-volume) "
        "or in a file the worker can read, and pass its path; or raise "
        f"{setting} where the platform starts and restart it (`flash platform stop`)"
    )


# Limits every HTTP server of openflash enforces (the platform and its workers, which inherit
# the platform's environment), and who may reach the platform: http.server_limits, platform.app.
ENV_MAX_HEADER_KB = "FLASH_MAX_HEADER_KB"
ENV_HEADER_TIMEOUT = "FLASH_HEADER_TIMEOUT"
ENV_KEEP_ALIVE_TIMEOUT = "FLASH_KEEP_ALIVE_TIMEOUT"
ENV_MAX_CONNECTIONS = "FLASH_MAX_CONNECTIONS"
ENV_ALLOWED_HOSTS = "FLASH_ALLOWED_HOSTS"
ENV_ALLOWED_ORIGINS = "FLASH_ALLOWED_ORIGINS"
ENV_MAX_UNPACKED_MB = "FLASH_MAX_UNPACKED_MB"
DEFAULT_MAX_UNPACKED_MB = 2048


def max_header_bytes(default_kb: int) -> int:
    """The largest request line and headers of one request (`FLASH_MAX_HEADER_KB`)."""
    return int(_positive_number(ENV_MAX_HEADER_KB, default_kb, "KiB") * 1024)


def header_timeout_s(default: float) -> float:
    """Seconds a client has to deliver a request's head (`FLASH_HEADER_TIMEOUT`)."""
    return _positive_number(ENV_HEADER_TIMEOUT, default, "seconds")


def keep_alive_s(default: float) -> float:
    """Seconds an idle kept-alive connection stays open (`FLASH_KEEP_ALIVE_TIMEOUT`)."""
    return _positive_number(ENV_KEEP_ALIVE_TIMEOUT, default, "seconds")


def max_connections(default: int) -> int:
    """Client connections one server keeps open at most (`FLASH_MAX_CONNECTIONS`)."""
    return int(_positive_number(ENV_MAX_CONNECTIONS, default, "connections"))


def max_unpacked_bytes() -> int:
    """The most an artifact may hold once unpacked (`FLASH_MAX_UNPACKED_MB`)."""
    return int(_positive_number(ENV_MAX_UNPACKED_MB, DEFAULT_MAX_UNPACKED_MB, "megabytes") * MIB)


def listed_setting(name: str) -> list[str]:
    """A comma-separated list from the environment variable `name` (empty when unset)."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def path_inside(root: str | Path, relative: str) -> Path:
    """`relative`, a path a build names (a manifest's `handler_file`), resolved in the
    unpacked app `root`, where the platform and the worker both look for it; a ValueError
    if it leads outside (`..`, absolute, through a link)."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise ValueError(f"'{relative}' is outside the app; a build's paths must name files "
                         "of the project")
    return target


# Sent by the platform (gateway, health checks) on every request to a worker; a worker
# answers only requests that carry its secret (platform.credentials).
ENV_GATEWAY_SECRET = "FLASH_GATEWAY_SECRET"
GATEWAY_SECRET_HEADER = "x-flash-gateway-secret"
