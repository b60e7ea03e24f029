"""The `flash` command line."""
