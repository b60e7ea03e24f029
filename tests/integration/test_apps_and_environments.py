"""Apps and environments: one project deployed into `production` and `staging` side by side.

Each environment has its own endpoints, URLs, workers and flash.toml overrides; the
pipeline deployed into an environment calls only that environment's endpoints.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import flash, platform_in, platform_status, run_python

PROJECT = Path(__file__).parent / "projects" / "examples_repo"
APP = "shop-envs"
SETTINGS = f"""
project_name = "{APP}"

[endpoints.01_03_pipeline]
env = {{ STAGE = "every environment" }}

[environments.staging.endpoints.01_03_pipeline]
workersMax = 2
env = {{ STAGE = "staging" }}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("envs") / "shop"
    shutil.copytree(PROJECT, target)
    (target / "flash.toml").write_text(SETTINGS)
    return target


def deploy(repo: Path, *args: str) -> dict[str, dict[str, Any]]:
    result = flash("deploy", str(repo), "--json", *args)
    assert result.returncode == 0, result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)}


@pytest.fixture(scope="module")
def deployed(repo: Path) -> Iterator[dict[str, dict[str, dict[str, Any]]]]:
    """The project in `production` (the default for a new app) and in `staging`."""
    production = deploy(repo)
    staging = deploy(repo, "--env", "staging")
    yield {"production": production, "staging": staging}
    flash("app", "delete", APP, "--force")


def classify(path: str) -> dict[str, Any]:
    platform = platform_in(None)
    assert platform is not None
    code = (
        "import json\n"
        "from runpod_flash.http.blocking import request\n"
        f"status, data = request('POST', {platform.url + path + '/classify'!r}, "
        "json.dumps({'text': 'good stuff'}).encode(), "
        f"{{'Authorization': 'Bearer {platform.token}', 'Content-Type': 'application/json'}}, "
        "60)\n"
        "print(json.dumps({'status': status, 'body': json.loads(data)}))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["status"] == 200, answer
    return answer["body"]  # type: ignore[no-any-return]


def test_each_environment_has_its_own_endpoints_and_urls(deployed: dict[str, Any]) -> None:
    production, staging = deployed["production"], deployed["staging"]
    assert production["01_03_pipeline"]["path"] == "/ep/01-03-pipeline"
    assert staging["01_03_pipeline"]["path"] == "/ep/01-03-pipeline--staging"
    endpoints = {e["id"]: e for e in platform_status()["endpoints"]}
    for name in production:
        ours = endpoints[production[name]["id"]], endpoints[staging[name]["id"]]
        assert [(e["app"], e["environment"]) for e in ours] == [
            (APP, "production"), (APP, "staging")]


def test_the_pipeline_calls_only_its_own_environment(deployed: dict[str, Any]) -> None:
    production = classify(deployed["production"]["01_03_pipeline"]["path"])
    staging = classify(deployed["staging"]["01_03_pipeline"]["path"])
    assert production["steps"] == ["01-03-cpu", "01-03-gpu"]
    assert staging["steps"] == ["01-03-cpu--staging", "01-03-gpu--staging"]
    assert production["label"] == staging["label"] == "positive"


def test_overrides_apply_per_environment(deployed: dict[str, Any]) -> None:
    assert classify(deployed["production"]["01_03_pipeline"]["path"])["stage"] == \
        "every environment"
    assert classify(deployed["staging"]["01_03_pipeline"]["path"])["stage"] == "staging"
    endpoints = {e["id"]: e for e in platform_status()["endpoints"]}
    assert endpoints["01-03-pipeline"]["workersMax"] == 1
    assert endpoints["01-03-pipeline--staging"]["workersMax"] == 2


def test_env_and_app_commands_show_the_environments(
    deployed: dict[str, Any], repo: Path
) -> None:
    listed = flash("env", "list", "--json", cwd=repo)  # the app is the project's name
    assert listed.returncode == 0, listed.stderr
    environments = {e["name"]: e for e in json.loads(listed.stdout)["environments"]}
    assert set(environments) == {"production", "staging"}
    assert len(environments["staging"]["endpoints"]) == 5
    got = flash("env", "get", "staging", "--app", APP)
    assert got.returncode == 0 and "01-03-pipeline--staging" in got.stdout.replace("\n", "")
    apps = json.loads(flash("app", "list", "--json").stdout)["apps"]
    assert APP in [app["name"] for app in apps]


def test_a_deploy_without_env_when_several_exist_names_them(
    deployed: dict[str, Any], repo: Path
) -> None:
    result = flash("deploy", str(repo))
    assert result.returncode == 1
    assert "Multiple environments found: production, staging" in result.stderr
    assert "--env" in result.stderr


def test_preview_shows_what_would_change_and_changes_nothing(
    deployed: dict[str, Any], repo: Path
) -> None:
    before = {e["id"]: e["version"] for e in platform_status()["endpoints"]}
    (repo / "flash.toml").write_text(SETTINGS.replace("workersMax = 2", "workersMax = 3"))
    try:
        result = flash("deploy", str(repo), "--env", "staging", "--preview", "--json")
        assert result.returncode == 0, result.stderr
        changes = {c["name"]: c for c in json.loads(result.stdout)["changes"]}
        assert changes["01_03_pipeline"]["action"] == "update"
        assert "workersMax" in changes["01_03_pipeline"]["changed"]
        # flash.toml travels in the artifact: the others' code changed, not their settings
        assert changes["01_03_cpu"]["changed"] == ["code"]

        fresh = flash("deploy", str(repo), "--env", "qa", "--preview", "--json")
        assert {c["action"] for c in json.loads(fresh.stdout)["changes"]} == {"create"}
    finally:
        (repo / "flash.toml").write_text(SETTINGS)
    same = flash("deploy", str(repo), "--env", "staging", "--preview", "--json")
    assert {c["action"] for c in json.loads(same.stdout)["changes"]} == {"unchanged"}
    assert {e["id"]: e["version"] for e in platform_status()["endpoints"]} == before
    environments = json.loads(flash("env", "list", "--json", "--app", APP).stdout)
    assert "qa" not in [e["name"] for e in environments["environments"]]


def test_deploy_new_and_send_then_delete_the_environment(
    deployed: dict[str, Any], repo: Path
) -> None:
    created = flash("deploy", "new", "dev", cwd=repo)
    assert created.returncode == 0, created.stderr
    sent = flash("deploy", "send", "dev", "--endpoint", "01_01_hello", "--json", cwd=repo)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)[0]["path"] == "/v2/01-01-hello--dev"
    refused = flash("env", "delete", "dev", "--app", APP, input="n\n")
    assert refused.returncode == 1 and "undeploys 1 endpoint(s): 01_01_hello" in refused.stdout
    assert "01-01-hello--dev" in {e["id"] for e in platform_status()["endpoints"]}
    deleted = flash("env", "delete", "dev", "--app", APP, "--force")
    assert deleted.returncode == 0, deleted.stderr
    assert "01-01-hello--dev" not in {e["id"] for e in platform_status()["endpoints"]}
    missing = flash("env", "get", "dev", "--app", APP)
    assert missing.returncode == 1 and "environment 'dev' not found" in missing.stderr
