"""`flash build` on real projects: each build imports the project in a child interpreter."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import tarfile
import textwrap
from pathlib import Path

import pytest

from runpod_flash.build import BuildError, BuildResult, build_project
from runpod_flash.build.artifact import ArtifactError, extract_artifact
from runpod_flash.build.guarded_import import import_project
from runpod_flash.build.scanner import scan_project

# The seed document's Complete Working Example, kept once in the deploy test project.
USER_SERVICE = (
    Path(__file__).parents[1] / "integration" / "projects" / "user_service" / "user_service.py"
).read_text()

SEED_ROUTES = {
    "GET /health": "health_check",
    "GET /users": "list_users",
    "POST /users": "create_user",
    "GET /users/{user_id}": "get_user",
    "PUT /users/{user_id}": "update_user",
    "DELETE /users/{user_id}": "delete_user",
}

LB_HEADER = """\
from runpod_flash import LoadBalancerSlsResource, remote

api = LoadBalancerSlsResource(name="api")
"""


def project(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> source, dedented) under `root`."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def build_error(root: Path, files: dict[str, str]) -> str:
    with pytest.raises(BuildError) as info:
        build_project(project(root, files))
    return str(info.value)


def artifact_names(result: BuildResult) -> set[str]:
    with tarfile.open(result.artifact_path, "r:gz") as tar:
        return set(tar.getnames())


# --- the seed's complete working example -------------------------------------------------------


def test_seed_example_builds_manifest_and_artifact(tmp_path: Path) -> None:
    messages: list[str] = []
    result = build_project(project(tmp_path, {"user_service.py": USER_SERVICE}), messages.append)
    manifest = result.manifest

    assert manifest["version"] == "1.0"
    assert manifest["generated_at"].endswith("Z")
    assert manifest["project_name"] == tmp_path.name
    assert manifest["routes"] == {"user-service": SEED_ROUTES}
    assert manifest["function_registry"] == {fn: "user-service" for fn in SEED_ROUTES.values()}
    resource = manifest["resources"]["user-service"]
    assert resource["resource_type"] == "LoadBalancerSlsResource"
    assert (resource["file_path"], resource["module_path"]) == ("user_service.py", "user_service")
    assert resource["config_variable"] == "api"
    assert resource["is_load_balanced"] is True
    assert resource["is_live_resource"] is False
    assert resource["makes_remote_calls"] is False
    assert resource["functions"][2] == {
        "name": "create_user", "module": "user_service", "is_async": True, "is_class": False,
        "http_method": "POST", "http_path": "/users",
    }
    assert [f["is_async"] for f in resource["functions"]] == [False, False, True, False, True, True]
    spec = resource["spec"]
    assert (spec["name"], spec["type"], spec["kind"]) == ("user-service", "LB", "deployed")
    assert (spec["workersMin"], spec["workersMax"], spec["scalerType"]) == (0, 1, "REQUEST_COUNT")

    assert result.manifest_path == tmp_path / ".flash" / "flash_manifest.json"
    assert json.loads(result.manifest_path.read_text()) == manifest
    assert result.artifact_path == tmp_path / ".flash" / "artifact.tar.gz"
    digest = hashlib.sha256(result.artifact_path.read_bytes()).hexdigest()
    assert result.artifact_sha256 == digest
    assert result.size_bytes == result.artifact_path.stat().st_size
    assert result.files == 1
    assert artifact_names(result) == {"user_service.py", "flash_manifest.json"}
    assert messages, "progress was never reported"


def test_artifact_manifest_is_the_manifest_without_generated_at(tmp_path: Path) -> None:
    result = build_project(project(tmp_path, {"user_service.py": USER_SERVICE}))
    with tarfile.open(result.artifact_path, "r:gz") as tar:
        inner = json.load(tar.extractfile("flash_manifest.json"))  # type: ignore[arg-type]
    expected = {k: v for k, v in result.manifest.items() if k != "generated_at"}
    assert inner == expected


def test_main_block_never_runs_and_module_prints_are_harmless(tmp_path: Path) -> None:
    result = build_project(project(tmp_path, {"svc.py": LB_HEADER + """
