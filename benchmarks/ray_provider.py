"""The Ray provider beside Ray Serve and the local provider, on one local Ray cluster.

Starts a Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head that holds no
work, num_cpus=0, and two worker nodes), then, side by side in the same run:

- openflash (ray): a platform (own FLASH_HOME, FLASH_PROVIDER=ray, FLASH_RAY_ADDRESS = the
  cluster) whose workers are Ray actors on the worker nodes;
- openflash (local): a second platform (own FLASH_HOME, FLASH_PROVIDER=local), workers
  as processes of this machine;
- Ray Serve on the same cluster, its HTTP proxy on the head (proxy_location=HeadOnly).

Each serves the same trivial function, `GET /hello` -> `{"hello": "world"}`, twice:

- warm: two workers / replicas (the gateway benchmark's project, `lb_gateway.PROJECT`:
  workersMin=workersMax=2; Serve: num_replicas=2, each reserving the 2 CPUs an openflash CPU
  worker reserves, max_ongoing_requests=64 so Serve's default of 5 does not throttle it,
  no access log);
- cold: zero workers until a request comes (the scaling benchmark's project,
  `scaling.PROJECT`: workersMin=0, idleTimeout=2; Serve: autoscaling min_replicas=0,
  initial_replicas=0, max_replicas=1, back to zero after 1 s idle).

Cold start: per round and target, wait (deadline 60 s, polling `/api/v1/status`, or
`serve.status()`) until every target's cold endpoint has no worker / replica at all, then
time one `GET /hello` from sending it to its whole 200 answer; median of `--rounds` rounds.
Ray Serve is never redeployed between rounds: it scales back to zero by itself, as the
platforms do, so all three are timed in the same state.

Warm throughput: `wrk` (as `lb_gateway` runs it: -t2 -c32, and -t1 -c1 for p50) for
`--seconds` on each target, interleaved. Every request carries an `Authorization: Bearer`
header of the same size (each platform's own token; Serve gets the Ray platform's and
ignores it). Prints a table, the ratios against
Ray Serve and PASS/FAIL against issue 13's targets (FAIL does not change the exit status;
a broken setup does).

    python benchmarks/ray_provider.py [--seconds 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import lb_gateway  # the warm project, its deployment and the wrk runs
import scaling  # the scale-from-zero project and its timed GET

TARGETS = {"throughput_over_serve_c32": 5.0, "cold_start_over_serve": 1 / 3}
ZERO_TIMEOUT_S = 60.0
NODES = 2
NODE_CPUS = 8  # logical: room for 3 openflash and 3 Serve workers of 2 CPUs each
NODE_MEMORY = 32 * 1024**3  # logical: an openflash CPU worker (cpu3g-2-8) reserves 8 GB
OBJECT_STORE = 100 * 1024**2


@dataclass
class Target:
    """One system under test: where its warm and cold `GET /hello` are, and how to tell
    that its cold endpoint has no worker at all."""

    name: str
    warm_url: str
    cold_url: str
    cold_is_empty: Callable[[], bool]
    token: str = ""
    warm_nodes: Callable[[], set[str]] = set


@dataclass
class Figures:
    cold_s: list[float]
    c32: lb_gateway.Sample
    c1: lb_gateway.Sample


@contextlib.contextmanager
def ray_cluster() -> Iterator[Any]:
    """A head (no CPUs, so no work lands there) and two worker nodes; shut down on the way out."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": OBJECT_STORE})
    try:
        for _ in range(NODES):
            cluster.add_node(num_cpus=NODE_CPUS, memory=NODE_MEMORY,
                             object_store_memory=OBJECT_STORE)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@contextlib.contextmanager
