"""`dependencies=[...]` and `system_dependencies=[...]` through real calls."""

from __future__ import annotations

import importlib.util
import os

import pytest

from runpod_flash import CpuLiveLoadBalancer, remote
from runpod_flash.stubs.live import ProvisioningError

api = CpuLiveLoadBalancer(name="deps")


@remote(api, method="GET", path="/table", dependencies=["tabulate==0.9.0"])
def render_table() -> tuple[str, str]:
    import tabulate

    return tabulate.tabulate([[1, 2]], headers=["a", "b"]), tabulate.__file__


@remote(api, method="GET", path="/missing", dependencies=["flash-no-such-package-zzz==1.0"])
def needs_missing_package() -> None:
    return None


@remote(api, method="GET", path="/sys", system_dependencies=["flash-no-such-syspkg-zzz"])
def needs_missing_tool() -> None:
    return None


def test_dependency_installs_in_its_own_cached_environment(
    capfd: pytest.CaptureFixture[str],
) -> None:
    table, module_file = render_table()
    assert "a    b" in table.splitlines()[0]
    assert module_file.startswith(os.path.join(os.environ["FLASH_HOME"], "envs"))
    assert importlib.util.find_spec("tabulate") is None, "the caller's environment was modified"
    assert "[flash] deps:" in capfd.readouterr().err  # build progress was shown


def test_uninstallable_dependency_is_a_clear_error_naming_it() -> None:
    with pytest.raises(ProvisioningError, match="flash-no-such-package-zzz"):
        needs_missing_package()


def test_missing_system_dependency_is_a_clear_error_naming_it() -> None:
    with pytest.raises(ProvisioningError, match="flash-no-such-syspkg-zzz"):
        needs_missing_tool()
