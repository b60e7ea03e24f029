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


def deployed_endpoint_id(name: str) -> str:
    """A deployed endpoint's id is its name, so its URL stays the same across deploys."""
    return slug(name)


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


def local_token() -> str:
    """This machine's platform token (`FLASH_PLATFORM_TOKEN` or the one in FLASH_HOME)."""
    explicit = os.environ.get(config.ENV_PLATFORM_TOKEN)
    if explicit:
        return explicit
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
    """The platform at FLASH_PLATFORM_URL, or the one published in FLASH_HOME, if it answers."""
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
    with open(log_path, "ab") as log:
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
