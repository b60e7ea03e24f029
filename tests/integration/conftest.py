"""Integration tests share one real platform per session; it is stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import stop_platform


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _stop_session_platform() -> Iterator[None]:
    yield
    stop_platform()
