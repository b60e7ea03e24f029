"""`python -m runpod_flash.platform`: run the embedded platform in this process."""

from __future__ import annotations

import sys

from runpod_flash.config import InvalidSetting, UnsafeHome
from runpod_flash.platform.providers import ProviderUnavailable
from runpod_flash.platform.server import AlreadyRunning, run


def main() -> None:
    try:
        run()
    except (AlreadyRunning, UnsafeHome, InvalidSetting, ProviderUnavailable) as exc:
        sys.exit(f"flash platform: {exc}")


if __name__ == "__main__":
    main()
