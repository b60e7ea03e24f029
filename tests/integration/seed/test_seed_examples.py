"""The seed's Quick Start (run as a script) and "Single Endpoint with Multiple Routes"."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from multiple_routes import create_user, delete_user, get_user, list_users

from helpers import platform_status, run_python

HERE = Path(__file__).parent


def test_quick_start_script_prints_the_greeting() -> None:
    result = run_python(str(HERE / "quickstart.py"), cwd=HERE)
    assert result.returncode == 0, result.stderr
    assert ast.literal_eval(result.stdout.strip().splitlines()[-1]) == {
        "message": "Hello, Alice!"
    }
    status = platform_status()
    quickstart = [e for e in status["endpoints"] if e["name"] == "example-api"]
    assert quickstart, "the script's call did not create its endpoint on the platform"


@pytest.mark.asyncio
async def test_single_endpoint_with_multiple_routes() -> None:
    assert list_users() == {"users": []}
    assert await create_user("Ann", "ann@example.com") == {
        "id": 1, "name": "Ann", "email": "ann@example.com"
    }
    assert get_user(7) == {"id": 7, "name": "Alice"}
    assert await delete_user(7) == {"deleted": True}
    endpoints = [e for e in platform_status()["endpoints"] if e["name"] == "user-service"]
    assert len(endpoints) == 1  # four routes, one endpoint
    pids = [w["pid"] for w in endpoints[0]["workers"]]
    assert pids and os.getpid() not in pids