def openflash(provider: str, ray_address: str | None) -> Iterator[Target]:
    """A platform with this provider (own FLASH_HOME) with the warm and the cold project
    deployed; stopped (`flash platform stop`, by `lb_gateway.deployed`) on the way out.
    The environment is restored afterwards, so an enclosing platform is stopped in its own
    FLASH_HOME."""
    saved = dict(os.environ)
    os.environ["FLASH_PROVIDER"] = provider
    if ray_address:
        os.environ["FLASH_RAY_ADDRESS"] = ray_address
    else:
        os.environ.pop("FLASH_RAY_ADDRESS", None)
    try:
        with lb_gateway.deployed(f"flash-bench-{provider}") as (platform, results):
            from runpod_flash.deploy import deploy_project

            cold_project = Path(tempfile.mkdtemp(prefix=f"flash-bench-{provider}-cold-"))
            (cold_project / "service.py").write_text(scaling.PROJECT)
            _, cold = deploy_project(cold_project)
            cold_path = next(r["path"] for r in cold if r["name"] == scaling.NAME)
            running = platform.call("GET", "/api/v1/status")["provider"]["provider"]
            if running != provider:
                raise lb_gateway.BenchError(f"asked for the {provider} provider, got {running}")

            def warm_nodes() -> set[str]:
                status = platform.call("GET", "/api/v1/status")
                warm = next(e for e in status["endpoints"] if e["name"] == "bench-lb")
                return {str(w.get("node")) for w in warm["workers"]}

            yield Target(f"openflash ({provider})", f"{platform.url}{results[0]['path']}/hello",
                         f"{platform.url}{cold_path}/hello",
                         lambda: not scaling.workers_of(platform), platform.token, warm_nodes)
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Hello:
    """The same function as the projects' `GET /hello`, as a Ray Serve deployment."""

    async def __call__(self, request: Any) -> dict[str, str]:
        return {"hello": "world"}


@contextlib.contextmanager
def ray_serve(address: str) -> Iterator[Target]:
    """Ray Serve on the cluster: app `warm` (2 replicas) and app `cold` (scales from zero),
    its proxy on the head only (every node shares this machine's ports)."""
    import ray
    from ray import serve

    port = lb_gateway.free_port()
    base = f"http://127.0.0.1:{port}"
    ray.init(address=address, namespace="bench", log_to_driver=False, logging_level="ERROR")
    try:
        # No per-request access log: Serve's proxy and replicas log nothing per request.
        logging = {"enable_access_log": False, "log_level": "WARNING"}
        serve.start(proxy_location="HeadOnly", logging_config=logging,
                    http_options={"host": "127.0.0.1", "port": port})
        options = {"ray_actor_options": {"num_cpus": 2}, "max_ongoing_requests": 64,
                   "logging_config": logging}
        serve.run(serve.deployment(Hello, name="warm", num_replicas=2, **options).bind(),
                  name="warm", route_prefix="/warm")
        serve.run(serve.deployment(Hello, name="cold", **options, autoscaling_config={
            "min_replicas": 0, "initial_replicas": 0, "max_replicas": 1,
            "upscale_delay_s": 0, "downscale_delay_s": 1, "downscale_to_zero_delay_s": 1,
            "look_back_period_s": 1, "metrics_interval_s": 0.5,
        }).bind(), name="cold", route_prefix="/cold")
        deadline = time.monotonic() + 60
        while lb_gateway.get_status(f"{base}/warm", {}) != 200:
            if time.monotonic() > deadline:
                raise lb_gateway.BenchError(f"Ray Serve does not answer 200 at {base}/warm")
            time.sleep(0.1)

        def cold_is_empty() -> bool:
            app = serve.status().applications.get("cold")
            return app is not None and not any(
                sum(d.replica_states.values()) for d in app.deployments.values())

        yield Target("Ray Serve", f"{base}/warm", f"{base}/cold", cold_is_empty)
    finally:
        # Serve's controller and proxy go with the cluster; this only ends our driver.
        with contextlib.suppress(Exception):
            ray.shutdown()


def wait_all_empty(targets: list[Target]) -> None:
    deadline = time.monotonic() + ZERO_TIMEOUT_S
    while True:
        busy = [t.name for t in targets if not t.cold_is_empty()]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise lb_gateway.BenchError(f"not at zero workers within {ZERO_TIMEOUT_S:.0f} s: "
                                        + ", ".join(busy))
        time.sleep(0.05)


def cold_starts(targets: list[Target], rounds: int) -> dict[str, list[float]]:
    """Per round, each target in turn: every cold endpoint at zero, then one timed GET."""
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    for _ in range(rounds):
        for target in targets:
            wait_all_empty(targets)
            samples[target.name].append(scaling.timed_get(target.cold_url, 120))
    return samples


def throughput(targets: list[Target], seconds: float, token: str
               ) -> dict[tuple[str, int], lb_gateway.Sample]:
    """wrk on every warm URL, interleaved: -t2 -c32, then -t1 -c1. Each platform gets its
    own token (so it strips the header as its own), Serve `token`: the same bytes."""
    auth = {t.name: [f"Authorization: Bearer {t.token or token}"] for t in targets}
    for target in targets:  # warm-up: connections, pools, caches
        lb_gateway.run_wrk([target.warm_url], 2, 32, 2, auth[target.name])
    rows = {}
    for threads, connections in ((2, 32), (1, 1)):
        for target in targets:
            rows[(target.name, connections)] = lb_gateway.run_wrk(
                [target.warm_url], threads, connections, seconds, auth[target.name])
    return rows


