"""`flash login` / `flash logout`: use a remote openflash platform instead of the embedded one.

The original logs in to Runpod through a browser; here the "API key" is the remote platform's
token (its FLASH_HOME/token, or the FLASH_PLATFORM_TOKEN it runs with), which is what
authenticates its control API. Both are checked before anything is saved, so a saved login
always worked once.
"""

from __future__ import annotations

import json
import os

import typer

from runpod_flash import config
from runpod_flash.cli.output import console, fail
from runpod_flash.http.blocking import request

CHECK_TIMEOUT_S = 10.0


def _check(url: str, api_key: str) -> str:
    """The platform's version, once it answered /health and accepted the key."""
    try:
        status, data = request("GET", url + "/health", None, {}, CHECK_TIMEOUT_S)
        health = json.loads(data) if status == 200 else None
    except (OSError, ValueError) as exc:
        fail(f"no openflash platform answers at {url} ({exc}); check the URL and that the "
             "platform runs there")
    if not isinstance(health, dict) or health.get("status") != "ok":
        fail(f"{url}/health answered {status}, not as an openflash platform; check the URL")
    try:
        status, data = request("GET", url + "/api/v1/status", None,
                               {"Authorization": f"Bearer {api_key}"}, CHECK_TIMEOUT_S)
    except (OSError, ValueError) as exc:
        fail(f"the platform at {url} could not check the API key ({exc}); try again")
    if status == 401:
        fail(f"the platform at {url} refused the API key; use that platform's token (its "
             "FLASH_HOME/token, or the FLASH_PLATFORM_TOKEN it runs with)")
    if status != 200:
        fail(f"the platform at {url} answered {status} to a token-protected call: "
             f"{data[:200].decode(errors='replace')}")
    return str(health.get("version", "?"))


def login(
    url: str = typer.Option(None, "--url", help="The remote platform's URL (asked if missing)."),
    api_key: str = typer.Option(
        None, "--api-key", help="Its API key, the platform token (asked, hidden, if missing).",
    ),
) -> None:
    """Use a remote openflash platform: saves its URL and API key in FLASH_HOME/config.toml."""
    url = (url or typer.prompt("Platform URL")).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail(f"{url!r} is not an http(s) URL; give the platform's address, e.g. "
             "http://host:7770")
    api_key = (api_key or typer.prompt("API key", hide_input=True)).strip()
    if not api_key:
        fail("the API key is empty; give the platform's token with --api-key")
    version = _check(url, api_key)
    path = config.save_login(config.Login(url, api_key))
    console.print(f"Logged in to {url} (openflash {version}). Credentials saved to {path}",
                  soft_wrap=True)
    if os.environ.get(config.ENV_PLATFORM_URL):
        console.print(f"note: {config.ENV_PLATFORM_URL} is set and wins over this login until "
                      "you unset it")


def logout() -> None:
    """Forget the remote platform `flash login` saved; the embedded platform is used again."""
    path = config.login_path()
    try:
        saved = config.read_login()
    except ValueError:
        saved = None  # a damaged file is removed all the same
    if not path.exists():
        console.print(f"not logged in ({path} does not exist)", soft_wrap=True)
        return
    path.unlink()
    where = f" of {saved.url}" if saved else ""
    console.print(f"Logged out{where}: removed {path}; the embedded platform is used again",
                  soft_wrap=True)