import os
print("hello from module level")
assert os.environ.get("FLASH_BUILD") == "1", "the build imports with FLASH_BUILD=1"

@remote(api, method="POST", path="/run")
def run(x: int):
    return x

if __name__ == "__main__":
    raise SystemExit("must not run")
"""}))
    assert result.manifest["routes"] == {"api": {"POST /run": "run"}}


def test_modules_that_import_each_other(tmp_path: Path) -> None:
    result = build_project(project(tmp_path, {
        "config.py": """
            from runpod_flash import CpuLiveLoadBalancer, LiveServerless
            gateway = CpuLiveLoadBalancer(name="gateway", workersMax=2)
            gpu = LiveServerless(name="gpu-worker")
        """,
        "pkg/__init__.py": "",
        "pkg/helpers.py": "def double(x):\n    return 2 * x\n",
        "pkg/routes.py": """
            from runpod_flash import remote
            from config import gateway
            from .helpers import double

            @remote(gateway, method="post", path="/double")
            async def double_it(x: int):
                return double(x)
        """,
        "workers.py": """
            import config
            from runpod_flash import remote

            @remote(config.gpu, dependencies=["torch", "numpy"], system_dependencies=["ffmpeg"])
            def embed(text: str):
                return len(text)

            @remote(config.gpu)
            def embed_twice(text: str):
                return embed(text) + embed(text)
        """,
        "requirements.txt": "# pinned\nrequests==2.32.0\n\nnumpy\n",
    }))
    manifest = result.manifest
    assert manifest["routes"] == {"gateway": {"POST /double": "double_it"}}
    assert manifest["function_registry"] == {
        "double_it": "gateway", "embed": "gpu-worker", "embed_twice": "gpu-worker",
    }
    gateway = manifest["resources"]["gateway"]
    assert gateway["module_path"] == "pkg.routes"
    assert gateway["resource_type"] == "CpuLiveLoadBalancer"
    assert (gateway["is_live_resource"], gateway["spec"]["workersMax"]) == (True, 2)
    gpu = manifest["resources"]["gpu-worker"]
    assert gpu["config_variable"] == "config.gpu"
    assert gpu["is_load_balanced"] is False
    assert gpu["makes_remote_calls"] is True
    assert gateway["makes_remote_calls"] is False
    assert gpu["dependencies"] == ["numpy", "requests==2.32.0", "torch"]
    assert gpu["system_dependencies"] == ["ffmpeg"]
    assert gpu["functions"][0] == {
        "name": "embed", "module": "workers", "is_async": False, "is_class": False,
    }
    assert "gpu-worker" not in manifest["routes"]


def test_cpu_load_balancer_sls_resource_is_load_balanced(tmp_path: Path) -> None:
    message = build_error(tmp_path, {"svc.py": """
        from runpod_flash import CpuLoadBalancerSlsResource, remote
        api = CpuLoadBalancerSlsResource(name="cpu-api")

        @remote(api)
        def f():
            return 1
    """})
    assert message.startswith("svc.py:5: LoadBalancerSlsResource requires both 'method' and")


def test_attribute_decorators_and_inline_configs(tmp_path: Path) -> None:
    root = project(tmp_path, {"svc.py": """
        import runpod_flash as flash

        api = flash.LiveLoadBalancer(name="api")

        @flash.remote(api, method="GET", path="/a")
        def a():
            return 1

        @flash.remote(flash.CpuLiveServerless(name="inline-jobs"))
        async def b():
            return 2
    """})
    manifest = build_project(root).manifest
    assert manifest["function_registry"] == {"a": "api", "b": "inline-jobs"}
    assert manifest["resources"]["inline-jobs"]["config_variable"] is None
    assert manifest["resources"]["inline-jobs"]["resource_type"] == "CpuLiveServerless"

    (root / "svc.py").write_text(
        "import runpod_flash as flash\n\n"
        "@flash.remote(flash.LiveLoadBalancer(name='x'), method='GET')\n"
        "def c():\n    return 3\n"
    )
    with pytest.raises(BuildError, match=r"^svc.py:3: LoadBalancerSlsResource requires both"):
        build_project(root)


def test_a_class_is_listed_with_its_methods_never_dropped(tmp_path: Path) -> None:
    root = project(tmp_path, {"models.py": """
        from runpod_flash import CpuServerlessEndpoint, remote

        gpu = CpuServerlessEndpoint(name="models")

        @remote(gpu, dependencies=["six"])
        class Model:
            def __init__(self, size: int = 1):
                self.size = size

            async def predict(self, text: str, top: int = 3) -> dict:
                \"\"\"Classify text.\"\"\"
                return {}

            def _private(self):
                pass
    """})
    manifest = build_project(root).manifest
    entry = manifest["resources"]["models"]
    assert entry["functions"] == [{
        "name": "Model", "module": "models", "is_async": False, "is_class": True,
        "methods": [{"name": "predict", "is_async": True, "params": ["text", "top"],
                     "doc": "Classify text."}],
    }]
    assert entry["dependencies"] == ["six"]
    assert manifest["function_registry"] == {"Model": "models"}


def test_a_class_on_a_load_balanced_resource_fails_the_build_at_its_line(
    tmp_path: Path,
) -> None:
    message = build_error(tmp_path, {"svc.py": LB_HEADER + textwrap.dedent("""
        @remote(api)
        class Model:
            def predict(self):
                return 1
    """)})
    assert message.startswith("svc.py:5: @remote on class 'Model': classes run on queue-based")


def test_method_path_on_queue_resource_is_a_warning(tmp_path: Path) -> None:
    messages: list[str] = []
    result = build_project(project(tmp_path, {"svc.py": """
        from runpod_flash import ServerlessEndpoint, remote
        jobs = ServerlessEndpoint(name="jobs")

        @remote(jobs, method="POST", path="/ignored")
        def f():
            return 1
    """}), messages.append)
    assert result.manifest["routes"] == {}
    assert "http_method" not in result.manifest["resources"]["jobs"]["functions"][0]
    assert any("svc.py:5" in m and "ignored" in m for m in messages)


# --- validation messages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decorator", "expected"),
    [
        ('@remote(api)', "LoadBalancerSlsResource requires both 'method' and 'path'"),
        ('@remote(api, method="POST")', "Got method='POST', path=None"),
        (
            '@remote(resource_config=api, path="/x")',
            "Example: @remote(resource_config, method='POST', path='/api/process')",
        ),
        (
            '@remote(api, method="PTACH", path="/x")',
            "Invalid HTTP method 'PTACH' must be one of: GET, POST, PUT, DELETE, PATCH",
        ),
        ('@remote(api, method="GET", path="users")', "path must start with '/'. Got: 'users'"),
        ('@remote(api, method="GET", path="/ping")', "reserved paths: /ping, /execute"),
        ('@remote(api, method="POST", path="/execute")', "reserved paths: /ping, /execute"),
        (
            '@remote(api, method="GET", path="/items/{item_id}")',
            "Path parameter '{item_id}' in '/items/{item_id}' is not a parameter of handler(x)",
        ),
    ],
)
def test_route_validation_messages(tmp_path: Path, decorator: str, expected: str) -> None:
    source = LB_HEADER + f"\n\n{decorator}\ndef handler(x):\n    return x\n"
    message = build_error(tmp_path, {"api.py": source})
    assert message.startswith("api.py:6: ")
    assert expected in message
    assert "'handler'" in message or "handler(" in message


def test_route_conflict_names_both_functions_and_places(tmp_path: Path) -> None:
    message = build_error(tmp_path, {
        "a.py": LB_HEADER + '\n@remote(api, method="POST", path="/api/process")\ndef first():\n'
        "    return 1\n",
        "b.py": 'from runpod_flash import remote\nfrom a import api\n\n\n'
        '@remote(api, method="post", path="/api/process")\ndef second():\n    return 2\n',
    })
    assert "Route conflict detected: POST /api/process defined twice" in message
    assert "'first' at a.py:5" in message
    assert "'second' at b.py:5" in message


def test_duplicate_function_names_across_files(tmp_path: Path) -> None:
    message = build_error(tmp_path, {
        "a.py": LB_HEADER + '\n@remote(api, method="GET", path="/a")\ndef f():\n    return 1\n',
        "b.py": LB_HEADER + '\n@remote(api, method="GET", path="/b")\ndef f():\n    return 2\n',
    })
    assert message.startswith("b.py:5: Duplicate function name 'f'")
    assert "a.py:5" in message


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = build_error(tmp_path, {
        "ok.py": LB_HEADER,
        "pkg/bad.py": "x = 1\n\ndef broken(:\n    pass\n",
    })
    assert message.startswith("pkg/bad.py:3: syntax error:")


def test_no_python_files_is_not_a_flash_project(tmp_path: Path) -> None:
    message = build_error(tmp_path, {"README.md": "hello", ".venv/lib/x.py": "x = 1"})
    assert "not a Flash project" in message
    assert "flash init" in message


def test_no_remote_functions(tmp_path: Path) -> None:
    message = build_error(tmp_path, {"main.py": LB_HEADER + "\ndef plain():\n    return 1\n"})
    assert "No @remote functions found" in message


def test_one_resource_name_with_two_configurations(tmp_path: Path) -> None:
    message = build_error(tmp_path, {
        "a.py": LB_HEADER + '\n@remote(api, method="GET", path="/a")\ndef fa():\n    return 1\n',
        "b.py": 'from runpod_flash import LoadBalancerSlsResource, remote\n'
        'api = LoadBalancerSlsResource(name="api", workersMax=4)\n\n'
        '@remote(api, method="GET", path="/b")\ndef fb():\n    return 2\n',
    })
    assert message.startswith("b.py:4: resource name 'api' is configured twice")
    assert "'fa' at a.py:5" in message


def test_decorated_name_rebound_after_decoration(tmp_path: Path) -> None:
    message = build_error(tmp_path, {"svc.py": LB_HEADER + """
