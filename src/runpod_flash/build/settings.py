"""`flash.toml`: the project name and per-endpoint overrides (for every environment, and per
environment under `[environments.<env>.endpoints.<name>]`), checked strictly.

Typos here would silently deploy the wrong scale, so every unknown name or wrong type is a
BuildError that lists what is allowed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BuildError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SETTINGS_FILE = "flash.toml"
TOP_LEVEL_KEYS = ("project_name", "endpoints", "handlers", "environments")
# Overridable integer settings and their minimums (the same as the resource models').
INTEGER_KEYS = {
    "workersMin": 0, "workersMax": 1, "idleTimeout": 0, "scalerValue": 1, "gpuCount": 0,
    "executionTimeoutMs": 0, "concurrency": 1,
}
ENDPOINT_KEYS = (*INTEGER_KEYS, "env")
HANDLER_KEYS = ("file", *ENDPOINT_KEYS)


@dataclass(frozen=True)
class Settings:
    project_name: str | None = None
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    handlers: dict[str, dict[str, Any]] = field(default_factory=dict)
    environments: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def _reject_unknown(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise BuildError(
                f"{SETTINGS_FILE}: unknown key '{key}' in {where}; allowed keys: "
                f"{', '.join(allowed)}"
            )


def _check_handler(name: str, table: Any) -> dict[str, Any]:
    """`[handlers.<name>]`: a `runpod.serverless.start` script serving a queue endpoint."""
    where = f"[handlers.\"{name}\"]"
    if not isinstance(table, dict) or not isinstance(table.get("file"), str):
        raise BuildError(
            f"{SETTINGS_FILE}: {where} needs file = \"<worker script>.py\", the script that "
            "calls runpod.serverless.start"
        )
    _check_settings(where, {k: v for k, v in table.items() if k != "file"}, HANDLER_KEYS)
    return table


def _check_endpoint(name: str, table: Any, prefix: str = "") -> dict[str, Any]:
    where = f"[{prefix}endpoints.\"{name}\"]"
    if not isinstance(table, dict):
        raise BuildError(f"{SETTINGS_FILE}: {where} must be a table of settings")
    return _check_settings(where, table, ENDPOINT_KEYS)


def _check_settings(where: str, table: dict[str, Any], allowed: tuple[str, ...]
                    ) -> dict[str, Any]:
    _reject_unknown(table, allowed, where)
    for key, value in table.items():
        if key == "env":
            if not isinstance(value, dict) or not all(
                isinstance(v, str) for v in value.values()
            ):
                raise BuildError(
                    f"{SETTINGS_FILE}: {where} env must be a table of strings, "
                    'e.g. env = { LOG_LEVEL = "debug" }'
                )
        elif isinstance(value, bool) or not isinstance(value, int):
            raise BuildError(
                f"{SETTINGS_FILE}: {where} {key} must be an integer (got {value!r})"
            )
        elif value < INTEGER_KEYS[key]:
            raise BuildError(
                f"{SETTINGS_FILE}: {where} {key} must be >= {INTEGER_KEYS[key]} (got {value})"
            )
    return table


def load_settings(project_dir: Path) -> Settings:
    """The project's settings; all defaults when there is no flash.toml."""
    path = project_dir / SETTINGS_FILE
    if not path.is_file():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{SETTINGS_FILE}: invalid TOML: {exc}") from None
    _reject_unknown(data, TOP_LEVEL_KEYS, "the top level")
    project_name = data.get("project_name")
    if project_name is not None and (not isinstance(project_name, str) or not project_name):
        raise BuildError(f"{SETTINGS_FILE}: project_name must be a non-empty string")
    endpoints = data.get("endpoints", {})
    if not isinstance(endpoints, dict):
        raise BuildError(f"{SETTINGS_FILE}: endpoints must be tables: [endpoints.<name>]")
    handlers = data.get("handlers", {})
    if not isinstance(handlers, dict):
        raise BuildError(f"{SETTINGS_FILE}: handlers must be tables: [handlers.<name>]")
    return Settings(
        project_name=project_name,
        endpoints={name: _check_endpoint(name, table) for name, table in endpoints.items()},
        handlers={name: _check_handler(name, table) for name, table in handlers.items()},
        environments=_check_environments(data.get("environments", {})),
    )


def _check_environments(environments: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """`[environments.<env>.endpoints.<name>]`: overrides for one environment only."""
    if not isinstance(environments, dict):
        raise BuildError(f"{SETTINGS_FILE}: environments must be tables: "
                         "[environments.<env>.endpoints.<name>]")
    checked = {}
    for env, table in environments.items():
        prefix = f"environments.\"{env}\"."
        if not isinstance(table, dict):
            raise BuildError(f"{SETTINGS_FILE}: [{prefix[:-1]}] must be a table")
        _reject_unknown(table, ("endpoints",), f"[{prefix[:-1]}]")
        endpoints = table.get("endpoints", {})
        if not isinstance(endpoints, dict):
            raise BuildError(f"{SETTINGS_FILE}: [{prefix}endpoints] must be tables: "
                             f"[{prefix}endpoints.<name>]")
        checked[env] = {name: _check_endpoint(name, value, prefix)
                        for name, value in endpoints.items()}
    return checked


def apply_overrides(
    specs: dict[str, dict[str, Any]], settings: Settings, environment: str | None = None
) -> None:
    """Apply the `[endpoints.<name>]` tables, then those of the environment being deployed
    (`[environments.<env>.endpoints.<name>]`), to the specs in place (`env` is merged)."""
    layers = [("", settings.endpoints)]
    if environment is not None:
        layers.append((f"environments.\"{environment}\".",
                       settings.environments.get(environment, {})))
    for prefix, tables in layers:
        for name, overrides in tables.items():
            _apply(specs, name, overrides, f"[{prefix}endpoints.\"{name}\"]")


def _apply(specs: dict[str, dict[str, Any]], name: str, overrides: dict[str, Any], where: str
           ) -> None:
    if name not in specs:
        known = ", ".join(specs) or "none"
        raise BuildError(
            f"{SETTINGS_FILE}: {where} matches no resource; resources in this project: {known}"
        )
    spec = specs[name]
    if overrides.get("gpuCount") and spec.get("cpu"):
        raise BuildError(
            f"{SETTINGS_FILE}: {where} gpuCount: '{name}' runs on CPU workers and takes "
            "no GPUs; remove gpuCount"
        )
    spec.update({k: v for k, v in overrides.items() if k != "env"})
    spec["env"] = {**spec.get("env", {}), **overrides.get("env", {})}
    if spec["workersMin"] > spec["workersMax"]:
        raise BuildError(
            f"{SETTINGS_FILE}: {where} workersMin ({spec['workersMin']}) cannot be greater "
            f"than workersMax ({spec['workersMax']})"
        )
