"""
test_user_service.py
"""
# The seed's "Testing the Example" file, with the "(function definitions)" it elides filled in
# from its Complete Working Example (same code, on the test's LiveLoadBalancer).

import pytest
from runpod_flash import LiveLoadBalancer, remote
from typing import Optional

# Use LiveLoadBalancer for testing
api = LiveLoadBalancer(name="user-service-test")

class UserNotFound(Exception):
    pass

# In-memory database for example
users_db = {
    1: {"id": 1, "name": "Alice", "email": "alice@example.com"},
    2: {"id": 2, "name": "Bob", "email": "bob@example.com"},
}

@remote(api, method="GET", path="/health")
def health_check():
    """Health check endpoint."""
    return {"status": "healthy"}

@remote(api, method="GET", path="/users")
def list_users():
    """List all users."""
    return {"users": list(users_db.values())}

@remote(api, method="POST", path="/users")
async def create_user(name: str, email: str):
    """Create a new user."""
    user_id = max(users_db.keys() or [0]) + 1
    user = {"id": user_id, "name": name, "email": email}
    users_db[user_id] = user
    return user

@remote(api, method="GET", path="/users/{user_id}")
def get_user(user_id: int):
    """Get a specific user."""
    if user_id not in users_db:
        raise UserNotFound(f"User {user_id} not found")
    return users_db[user_id]

@remote(api, method="PUT", path="/users/{user_id}")
async def update_user(user_id: int, name: Optional[str] = None,
                      email: Optional[str] = None):
    """Update a user."""
    if user_id not in users_db:
        raise UserNotFound(f"User {user_id} not found")

    user = users_db[user_id]
    if name is not None:
        user["name"] = name
    if email is not None:
        user["email"] = email
    return user

@remote(api, method="DELETE", path="/users/{user_id}")
async def delete_user(user_id: int):
    """Delete a user."""
    if user_id not in users_db:
        raise UserNotFound(f"User {user_id} not found")

    del users_db[user_id]
    return {"deleted": True}

@pytest.mark.asyncio
async def test_list_users():
    users = list_users()
    assert "users" in users
    assert isinstance(users["users"], list)

@pytest.mark.asyncio
async def test_create_and_get_user():
    # Create a user
    new_user = await create_user("Charlie", "charlie@example.com")
    assert new_user["name"] == "Charlie"
    assert new_user["id"] > 0

    # Get the user
    user = get_user(new_user["id"])
    assert user["name"] == "Charlie"

@pytest.mark.asyncio
async def test_update_user():
    new_user = await create_user("Diana", "diana@example.com")
    updated = await update_user(new_user["id"], name="Diana Updated")
    assert updated["name"] == "Diana Updated"

@pytest.mark.asyncio
async def test_delete_user():
    new_user = await create_user("Eve", "eve@example.com")
    result = await delete_user(new_user["id"])
    assert result["deleted"] is True

    # Should raise error when trying to get deleted user
    with pytest.raises(Exception):  # UserNotFound
        get_user(new_user["id"])

# --- end of the seed's code; below, checks the seed implies but does not spell out ---

import os  # noqa: E402

from helpers import platform_status, worker_pids  # noqa: E402


def test_state_lives_in_the_worker_not_in_this_process() -> None:
    created = __import__("asyncio").run(create_user("Frank", "frank@example.com"))
    assert created["id"] not in users_db  # this process's copy is untouched
    assert get_user(created["id"])["name"] == "Frank"  # the worker kept it for the next call
    assert list_users()["users"][-1]["name"] == "Frank"  # and another function sees it
    assert worker_pids(platform_status(), "user-service-test")
    assert all(pid != os.getpid() for pid in worker_pids(platform_status(), "user-service-test"))


def test_missing_user_raises_the_callers_own_exception_class() -> None:
    with pytest.raises(UserNotFound, match="User 999 not found"):
        get_user(999)
