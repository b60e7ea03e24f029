"""The function `flash run --auto-provision` calls on each endpoint to start its first worker.

Shipped by reference, so a worker imports this module: it must stay free of imports.
"""


def noop() -> None:
    """Does nothing; the call itself provisions the endpoint and starts a worker."""
