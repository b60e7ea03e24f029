"""The embedded platform: control API, gateway, supervisor and store in one process."""
