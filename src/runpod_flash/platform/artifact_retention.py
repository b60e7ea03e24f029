"""Artifact retention: which unpacked builds the platform still needs. Every kept version's,
every deployed endpoint's, those of deployments in progress, and the build of every running
worker; the rest go (`artifacts.prune`), after each deployment and when the platform starts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from runpod_flash.platform import artifacts, versions
from runpod_flash.platform.endpoints import Endpoint, spec_version
from runpod_flash.platform.store import Store

logger = logging.getLogger("runpod_flash.platform")


class Retention:
    def __init__(self, store: Store, endpoints: dict[str, Endpoint]) -> None:
        self.store = store
        self.endpoints = endpoints  # the supervisor's: what runs now
        # version -> artifact of builds this platform started workers of: a version drained
        # after a rollout (or a canary that failed) may be in no kept version any more
        self._launched: dict[str, str | None] = {}

    def launching(self, spec: dict[str, Any], current: Endpoint | None) -> None:
        """A deployment of `spec` starts; `current` (replaced by it) drains afterwards."""
        self._launched[spec_version(spec)] = spec.get("artifact")
        if current is not None:
            self._launched[current.version] = current.spec.get("artifact")

    def needed(self, in_progress: list[dict[str, Any]]) -> set[str] | None:
        """The artifacts to keep; None when a running worker's build cannot be told (then
        nothing may be deleted). Versions of undeployed endpoints are forgotten here."""
        deployed = {row["id"]: row["spec"] for row in self.store.endpoints()
                    if row["kind"] == "deployed"}
        kept = versions.kept(self.store)
        for endpoint_id in {v.endpoint_id for v in kept} - set(deployed):
            self.store.forget_versions(endpoint_id)  # undeployed: its history goes with it
        kept = [v for v in kept if v.endpoint_id in deployed]
        specs = [*deployed.values(), *in_progress, *(v.spec for v in kept),
                 *(endpoint.spec for endpoint in self.endpoints.values())]
        known = {**self._launched, **{spec_version(spec): spec.get("artifact") for spec in specs}}
        running = {worker.version for endpoint in self.endpoints.values()
                   for worker in endpoint.workers.values()}
        if running - set(known):
            logger.info("not pruning artifacts: workers run versions %s of unknown builds",
                        ", ".join(sorted(running - set(known))))
            return None
        self._launched = {v: a for v, a in self._launched.items() if v in running}
        needed = {spec.get("artifact") for spec in specs}
        needed |= {known[version] for version in running}
        return {artifact for artifact in needed if artifact}

    async def prune(self, in_progress: list[dict[str, Any]]) -> None:
        """Delete the artifacts nothing needs (after a deployment)."""
        needed = self.needed(in_progress)
        if needed is not None:
            await asyncio.to_thread(artifacts.prune, needed)

    def prune_at_start(self) -> None:
        """The same when the platform starts, in the background."""
        needed = self.needed([])
        if needed is not None:
            threading.Thread(target=artifacts.prune, args=(needed,), name="flash-prune",
                             daemon=True).start()
