"""`flash status` for people: one block per endpoint, readable at 80 columns.

A table squeezes URLs into slivers on a narrow terminal; here each endpoint is a header
line and indented `label value` lines, and only long values wrap (a URL is never split
mid-way unless it is wider than the terminal itself). Deployed and live endpoints are
listed apart, deployed first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

LABEL_WIDTH = 9


def _details(rows: list[tuple[str, str]]) -> Table:
    """Indented `label value` rows; a long value wraps under itself, not under the label."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="dim", min_width=LABEL_WIDTH + 2)
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(f"  {label}", value)
    return grid


def _workers(endpoint: dict[str, Any]) -> str:
    states = [w["state"] for w in endpoint["workers"]]
    text = f"{states.count('ready')} ready, {states.count('starting')} starting"
    if states.count("draining"):
        text += f", {states.count('draining')} draining"
    return text + f" (min {endpoint['workersMin']}, max {endpoint['workersMax']})"


def _nodes(endpoint: dict[str, Any]) -> str | None:
    """Where the workers run, on a cluster ("2 on 1a2b3c4d, 1 on 9f8e7d6c"); None locally."""
    counts: dict[str, int] = {}
    for worker in endpoint["workers"]:
        if worker.get("node"):
            counts[worker["node"][:8]] = counts.get(worker["node"][:8], 0) + 1
    return ", ".join(f"{n} on {node}" for node, n in sorted(counts.items())) or None


def _traffic(endpoint: dict[str, Any]) -> str:
    stats = endpoint["stats"]
    cold = f"{stats['cold_starts']} cold start" + ("" if stats["cold_starts"] == 1 else "s")
    if endpoint["type"] != "QB":
        return f"{stats['requests']} requests, {stats['errors']} errors, {cold}"
    jobs = stats.get("jobs")
    if jobs:  # a queue endpoint's traffic is its jobs, not requests
        return (f"{jobs['completed']} jobs done, {jobs['failed']} failed, "
                f"{jobs['inQueue']} queued, {jobs['inProgress']} running; {cold}")
    return f"{stats.get('queued', 0)} queued, {stats.get('running', 0)} running; {cold}"


def _status(endpoint: dict[str, Any]) -> Text:
    if endpoint["error"]:
        return Text(f"{endpoint['status']}: {endpoint['error']}", style="red")
    if endpoint["last_start_failure"]:
        return Text(f"{endpoint['status']} (workers failing: "
                    f"{endpoint['last_start_failure']})", style="yellow")
    return Text(endpoint["status"], style="green" if endpoint["status"] == "ready" else "")


def endpoint_block(endpoint: dict[str, Any]) -> RenderableType:
    head = Text(endpoint["name"], style="bold")
    head.append(f"  {endpoint['type']}  ")
    head.append_text(_status(endpoint))
    if endpoint.get("environment"):
        head.append(f"  {endpoint['app']}/{endpoint['environment']}", style="cyan")
    rows = [("url", endpoint["url"]), ("workers", _workers(endpoint)),
            ("traffic", _traffic(endpoint))]
    nodes = _nodes(endpoint)
    if nodes:
        rows.append(("nodes", nodes))
    if endpoint["routes"]:
        rows.append(("routes", ", ".join(endpoint["routes"])))
    if endpoint["env"]:
        rows.append(("env", ", ".join(f"{k}={v}" for k, v in endpoint["env"].items())))
    if endpoint.get("warning"):
        rows.append(("warning", endpoint["warning"]))
    if endpoint["kind"] == "deployed":
        deployed = datetime.fromtimestamp(endpoint["deployed_at"]).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(("deployed", f"{deployed}, version {endpoint['version']}"))
    return Group(head, _details(rows))


def render(platform_url: str, endpoints: list[dict[str, Any]]) -> RenderableType:
    """The whole view: a summary line, then the deployed and the live sections."""
    deployed = [e for e in endpoints if e["kind"] == "deployed"]
    live = [e for e in endpoints if e["kind"] != "deployed"]
    parts: list[RenderableType] = [
        Text(f"platform {platform_url}: {len(deployed)} deployed, {len(live)} live")]
    for title, group in (("DEPLOYED", deployed), ("LIVE", live)):
        if not group:
            continue
        parts.append(Text(""))
        parts.append(Text(title, style="bold underline"))
        for endpoint in sorted(group, key=lambda e: (e.get("app") or "",
                                                     e.get("environment") or "", e["name"])):
            parts.append(endpoint_block(endpoint))
    if not endpoints:
        parts.append(Text("no endpoints; `flash deploy` a project, or call a Live resource"))
    return Group(*parts)
