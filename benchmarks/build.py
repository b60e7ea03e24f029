"""`flash build` time on a realistic project: 200 modules, 50 of them with @remote functions.

Each decorated module declares a resource and two functions (one LB route pair or one QB
pair); the others are plain helper modules that the decorated ones import. Prints the min and
median of 5 builds and PASS/FAIL against the 2 s budget.

    python benchmarks/build.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

from runpod_flash.build import build_project

BUDGET_S = 2.0
MODULES = 200
DECORATED = 50

HELPER = textwrap.dedent('''
    """Helper module {i}."""

    import json

    FACTOR = {i}


    def scale_{i}(values):
        return [v * FACTOR for v in values]


    def describe_{i}(value):
        return json.dumps({{"module": {i}, "value": value}})
''')

LB_MODULE = textwrap.dedent('''
    """Load-balanced service {i}."""

    from runpod_flash import LoadBalancerSlsResource, remote

    from helpers.helper_{i} import scale_{i}

    api_{i} = LoadBalancerSlsResource(name="service-{i}", workersMax=3)


    @remote(api_{i}, method="POST", path="/items/{{item_id}}")
    async def update_item_{i}(item_id: int, values: list):
        return {{"id": item_id, "values": scale_{i}(values)}}


    @remote(api_{i}, method="GET", path="/health")
    def health_{i}():
        return {{"status": "ok"}}


    if __name__ == "__main__":
        print(health_{i}())
''')

QB_MODULE = textwrap.dedent('''
    """Queue-based worker {i}."""

    from runpod_flash import CpuLiveServerless, remote

    from helpers.helper_{i} import describe_{i}

    worker_{i} = CpuLiveServerless(name="worker-{i}")


    @remote(worker_{i}, dependencies=["numpy"])
    def crunch_{i}(value):
        return describe_{i}(value)


    @remote(worker_{i})
    async def report_{i}(value):
        return crunch_{i}(value)
''')


def make_project(root: Path) -> None:
    """200 modules: helpers/helper_0..149 plus 50 decorated modules (LB and QB alternating)."""
    (root / "helpers").mkdir()
    (root / "services").mkdir()
    for i in range(MODULES - DECORATED):
        (root / "helpers" / f"helper_{i}.py").write_text(HELPER.format(i=i))
    for i in range(DECORATED):
        template = LB_MODULE if i % 2 == 0 else QB_MODULE
        (root / "services" / f"service_{i}.py").write_text(template.format(i=i))
    (root / "requirements.txt").write_text("requests\n# comment\n")
    (root / ".gitignore").write_text("data/\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory(prefix="flash-build-bench-") as tmp:
        root = Path(tmp)
        make_project(root)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            result = build_project(root)
            times.append(time.perf_counter() - start)
        functions = len(result.manifest["function_registry"])
        print(f"project: {MODULES} modules, {DECORATED} decorated, {functions} functions, "
              f"{result.files} files, artifact {result.size_bytes / 1024:.1f} KiB")
        best, median = min(times), statistics.median(times)
        print(f"build_project x{runs}: min {best:.3f} s, median {median:.3f} s")
        print(f"{'PASS' if median < BUDGET_S else 'FAIL'} (budget {BUDGET_S:.0f} s)")


if __name__ == "__main__":
    main()
