"""Fixtures the supervisor's unit tests share (files may define their own `store`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_fakes import temporary_store

from runpod_flash.platform.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The platform's store in a temporary folder, FLASH_HOME beside it."""
    yield from temporary_store(tmp_path, monkeypatch)