@remote(api, method="GET", path="/f")
def f():
    return 1

f = None
"""})
    assert message.startswith("svc.py:5: after import, module 'svc' has no @remote function")


def test_validation_rules_match_the_decorator() -> None:
    from runpod_flash.build import validate

    decorator_module = importlib.import_module("runpod_flash.decorator")
    assert validate.HTTP_METHODS == decorator_module.HTTP_METHODS
    assert validate.RESERVED_PATHS == decorator_module.RESERVED_PATHS
    assert validate.PATH_PARAMETER.pattern == decorator_module._PATH_PARAM.pattern


# --- guarded import ----------------------------------------------------------------------------


def test_missing_package_cannot_import_module(tmp_path: Path) -> None:
    message = build_error(tmp_path, {"user_service.py": LB_HEADER + """
import package_that_is_not_installed

@remote(api, method="GET", path="/f")
def f():
    return 1
"""})
    first_line = message.splitlines()[0]
    assert first_line.startswith("Cannot import module 'user_service' (user_service.py:5)")
    assert "No module named 'package_that_is_not_installed'" in first_line
    assert "install 'package_that_is_not_installed'" in message


def test_import_error_points_at_the_failing_project_file(tmp_path: Path) -> None:
    message = build_error(tmp_path, {
        "helpers.py": "VALUE = 1\nraise RuntimeError('broken helper')\n",
        "svc.py": LB_HEADER + """
