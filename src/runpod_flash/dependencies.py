"""What callers and the platform agree on about dependencies, in one neutral place.

- Flash's own distribution names are never installed into worker environments: workers run
  with the interpreter that already has this `runpod_flash`, and the package from an index
  would shadow it (`No module named runpod_flash.runtime.__main__`).
- System packages (`system_dependencies`) are installed by apt-get only with the user's
  approval. The platform is a daemon and cannot ask, so the caller (a live call, `flash
  deploy`) shows what apt-get will install, asks once, and sends the approved names along.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable
from typing import TextIO

FRAMEWORK_NAMES = frozenset({"openflash", "runpod-flash", "tetra-rp"})
ENV_ASSUME_YES = "FLASH_ASSUME_YES"
APPROVED_KEY = "approved_system_dependencies"  # the spec field that carries the approval

# Debian package or command names; anything else could smuggle options into apt-get as root.
_SYSTEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._:-]*")

_approved: set[str] = set()  # packages the user agreed to install, asked once per process
_asking = threading.Lock()


class SystemPackagesRefused(RuntimeError):
    """Missing system packages were not approved for installation; the message says how to."""


def requirement_name(requirement: str) -> str:
    """The normalized project name a requirement installs: `Torch_Audio[x]>=2` is
    `torch-audio`, so names compare exactly, whatever their spelling."""
    name = re.split(r"[^A-Za-z0-9._-]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def is_framework(requirement: str) -> bool:
    """Whether a requirement names Flash itself, under this or the original's name."""
    return requirement_name(requirement) in FRAMEWORK_NAMES


def split_framework(requirements: Iterable[str]) -> tuple[list[str], list[str]]:
    """(requirements to install, the ones naming Flash itself that must be left out)."""
    kept: list[str] = []
    dropped: list[str] = []
    for requirement in requirements:
        (dropped if is_framework(requirement) else kept).append(requirement)
    return kept, dropped


def check_system_names(names: Iterable[str]) -> None:
    """Raise ValueError for names that are not plain package names."""
    invalid = [name for name in names if not _SYSTEM_NAME.fullmatch(name)]
    if invalid:
        raise ValueError(
            f"Invalid system dependency names: {', '.join(map(repr, invalid))}. "
            "List one package name per entry, e.g. system_dependencies=['ffmpeg', 'libgl1']."
        )


def system_package_present(name: str) -> bool:
    """Whether name is a command on PATH or an installed Debian package."""
    if shutil.which(name):
        return True
    if not shutil.which("dpkg-query"):
        return False
    result = subprocess.run(
        ["dpkg-query", "-W", "--showformat=${Status}", name],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def missing_system_packages(names: Iterable[str]) -> list[str]:
    """The names (deduplicated, in order) that are neither commands nor installed packages."""
    return [name for name in dict.fromkeys(names) if not system_package_present(name)]


def assume_yes() -> bool:
    """Whether `FLASH_ASSUME_YES` approves installs without asking (1, true or yes)."""
    return os.environ.get(ENV_ASSUME_YES, "").strip().lower() in ("1", "true", "yes")


def approve_system_packages(
    endpoint: str,
    names: list[str],
    yes: bool = False,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> list[str]:
    """The missing packages of `names` the user agrees to install for `endpoint`.

    Shows what apt-get will install and asks once (y/N) on a terminal; `yes` (`--yes`) or
    FLASH_ASSUME_YES=1 skip the question. Packages already approved in this process are not
    asked again. Raises SystemPackagesRefused when the answer is no or nobody can be asked.
    """
    check_system_names(names)
    missing = missing_system_packages(names)
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stderr if out is None else out
    with _asking:  # concurrent first calls ask one at a time, and never twice for a package
        pending = [name for name in missing if name not in _approved]
        if not pending:
            return missing
        print(f"apt-get will install: {', '.join(pending)} "
              f"(system_dependencies of endpoint '{endpoint}')", file=out, flush=True)
        if not (yes or assume_yes()):
            _ask(endpoint, pending, stdin, out)
        _approved.update(pending)
    return missing


def _ask(endpoint: str, pending: list[str], stdin: TextIO, out: TextIO) -> None:
    """Ask y/N on the terminal; raise SystemPackagesRefused unless the answer is yes."""
    manual = f"or install them yourself: `sudo apt-get install {' '.join(pending)}`"
    if not stdin.isatty():
        raise SystemPackagesRefused(
            f"Endpoint '{endpoint}' needs system packages that are not installed: "
            f"{', '.join(pending)}. There is no terminal to ask for approval: pass `--yes` "
            f"(flash deploy) or set {ENV_ASSUME_YES}=1 to let apt-get install them, {manual}."
        )
    print("Install them? [y/N] ", end="", file=out, flush=True)
    if stdin.readline().strip().lower() not in ("y", "yes"):
        raise SystemPackagesRefused(
            f"Installing {', '.join(pending)} for endpoint '{endpoint}' was declined; "
            f"approve it to proceed, {manual}."
        )
