"""The control API's client (SDK and CLI): find the platform, start it when nothing answers.

Neutral ground: the SDK and the CLI reach the platform only through this HTTP contract.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from runpod_flash import config
from runpod_flash.envfile import child_environ
from runpod_flash.http.blocking import request

START_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 2.0


def slug(name: str) -> str:
    """A name as it appears in endpoint ids and URLs."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "endpoint"


DEFAULT_ENVIRONMENT = "production"
ENV_ENVIRONMENT = "FLASH_ENVIRONMENT"  # the environment a script's deployed calls address


def deployed_endpoint_id(name: str, environment: str | None = None) -> str:
    """A deployed endpoint's id is its name (its URL stays the same across deploys); outside
    the `production` environment, the environment follows: `api--staging`."""
    environment = environment or os.environ.get(ENV_ENVIRONMENT) or DEFAULT_ENVIRONMENT
    if slug(environment) == DEFAULT_ENVIRONMENT:
        return slug(name)
    return f"{slug(name)}--{slug(environment)}"


class PlatformError(RuntimeError):
    """The platform refused a control request or could not be reached or started."""


@dataclass(frozen=True)
class Platform:
    url: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 30.0,
        raw: bytes | None = None,
    ) -> dict[str, Any]:
        """One control API call (JSON `body`, or `raw` bytes); non-2xx raises PlatformError."""
        payload = raw if raw is not None else None if body is None else json.dumps(body).encode()
        try:
            status, data = request(method, self.url + path, payload, self.auth, timeout)
        except OSError as exc:
            raise PlatformError(f"platform at {self.url} is unreachable: {exc}") from None
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"error": data[:500].decode(errors="replace")}
        if status >= 300:
            raise PlatformError(f"platform {method} {path} answered {status}: "
                                f"{parsed.get('error', parsed)}")
        return parsed


def saved_login() -> Platform | None:
    """The remote platform `flash login` saved, unless FLASH_PLATFORM_URL names another."""
    if os.environ.get(config.ENV_PLATFORM_URL):
        return None
    try:
        login = config.read_login()
    except ValueError as exc:
        raise PlatformError(str(exc)) from None
    return None if login is None else Platform(login.url, login.api_key)


def local_token() -> str:
    """The platform token: `FLASH_PLATFORM_TOKEN`, the API key `flash login` saved, or this
    machine's (in FLASH_HOME)."""
    explicit = os.environ.get(config.ENV_PLATFORM_TOKEN)
    if explicit:
        return explicit
    login = saved_login()
    if login is not None:
        return login.token
    try:
        return (config.flash_home() / "token").read_text().strip()
    except FileNotFoundError:
        return ""


def _answers(url: str) -> bool:
    try:
        status, _ = request("GET", url + "/health", None, {}, PROBE_TIMEOUT_S)
    except OSError:
        return False
    return status == 200


def _published_url() -> str | None:
    try:
        return json.loads(config.platform_info_path().read_text())["url"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def find_running() -> Platform | None:
    """The platform at FLASH_PLATFORM_URL, the one `flash login` saved, or the one published in
    FLASH_HOME, if it answers. A saved one that does not answer is a PlatformError: the caller
    asked for that platform, so another must not be used (or started) in its place."""
    login = saved_login()
    if login is not None:
        if not _answers(login.url):
            raise PlatformError(
                f"the platform at {login.url} (saved by `flash login` in "
                f"{config.login_path()}) does not answer; start it there, or run `flash logout` "
                "to use the embedded platform"
            )
        return Platform(login.url, local_token())  # FLASH_PLATFORM_TOKEN still wins
    url = os.environ.get(config.ENV_PLATFORM_URL) or _published_url()
    if url and _answers(url.rstrip("/")):
        return Platform(url.rstrip("/"), local_token())
    return None


def _log_tail(path: os.PathLike[str], lines: int = 15) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])
    return ""


def ensure_platform() -> Platform:
    """A running platform; starts the embedded one (exactly one, even under races) if needed."""
    running = find_running()
    if running is not None:
        return running
    if os.environ.get(config.ENV_PLATFORM_URL):
        raise ConnectionError(
            f"No platform answers at {config.ENV_PLATFORM_URL}="
            f"{os.environ[config.ENV_PLATFORM_URL]}; start it there or unset the variable "
            "to use the embedded platform"
        )
    with open(config.platform_lock_path(), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second first-caller waits here, then finds ours
        running = find_running()
        if running is not None:
            return running
        return _start_embedded()


def _start_embedded() -> Platform:
    log_path = config.logs_dir() / "platform.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # owner only
    with os.fdopen(log_fd, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runpod_flash.platform"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True, env=child_environ(),  # no .env values
        )
    # Reap it whenever it exits, so `flash platform stop` from this process sees it gone.
    threading.Thread(target=process.wait, name="flash-platform-reaper", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    info = config.platform_info_path()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PlatformError(
                f"the embedded platform exited with code {process.returncode} while starting; "
                f"log {log_path}:\n{_log_tail(log_path)}"
            )
        with contextlib.suppress(FileNotFoundError, ValueError):
            published = json.loads(info.read_text())
            if published.get("pid") == process.pid:
                return Platform(published["url"], local_token())
        time.sleep(0.01)
    process.terminate()
    raise PlatformError(
        f"the embedded platform did not start within {START_TIMEOUT_S:.0f}s; log {log_path}"
    )
