from runpod_flash import LiveLoadBalancer, remote

api = LiveLoadBalancer(name="user-service")

@remote(api, method="GET", path="/users")
def list_users():
    return {"users": []}

@remote(api, method="POST", path="/users")
async def create_user(name: str, email: str):
    return {"id": 1, "name": name, "email": email}

@remote(api, method="GET", path="/users/{user_id}")
def get_user(user_id: int):
    return {"id": user_id, "name": "Alice"}

@remote(api, method="DELETE", path="/users/{user_id}")
async def delete_user(user_id: int):
    return {"deleted": True}
