"""The one exception a build raises, so the CLI can print it as a plain reason and exit 1."""

from __future__ import annotations


class BuildError(Exception):
    """A build failed for a reason the user can fix; the message names the file:line and fix."""
