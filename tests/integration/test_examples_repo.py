"""A repository of numbered example projects, deployed from its root, as users bring one.

Its mixed-workers pipeline is a load-balanced route awaiting three `Live*` functions of
other endpoints: deployed, every step must run on the deployment's own endpoints, never on
live endpoints made for the occasion. Its classifier is a class worker behind a queue.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import flash, platform_in, platform_status, run_python, wait_for, worker_pids

PROJECT = Path(__file__).parent / "projects" / "examples_repo"
PIPELINE_STEPS = ("01_03_cpu", "01_03_gpu")
PIPELINE_STEP_IDS = ["01-03-cpu", "01-03-gpu"]  # production endpoints: the resource names


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("examples") / "examples_repo"
    shutil.copytree(PROJECT, target)
    return target


@pytest.fixture(scope="module")
def deployed(repo: Path) -> Iterator[dict[str, str]]:
    """The whole repository deployed from its root: {endpoint name: URL}."""
    result = flash("deploy", str(repo), "--json")
    assert result.returncode == 0, result.stderr
    yield {r["name"]: r["url"] for r in json.loads(result.stdout)}
    flash("undeploy", "--all", "--yes")


def call(method: str, url: str, body: Any = None) -> Any:
    """One request with the platform token, from a fresh interpreter (as a client would)."""
    platform = platform_in(None)
    assert platform is not None
    code = (
        "import json, sys\n"
        "from runpod_flash.http.blocking import request\n"
        f"status, data = request({method!r}, {url!r}, {json.dumps(body).encode()!r}, "
        f"{{'Authorization': 'Bearer {platform.token}', 'Content-Type': 'application/json'}}, 60)\n"
        "print(json.dumps({'status': status, 'body': json.loads(data)}))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_example_of_the_repository_is_deployed(deployed: dict[str, str]) -> None:
    assert set(deployed) == {"01_01_hello", "01_03_cpu", "01_03_gpu", "01_03_pipeline",
                             "02_01_classifier"}
    hello = call("POST", deployed["01_01_hello"] + "/runsync",
                 {"input": {"payload": {"name": "Ann"}}})
    assert hello["body"]["output"] == {"message": "Hello, Ann!"}


def test_the_pipeline_route_calls_the_deployed_endpoints_of_its_steps(
    deployed: dict[str, str],
) -> None:
    answer = call("POST", deployed["01_03_pipeline"] + "/classify",
                  {"text": "I  LOVE this great thing"})
    assert answer["status"] == 200
    assert answer["body"] == {"label": "positive", "metadata": {"word_count": 5},
                              "steps": PIPELINE_STEP_IDS, "stage": None}
    endpoints = platform_status()["endpoints"]
    live_steps = [e for e in endpoints if e["kind"] == "live" and e["name"] in PIPELINE_STEPS]
    assert live_steps == []  # the deployment's own endpoints ran every step
    step_jobs = [e for e in endpoints if e["name"] in PIPELINE_STEPS]
    assert all(e["kind"] == "deployed" for e in step_jobs) and len(step_jobs) == 2


def test_the_class_worker_keeps_its_instance_between_jobs(deployed: dict[str, str]) -> None:
    url = deployed["02_01_classifier"] + "/runsync"
    first = call("POST", url, {"input": {"method": "predict", "text": "a rather long text"}})
    second = call("POST", url, {"input": {"method": "predict", "text": "hi"}})
    assert first["body"]["output"]["label"] == "long"
    assert second["body"]["output"]["label"] == "short"
    assert second["body"]["output"]["calls"] == first["body"]["output"]["calls"] + 1
    assert second["body"]["output"]["loads"] == 1
    unknown = call("POST", url, {"input": {"method": "predictt", "text": "hi"}})
    assert unknown["body"]["status"] == "FAILED"
    assert "has no public method 'predictt'" in unknown["body"]["error"]


def test_a_script_handle_on_the_deployed_class_keeps_its_own_instance(
    deployed: dict[str, str], repo: Path,
) -> None:
    script = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(repo / '02_ml_inference' / '01_classifier')!r})\n"
        "from classifier_worker import Classifier\n"
        "async def main():\n"
        "    strict, loose = Classifier(threshold=2.0), Classifier(threshold=0.0)\n"
        "    a = await strict.predict('some text')\n"
        "    b = await strict.predict(text='more text')\n"
        "    c = await loose.predict('x')\n"
        "    print(a['label'], b['calls'] - a['calls'], c['label'], c['calls'])\n"
        "asyncio.run(main())\n"
    )
    result = run_python(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["short", "1", "long", "1"]


def test_a_deployed_class_instance_is_created_again_after_its_worker_dies(
    deployed: dict[str, str], repo: Path,
) -> None:
    """The handle's next call reaches a new instance on a new worker, and says so."""
    script = (
        "import asyncio, os, signal, sys, time\n"
        f"sys.path.insert(0, {str(repo / '02_ml_inference' / '01_classifier')!r})\n"
        "from classifier_worker import Classifier\n"
        "async def main():\n"
        "    model = Classifier()\n"
        "    await model.predict('one')\n"
        "    print('PID', (await model.predict('two'))['calls'], flush=True)\n"
        "    sys.stdin.readline()  # the test kills the worker, then lets us go on\n"
        "    print('AFTER', (await model.predict('three'))['calls'], flush=True)\n"
        "asyncio.run(main())\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=os.environ.copy())
    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().split() == ["PID", "2"]
        pids = worker_pids(platform_status(), "02_01_classifier")
        assert pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not set(pids) & set(worker_pids(platform_status(),
                                                         "02_01_classifier")), timeout=30)
        process.stdin.write("\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert out.split() == ["AFTER", "1"], err
    assert "was created again on worker" in err
