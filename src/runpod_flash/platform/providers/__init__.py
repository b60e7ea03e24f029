"""How the supervisor starts workers: local processes (default)."""