def report(figures: dict[str, Figures], ray_nodes: set[str]) -> None:
    cores = os.cpu_count()
    print(f"\nNOTE: a {cores}-core machine: wrk, the gateways, Ray Serve's proxy, the Ray "
          "nodes and every worker share these CPUs; one Ray cluster of a head (num_cpus=0) "
          f"and {NODES} worker nodes on it. The warm openflash (ray) workers ran on "
          f"{len(ray_nodes)} distinct Ray node(s).\n")
    print(f"{'target':18s} {'cold median s':>13s} {'cold min s':>10s} "
          f"{'c32 req/s':>9s} {'c32 p50 ms':>10s} {'c1 req/s':>8s} {'c1 p50 ms':>9s}")
    for name, f in figures.items():
        print(f"{name:18s} {statistics.median(f.cold_s):13.3f} {min(f.cold_s):10.3f} "
              f"{f.c32.rps:9.0f} {f.c32.p50_ms:10.2f} {f.c1.rps:8.0f} {f.c1.p50_ms:9.2f}")
    for name, f in figures.items():
        print(f"  {name} cold starts (s): " + ", ".join(f"{s:.3f}" for s in f.cold_s))
    serve = figures["Ray Serve"]
    ratios = {}
    for name in ("openflash (ray)", "openflash (local)"):
        f = figures[name]
        tput = f.c32.rps / serve.c32.rps
        cold = statistics.median(f.cold_s) / statistics.median(serve.cold_s)
        ratios[name] = (tput, cold)
        print(f"{name} / Ray Serve: c32 throughput {tput:.2f}x, c1 p50 "
              f"{f.c1.p50_ms / serve.c1.p50_ms:.2f}x, cold start (median) {cold:.2f}x")
    tput, cold = ratios["openflash (ray)"]
    checks = [
        (f"openflash-on-Ray c32 throughput >= {TARGETS['throughput_over_serve_c32']:g}x Ray "
         f"Serve ({tput:.2f}x)", tput >= TARGETS["throughput_over_serve_c32"]),
        (f"openflash-on-Ray cold start <= 1/3 of Ray Serve's ({cold:.2f}x)",
         cold <= TARGETS["cold_start_over_serve"]),
    ]
    for name, ok in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")


def run(seconds: float, rounds: int) -> None:
    """Cluster, Serve and both platforms up; measure; all of it down whatever happens
    (platforms first, then Serve's driver, then the cluster)."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(ray_cluster())
        print(f"Ray cluster at {cluster.address} up after {time.monotonic() - started:.0f} s",
              flush=True)
        serve = stack.enter_context(ray_serve(cluster.address))
        on_ray = stack.enter_context(openflash("ray", cluster.address))
        local = stack.enter_context(openflash("local", None))
        targets = [on_ray, local, serve]
        print(f"all three deployed after {time.monotonic() - started:.0f} s", flush=True)
        for target in targets:
            if lb_gateway.get_status(target.warm_url, {}) != 200:
                raise lb_gateway.BenchError(f"{target.name} does not answer 200 at "
                                            f"{target.warm_url}")
        colds = cold_starts(targets, rounds)
        print(f"cold starts done after {time.monotonic() - started:.0f} s", flush=True)
        rows = throughput(targets, seconds, on_ray.token)
        print(f"throughput done after {time.monotonic() - started:.0f} s", flush=True)
        nodes = on_ray.warm_nodes()
    report({t.name: Figures(colds[t.name], rows[(t.name, 32)], rows[(t.name, 1)])
            for t in targets}, nodes)
    print(f"total {time.monotonic() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="cold-start rounds (median)")
    options = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("missing wrk: install with `apt-get install wrk`")
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        sys.exit("missing Ray Serve: pip install 'ray[serve]'")
    os.environ.pop("FLASH_API_KEY", None)  # deployed endpoints then take requests without auth
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from runpod_flash.control import PlatformError
    from runpod_flash.deploy import DeployError

    try:
        run(options.seconds, options.rounds)
    except (lb_gateway.BenchError, PlatformError, DeployError) as exc:
        sys.exit(f"broken: {exc}")


if __name__ == "__main__":
    main()
