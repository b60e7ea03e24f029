"""`python -m runpod_flash.cli`, the same as the `flash` command."""

from runpod_flash.cli.main import app

app(prog_name="flash")
