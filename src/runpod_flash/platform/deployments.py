"""Deploying a built project, or rolling an endpoint back to a kept version: one background
run per request, its progress kept for polling; each version that goes live is recorded."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from runpod_flash import config
from runpod_flash.control import DEFAULT_ENVIRONMENT, deployed_endpoint_id
from runpod_flash.dependencies import APPROVED_KEY
from runpod_flash.platform import artifacts, versions
from runpod_flash.platform.apps import Apps
from runpod_flash.platform.artifact_retention import Retention
from runpod_flash.platform.endpoints import Endpoint, endpoint_path
from runpod_flash.platform.supervisor import DeployFailed, Supervisor
from runpod_flash.platform.versions import RollbackRefused

logger = logging.getLogger("runpod_flash.platform")
MAX_KEPT = 50
# Spec keys that follow from the build rather than describe a setting (a preview names "code").
_DEPLOY_DETAILS = frozenset({"artifact", "app_dir", "python", "peers", APPROVED_KEY})


@dataclass(eq=False)
class Deployment:
    id: str
    specs: list[dict[str, Any]]
    how: str = "deploy"  # "deploy" | "rollback", as the version history records it
    status: str = "running"  # running -> succeeded | failed
    progress: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    started_at: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "progress": self.progress,
                "results": self.results, "error": self.error}


def endpoint_specs(
    manifest: dict[str, Any],
    sha256: str,
    python: str,
    only: list[str] | None,
    approved: dict[str, list[str]] | None = None,
    *,
    app: str | None = None,
    environment: str = DEFAULT_ENVIRONMENT,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The specs of the artifact's endpoints to deploy into `app`'s `environment`, and the
    names skipped; `approved` names the system packages the deployer agreed to install, per
    endpoint."""
    resources: dict[str, Any] = manifest.get("resources", {})
    unknown = sorted(set(only or []) - set(resources))
    if unknown:
        raise artifacts.ArtifactRejected(
            f"no resource named {', '.join(unknown)} in this build; "
            f"it has: {', '.join(sorted(resources)) or 'none'}"
        )
    # The endpoints deployed together call each other (stubs.peers): resolved here, once
    # per deployment and environment, so the worker needs no naming rule of its own.
    peers = {name: endpoint_path(deployed_endpoint_id(name, environment), resource["spec"])
             for name, resource in resources.items()}
    specs, skipped = [], []
    for name, resource in sorted(resources.items()):
        if only and name not in only:
            continue
        specs.append({
            **resource["spec"],
            "name": name,
            "kind": "deployed",
            "app": app or manifest.get("project_name"),
            "environment": environment,
            "artifact": sha256,
            "app_dir": str(artifacts.app_dir(sha256)),
            "python": python,
            "dependencies": resource.get("dependencies", []),
            "system_dependencies": resource.get("system_dependencies", []),
            "routes": manifest.get("routes", {}).get(name, {}),
            **({APPROVED_KEY: approved[name]} if (approved or {}).get(name) else {}),
            "peers": {peer: path for peer, path in peers.items() if peer != name},
            **({"handler_file": _handler_file(sha256, resource["handler_file"])}
               if resource.get("handler_file") else {}),
        })
    return specs, skipped


def _handler_file(sha256: str, handler_file: Any) -> str:
    """A worker script the manifest names: a file of the artifact, never one outside it."""
    try:
        config.path_inside(artifacts.app_dir(sha256), str(handler_file))
    except ValueError as exc:
        raise artifacts.ArtifactRejected(f"handler_file {exc}") from None
    return str(handler_file)


