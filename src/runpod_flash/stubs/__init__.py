"""How a call reaches a worker: live (shipped function), http_route, queue."""
