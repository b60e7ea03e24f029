"""The original runpod_flash's `core` package path, kept so code importing from it runs.

Only `core.resources` exists here; its modules re-export this package's own objects.
"""
