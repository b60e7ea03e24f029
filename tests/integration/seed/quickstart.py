from runpod_flash import LiveLoadBalancer, remote

# Create load-balanced endpoint
api = LiveLoadBalancer(name="example-api")

# Define HTTP-routed function
@remote(api, method="POST", path="/api/greet")
async def greet_user(name: str):
    return {"message": f"Hello, {name}!"}

# Call the function locally
async def main():
    result = await greet_user("Alice")
    print(result)  # {"message": "Hello, Alice!"}

if __name__ == "__main__":
    import asyncio
    asyncio.run(main())
