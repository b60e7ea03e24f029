"""
user_service.py - Example load-balanced API service
"""

from runpod_flash import LoadBalancerSlsResource, remote
from typing import Optional

# For production, use LoadBalancerSlsResource
# For local development, use LiveLoadBalancer
api = LoadBalancerSlsResource(
    name="user-service",
    imageName="runpod/runpod-flash-lb:latest"
)

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
