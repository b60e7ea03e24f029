"""Apps and their environments: where deployed endpoints live (`flash app`, `flash env`).

An app groups a project's deployments; each of its environments (`dev`, `staging`,
`production`) has its own endpoints, URLs and workers. An endpoint records its app and
environment in its spec; this registry keeps the names, so an environment exists (and can be
listed, deployed to or deleted) before and after it has endpoints.
"""

from __future__ import annotations

import re
from typing import Any

from runpod_flash.control import DEFAULT_ENVIRONMENT
from runpod_flash.platform.store import Store

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class AppError(ValueError):
    """A request about apps or environments that cannot be honoured (`status`: HTTP)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise AppError(400, f"invalid {kind} name {name!r}: use letters, digits, '-', '_' or "
                            "'.' (at most 63, starting with a letter or digit)")
    return name


class Apps:
    """The apps and environments, in memory and in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._apps: dict[str, dict[str, Any]] = store.apps()

    def names(self) -> list[str]:
        return sorted(self._apps)

    def exists(self, app: str) -> bool:
        return app in self._apps

    def environments(self, app: str) -> list[str]:
        """The app's environment names; AppError 404 for an unknown app."""
        if app not in self._apps:
            known = ", ".join(sorted(self._apps)) or "none"
            raise AppError(404, f"app '{app}' not found (apps: {known}); create it with "
                                f"`flash app create {app}` or deploy with --app {app}")
        return sorted(self._apps[app]["environments"])

    def create_app(self, app: str) -> bool:
        """Create the app; False when it already existed."""
        check_name("app", app)
        if app in self._apps:
            return False
        self._store.save_app(app)
        self._apps = self._store.apps()
        return True

    def create_environment(self, app: str, environment: str) -> bool:
        """Create the environment (and its app); False when it already existed."""
        check_name("environment", environment)
        self.create_app(app)
        if environment in self._apps[app]["environments"]:
            return False
        self._store.save_environment(app, environment)
        self._apps = self._store.apps()
        return True

    def choose_environment(self, app: str, requested: str | None, create: bool = True) -> str:
        """The environment a deploy goes to, as the original decides it: the one asked for
        (created on first use); else the app's only one; else `production` for an app
        without any; several without a choice is an error naming them."""
        check_name("app", app)
        if requested is not None:
            check_name("environment", requested)
            if create:
                self.create_environment(app, requested)
            return requested
        existing = sorted(self._apps.get(app, {}).get("environments", {}))
        if len(existing) > 1:
            raise AppError(409, f"Multiple environments found: {', '.join(existing)}. Please "
                                "specify with --env <name>")
        chosen = existing[0] if existing else DEFAULT_ENVIRONMENT
        if create:
            self.create_environment(app, chosen)
        return chosen

    def forget_environment(self, app: str, environment: str) -> None:
        if environment not in self._apps.get(app, {}).get("environments", {}):
            known = ", ".join(self.environments(app)) or "none"
            raise AppError(404, f"environment '{environment}' not found in app '{app}' "
                                f"(environments: {known})")
        self._store.delete_environment(app, environment)
        self._apps = self._store.apps()

    def forget_app(self, app: str) -> None:
        self.environments(app)  # 404 for an unknown app
        self._store.delete_app(app)
        self._apps = self._store.apps()
