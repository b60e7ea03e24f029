"""Shared test set-up: every test run gets its own FLASH_HOME, never the user's."""

from __future__ import annotations

import os
import tempfile

# Before any test module builds a resource or makes a call: a private platform home and
# an ephemeral port, so tests never touch ~/.flash or a platform the user is running.
_home = tempfile.mkdtemp(prefix="flash-test-home-")
os.environ["FLASH_HOME"] = _home
os.environ["FLASH_PLATFORM_PORT"] = "0"
os.environ.pop("FLASH_PLATFORM_URL", None)
os.environ.pop("FLASH_PLATFORM_TOKEN", None)
