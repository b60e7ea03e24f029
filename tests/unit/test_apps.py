"""Apps and environments: the registry's rules, and per-environment flash.toml overrides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runpod_flash.build import BuildError
from runpod_flash.build.settings import apply_overrides, load_settings
from runpod_flash.control import deployed_endpoint_id
from runpod_flash.platform.apps import AppError, Apps
from runpod_flash.platform.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "state.db")
    yield store
    store.close()


def test_a_new_app_deploys_to_production_and_one_environment_is_used_alone(
    store: Store,
) -> None:
    apps = Apps(store)
    assert apps.choose_environment("shop", None) == "production"
    assert apps.environments("shop") == ["production"]
    assert apps.choose_environment("shop", None) == "production"


def test_a_named_environment_is_created_on_first_use_and_then_one_must_be_named(
    store: Store,
) -> None:
    apps = Apps(store)
    assert apps.choose_environment("shop", "staging") == "staging"
    assert apps.choose_environment("shop", None) == "staging"  # the only one
    apps.create_environment("shop", "production")
    with pytest.raises(AppError, match="Multiple environments found: production, staging"):
        apps.choose_environment("shop", None)


def test_a_preview_creates_nothing(store: Store) -> None:
    apps = Apps(store)
    assert apps.choose_environment("shop", "qa", create=False) == "qa"
    assert apps.choose_environment("other", None, create=False) == "production"
    assert apps.names() == []


def test_apps_and_environments_survive_a_restart_and_deletion_is_final(store: Store) -> None:
    Apps(store).create_environment("shop", "dev")
    again = Apps(store)
    assert again.names() == ["shop"] and again.environments("shop") == ["dev"]
    again.forget_environment("shop", "dev")
    with pytest.raises(AppError, match="environment 'dev' not found"):
        again.forget_environment("shop", "dev")
    again.forget_app("shop")
    with pytest.raises(AppError, match="app 'shop' not found") as caught:
        Apps(store).environments("shop")
    assert caught.value.status == 404


def test_names_are_checked(store: Store) -> None:
    with pytest.raises(AppError, match="invalid environment name"):
        Apps(store).choose_environment("shop", "../prod")


def test_endpoint_ids_keep_production_urls_and_suffix_other_environments() -> None:
    assert deployed_endpoint_id("User Service", "production") == "user-service"
    assert deployed_endpoint_id("User Service", "staging") == "user-service--staging"


def test_environment_overrides_apply_after_the_shared_ones(tmp_path: Path) -> None:
    (tmp_path / "flash.toml").write_text(
        "[endpoints.api]\nworkersMax = 2\nenv = { A = '1', B = '1' }\n"
        "[environments.staging.endpoints.api]\nworkersMax = 5\nenv = { B = '2' }\n"
    )
    settings = load_settings(tmp_path)

    def spec_for(environment: str | None) -> dict:
        specs = {"api": {"workersMin": 0, "workersMax": 1, "env": {}}}
        apply_overrides(specs, settings, environment)
        return specs["api"]

    assert spec_for("staging") == {"workersMin": 0, "workersMax": 5, "env": {"A": "1", "B": "2"}}
    assert spec_for("production")["workersMax"] == 2
    assert spec_for(None)["env"] == {"A": "1", "B": "1"}


def test_environment_override_mistakes_name_the_table(tmp_path: Path) -> None:
    (tmp_path / "flash.toml").write_text(
        "[environments.staging.endpoints.api]\nworkersMaxx = 5\n")
    with pytest.raises(BuildError, match=r'\[environments\."staging"\.endpoints\."api"\]'):
        load_settings(tmp_path)
    (tmp_path / "flash.toml").write_text("[environments.staging.endpoints.nope]\n")
    with pytest.raises(BuildError, match="matches no resource"):
        apply_overrides({"api": {"workersMin": 0, "workersMax": 1}}, load_settings(tmp_path),
                        "staging")