class Deployments:
    def __init__(self, supervisor: Supervisor, apps: Apps) -> None:
        self.supervisor = supervisor
        self.apps = apps
        self._runs: OrderedDict[str, Deployment] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.keep = versions.keep_versions()
        self.retention = Retention(supervisor.store, supervisor.endpoints)
        versions.settle(supervisor.store, self.keep)
        self.retention.prune_at_start()

    def start(self, specs: list[dict[str, Any]], skipped: list[str], how: str = "deploy"
              ) -> Deployment:
        deployment = Deployment(f"d-{uuid.uuid4().hex[:10]}", specs, how)
        for name in skipped:
            deployment.progress.append(f"{name}: skipped")
        self._runs[deployment.id] = deployment
        while len(self._runs) > MAX_KEPT:
            self._runs.popitem(last=False)
        task = asyncio.create_task(self._run(deployment, specs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return deployment

    def get(self, deployment_id: str) -> Deployment | None:
        return self._runs.get(deployment_id)

    def deployed(self, endpoint_id: str) -> Endpoint:
        """The deployed endpoint `endpoint_id`; RollbackRefused listing them otherwise."""
        endpoint = self.supervisor.endpoints.get(endpoint_id)
        if endpoint is not None and endpoint.kind == "deployed":
            return endpoint
        names = sorted(e.id for e in self.supervisor.endpoints.values() if e.kind == "deployed")
        kind = "a live endpoint, which keeps no versions" if endpoint else "not deployed"
        raise RollbackRefused(404, f"endpoint '{endpoint_id}' is {kind}; deployed endpoints: "
                                   f"{', '.join(names) or 'none'}")

    def rollback(self, endpoint_id: str, ref: str | None) -> Deployment:
        """Redeploy a kept version (`versions.resolve` reads `ref`) with the usual rollout."""
        endpoint = self.deployed(endpoint_id)
        target = versions.resolve(versions.kept(self.supervisor.store, endpoint_id), ref,
                                  endpoint.version)
        if target.artifact and not artifacts.app_dir(target.artifact).is_dir():
            raise RollbackRefused(410, f"the build of version {target.version} (artifact "
                                       f"{target.artifact[:12]}) is no longer on this platform; "
                                       "deploy that code again with `flash deploy`")
        deployment = self.start([target.spec], [], how="rollback")
        deployment.progress.append(f"{endpoint.name}: rolling back to version {target.version}")
        return deployment

    def preview(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What deploying `specs` would do, endpoint by endpoint; nothing is changed."""
        changes = []
        for spec in specs:
            endpoint_id = self.supervisor.deployed_id(spec)
            current = self.supervisor.endpoints.get(endpoint_id)
            candidate = Endpoint(endpoint_id, str(spec["name"]), "deployed", spec)
            if current is None:
                action, changed = "create", []
            elif current.version == candidate.version and current.status == "ready":
                action, changed = "unchanged", []
            else:
                action = "update"
                keys = set(current.spec) | set(spec)
                changed = sorted(k for k in keys - _DEPLOY_DETAILS
                                 if current.spec.get(k) != spec.get(k))
                if current.spec.get("artifact") != spec.get("artifact"):
                    changed.insert(0, "code")
            changes.append({"name": candidate.name, "id": endpoint_id, "action": action,
                            "changed": changed, "path": endpoint_path(endpoint_id, spec)})
        return changes

    async def _run(self, deployment: Deployment, specs: list[dict[str, Any]]) -> None:
        try:
            for spec in specs:
                self.retention.launching(
                    spec, self.supervisor.endpoints.get(self.supervisor.deployed_id(spec)))
                endpoint, action = await self.supervisor.deploy(spec, deployment.progress.append)
                if action != "unchanged":  # the version going live joins the history
                    versions.record(self.supervisor.store, endpoint.id, endpoint.spec,
                                    deployment.how, self.keep)
                deployment.progress.append(f"{endpoint.name}: {action}")
                deployment.results.append({
                    "name": endpoint.name, "id": endpoint.id, "action": action,
                    "version": endpoint.version, "path": endpoint.summary()["path"],
                    "routes": endpoint.summary()["routes"],
                })
        except DeployFailed as exc:
            deployment.status, deployment.error = "failed", str(exc)
        except Exception as exc:  # never leave a deployment "running" forever
            deployment.status, deployment.error = "failed", f"deployment failed: {exc!r}"
        else:
            deployment.status = "succeeded"
        await self._prune()

    async def _prune(self) -> None:
        """Delete the artifacts no endpoint, kept version or running deployment needs."""
        in_progress = [spec for run in self._runs.values() if run.status == "running"
                       for spec in run.specs]
        try:
            await self.retention.prune(in_progress)
        except Exception:  # disk trouble: the deployment itself went fine
            logger.exception("pruning artifacts failed")