import helpers

@remote(api, method="GET", path="/f")
def f():
    return helpers.VALUE
""",
    })
    assert message.startswith("Cannot import module 'svc' (helpers.py:2): RuntimeError: broken")


def test_exit_at_import_time_is_reported(tmp_path: Path) -> None:
    message = build_error(tmp_path, {"svc.py": LB_HEADER + """
import sys
sys.exit("no platform here")

@remote(api, method="GET", path="/f")
def f():
    return 1
"""})
    assert message.startswith("Cannot import module 'svc' (svc.py:6): SystemExit: no platform")


def test_import_timeout_names_the_module(tmp_path: Path) -> None:
    root = project(tmp_path, {"slow.py": LB_HEADER + """
import time
time.sleep(30)

@remote(api, method="GET", path="/f")
def f():
    return 1
"""})
    scans = scan_project(root, ["slow.py"])
    functions = scans["slow"].functions
    with pytest.raises(BuildError, match=r"Importing module 'slow' did not finish within 1 s"):
        import_project(root, functions, {"slow.py"}, timeout=1)


# --- ignore rules ------------------------------------------------------------------------------


def test_ignore_rules_decide_what_is_scanned_and_packaged(tmp_path: Path) -> None:
    root = project(tmp_path, {
        "svc.py": LB_HEADER + '\n@remote(api, method="GET", path="/f")\ndef f():\n    return 1\n',
        "notes/todo.txt": "keep me",
        "secret.env": "TOKEN=1",
        "data/big.bin": "x" * 100,
        "scratch.py": "this is not python (\n",
        "build_tmp/cache.json": "{}",
        ".venv/lib/site.py": "this is not python either (\n",
        "venv/x.py": "nor this (\n",
        "__pycache__/svc.cpython-311.pyc": "junk",
        "old.tar.gz": "junk",
        ".gitignore": "# generated\ndata/\n*.env\n",
        ".flashignore": "scratch.py\nbuild_tmp/\n",
    })
    (root / "linked.py").symlink_to(root / "svc.py")
    result = build_project(root)
    assert artifact_names(result) == {
        "svc.py", "notes/todo.txt", ".gitignore", ".flashignore", "flash_manifest.json",
    }
    assert result.files == 4


def test_same_project_gives_the_same_sha256(tmp_path: Path) -> None:
    root = project(tmp_path, {"user_service.py": USER_SERVICE, "lib/util.py": "X = 1\n"})
    first = build_project(root)
    os.utime(root / "lib" / "util.py", (1_000_000, 1_000_000))
    second = build_project(root)
    assert first.artifact_sha256 == second.artifact_sha256
    (root / "lib" / "util.py").write_text("X = 2\n")
    assert build_project(root).artifact_sha256 != first.artifact_sha256


def test_oversized_artifact_is_refused_and_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runpod_flash.build import artifact

    monkeypatch.setattr(artifact, "SIZE_LIMIT_BYTES", 1024)
    root = project(tmp_path, {"user_service.py": USER_SERVICE})
    (root / "weights.bin").write_bytes(os.urandom(4096))
    with pytest.raises(BuildError, match=r"over the 0 MB limit; add large files .* \.flashignore"):
        build_project(root)
    assert sorted(p.name for p in (root / ".flash").iterdir()) == []


# --- flash.toml --------------------------------------------------------------------------------


def test_flash_toml_overrides_endpoint_settings(tmp_path: Path) -> None:
    result = build_project(project(tmp_path, {
        "svc.py": """
            from runpod_flash import LoadBalancerSlsResource, remote
            api = LoadBalancerSlsResource(name="user-service", env={"A": "1", "B": "2"})

            @remote(api, method="GET", path="/f")
            def f():
                return 1
        """,
        "flash.toml": """
            project_name = "my-app"

            [endpoints.user-service]
            workersMin = 1
            workersMax = 5
            idleTimeout = 120
            executionTimeoutMs = 30000
            env = { B = "3", C = "4" }
        """,
    }))
    assert result.manifest["project_name"] == "my-app"
    spec = result.manifest["resources"]["user-service"]["spec"]
    assert (spec["workersMin"], spec["workersMax"], spec["idleTimeout"]) == (1, 5, 120)
    assert spec["executionTimeoutMs"] == 30000
    assert spec["env"] == {"A": "1", "B": "3", "C": "4"}


SVC = LB_HEADER + '\n@remote(api, method="GET", path="/f")\ndef f():\n    return 1\n'


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[endpoints.api]\nworkerMax = 3\n", "unknown key 'workerMax'"),
        ("[endpoints.api]\nworkersMax = \"3\"\n", "workersMax must be an integer"),
        ("[endpoints.api]\nworkersMax = 0\n", "workersMax must be >= 1"),
        ("[endpoints.api]\nenv = { A = 1 }\n", "env must be a table of strings"),
        ("[endpoints.api]\nworkersMin = 3\n", "workersMin (3) cannot be greater than"),
        ("[endpoints.nope]\nworkersMax = 3\n", "[endpoints.\"nope\"] matches no resource; "),
        ("colour = 'blue'\n", "unknown key 'colour' in the top level"),
        ("[endpoints.api\n", "invalid TOML"),
    ],
)
def test_flash_toml_mistakes_are_rejected(tmp_path: Path, toml: str, expected: str) -> None:
    message = build_error(tmp_path, {"svc.py": SVC, "flash.toml": toml})
    assert message.startswith("flash.toml: ")
    assert expected in message
    if "unknown key" in expected:
        assert "allowed keys:" in message


# --- extract_artifact --------------------------------------------------------------------------


def make_archive(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    """A .tar.gz of regular files given as (name, data) and of raw TarInfo members."""
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


MANIFEST = ("flash_manifest.json", b"{}")


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def assert_nothing_extracted(dest: Path) -> None:
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == [dest.parent / "bad.tar.gz"]


def test_extract_a_built_artifact(tmp_path: Path) -> None:
    result = build_project(project(tmp_path / "proj", {
        "user_service.py": USER_SERVICE, "lib/util.py": "X = 1\n",
    }))
    dest = tmp_path / "out" / "release"
    extract_artifact(result.artifact_path, dest)
    assert (dest / "user_service.py").read_text() == textwrap.dedent(USER_SERVICE)
    assert (dest / "lib" / "util.py").read_text() == "X = 1\n"
    inner = json.loads((dest / "flash_manifest.json").read_text())
    assert inner["routes"] == {"user-service": SEED_ROUTES}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["release"]


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        (("/etc/evil", b"x"), "'/etc/evil' has an absolute path"),
        (("../evil", b"x"), "'../evil' points outside the archive"),
        (("lib/../../evil", b"x"), "points outside the archive"),
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "'link' is a link"),
        (special("hard", tarfile.LNKTYPE, "flash_manifest.json"), "'hard' is a link"),
        (special("fifo", tarfile.FIFOTYPE), "'fifo' is not a regular file or directory"),
        (special("dev", tarfile.CHRTYPE), "'dev' is not a regular file or directory"),
    ],
)
def test_extract_rejects_unsafe_members(
    tmp_path: Path, member: tarfile.TarInfo | tuple[str, bytes], expected: str
) -> None:
    archive = make_archive(tmp_path / "bad.tar.gz", [MANIFEST, ("ok.py", b"x = 1"), member])
    dest = tmp_path / "dest"
    with pytest.raises(ArtifactError, match="artifact member") as info:
        extract_artifact(archive, dest)
    assert expected in str(info.value)
    assert_nothing_extracted(dest)


def test_extract_rejects_a_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(b"this is not gzip at all")
    with pytest.raises(ArtifactError, match=r"artifact is not a valid \.tar\.gz"):
        extract_artifact(archive, tmp_path / "dest")
    assert_nothing_extracted(tmp_path / "dest")


def test_extract_rejects_a_truncated_archive(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "bad.tar.gz", [MANIFEST, ("big", os.urandom(200_000))])
    archive.write_bytes(archive.read_bytes()[:50_000])
    with pytest.raises(ArtifactError, match=r"artifact is not a valid \.tar\.gz"):
        extract_artifact(archive, tmp_path / "dest")
    assert_nothing_extracted(tmp_path / "dest")


def test_extract_stops_at_the_size_limit(tmp_path: Path) -> None:
    archive = make_archive(
        tmp_path / "bad.tar.gz", [MANIFEST, ("a", b"x" * 600), ("b", b"y" * 600)]
    )
    with pytest.raises(ArtifactError, match="larger than the 1000 byte limit when extracting 'b'"):
        extract_artifact(archive, tmp_path / "dest", max_bytes=1000)
    assert_nothing_extracted(tmp_path / "dest")
    extract_artifact(archive, tmp_path / "fits", max_bytes=1202)
    assert (tmp_path / "fits" / "b").read_bytes() == b"y" * 600


def test_extract_requires_a_manifest_at_the_root(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "bad.tar.gz", [("sub/flash_manifest.json", b"{}")])
    with pytest.raises(ArtifactError, match=r"no flash_manifest\.json at its root"):
        extract_artifact(archive, tmp_path / "dest")
    assert_nothing_extracted(tmp_path / "dest")


def test_extract_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "good.tar.gz", [MANIFEST])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not an empty folder"):
        extract_artifact(archive, dest)
    assert (dest / "keep.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    extract_artifact(archive, empty)
    assert (empty / "flash_manifest.json").read_bytes() == b"{}"
