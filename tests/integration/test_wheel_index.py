"""Sharing wheels through a real PyPI-compatible index (pypiserver on 127.0.0.1).

Also what a hostile index (a stub server on 127.0.0.1) cannot do, and that the index's
credentials show nowhere: not in output, reports, plans, manifests or state files.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import docker
import pytest

from setuptools_grocker.errors import WheelIndexError, WorkspaceError
from setuptools_grocker.registry.wheelhouse import build_tag
from tests.helpers import free_port, generate, grocker, python_project, remove_images, wait_http
from tests.stub_index import StubIndex, make_wheel, sha256


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    packages = tmp_path_factory.mktemp("pypiserver")
    port = free_port()
    server = Path(sys.executable).parent / "pypi-server"
    proc = subprocess.Popen([str(server), "run", "-i", "127.0.0.1", "-p", str(port), "-a", ".", "-P", ".",
                             str(packages)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/simple/", proc, "pypiserver")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_wheels_travel_through_the_index(client: docker.DockerClient, index: str, tmp_path: Path,
                                         run_id: str) -> None:
    prefix = f"ix{run_id[:5]}-"
    first = tmp_path / "machine-a" / "ws"
    graph = generate(first, libs=3, apps=1, levels=2, prefix=prefix)
    try:
        run = grocker("workspace", "build", str(first), "--wheel-index", index, report=tmp_path / "a.json")
        assert run.code == 0, run.err[-3000:]
        listing = urllib.request.urlopen(f"{index}/simple/{prefix}lib-00/").read().decode()
        assert f"{prefix.replace('-', '_')}lib_00-1.0.0-1" in listing  # the build tag carries the key
        # Another checkout (another machine) of the same sources: libraries come from the index.
        second = tmp_path / "machine-b" / "ws"
        shutil.copytree(first, second, ignore=shutil.ignore_patterns(".grocker"))
        remove_images(client, f"{prefix}app-00:2.0.0")
        run = grocker("workspace", "build", str(second), "--wheel-index", index, report=tmp_path / "b.json")
        assert run.code == 0, run.err[-3000:]
        by_name = {p["name"]: p for p in run.report["projects"]}
        for lib in graph["libraries"]:
            assert by_name[lib]["status"] == "cached"
            assert by_name[lib]["reason"] == "fetched from the wheel index"
            assert by_name[lib]["containers_started"] == 0
        app = by_name[f"{prefix}app-00"]
        assert app["status"] == "built"
        module = f"{prefix}app-00".replace("-", "_")
        out = client.containers.run(app["image"], ["run", "python", "-c",
                                                   f"import {module}.server as s; print(s.total())"], remove=True)
        assert int(out) == sum(graph["values"][d] for d in graph["applications"][f"{prefix}app-00"])
    finally:
        remove_images(client, f"{prefix}app-00:2.0.0")


def test_index_down_is_a_clear_error(tmp_path: Path, client: docker.DockerClient) -> None:
    root = tmp_path / "ws"
    generate(root, libs=1, apps=1, levels=1, prefix="down-")
    run = grocker("workspace", "build", str(root), "--wheel-index", f"http://127.0.0.1:{free_port()}")
    assert run.code == WheelIndexError.exit_code
    lines = [ln for ln in run.err.splitlines() if ln.startswith("grocker: error:")]
    assert len(lines) == 1 and "is unreachable" in lines[0] and "--wheel-index" in lines[0]
    assert not (root / ".grocker" / "members").exists()


# -- a hostile index ------------------------------------------------------------------------------

def small_workspace(root: Path, name: str, *, plugin: str | None = None) -> Path:
    """A workspace of one pure-Python library (fast to build)."""
    python_project(root / "libs" / name, name, modules={"__init__.py": "VALUE = 42\n"})
    (root / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["libs/*"]\n'
                                         + (f'\n[tool.grocker]\nplugins = ["{plugin}"]\n' if plugin else ""))
    return root


def member_key(root: Path, env: dict[str, str] | None = None) -> str:
    run = grocker("workspace", "plan", str(root), "--json", env=env)
    assert run.code == 0, run.err[-2000:]
    return str(json.loads(run.out)["members"][0]["key"])


def evil_files(top: Path) -> list[Path]:
    return [p for p in top.rglob("*") if "evil" in p.name]


HOSTILE = ["href-traversal", "encoded-traversal", "text-differs-from-href", "no-hash", "wrong-sha256",
           "other-project-inside"]


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_index_writes_nothing_outside_and_its_wheel_is_rejected(case: str, tmp_path: Path,
                                                                          client: docker.DockerClient) -> None:
    name = "hostile-lib"
    root = small_workspace(tmp_path / "a" / "b" / "ws", name)
    good = f"hostile_lib-1.0.0-{build_tag(member_key(root))}-py3-none-any.whl"
    wheel = make_wheel(name, "1.0.0", metadata_name="evil" if case == "other-project-inside" else None)
    # The staging directory a fetch writes into is 9 levels below tmp_path: 9 levels up is tmp_path itself.
    ups = "%2e%2e%2f" * 9
    href, fragment = {
        "href-traversal": ("../../" * 12 + "evil.whl", f"sha256={sha256(wheel)}"),
        "encoded-traversal": (f"{ups}evil-{good}", f"sha256={sha256(wheel)}"),
        "text-differs-from-href": (f"../../packages/evil-{good}", f"sha256={sha256(wheel)}"),
        "no-hash": (f"../../packages/{good}", ""),
        "wrong-sha256": (f"../../packages/{good}", f"sha256={sha256(b'another file')}"),
        "other-project-inside": (f"../../packages/{good}", f"sha256={sha256(wheel)}"),
    }[case]
    with StubIndex() as stub:
        stub.page(name, [(good, f"{href}#{fragment}" if fragment else href)])
        for path in ("/evil.whl", f"/packages/{good}", f"/packages/evil-{good}", f"/simple/{name}/{ups}evil-{good}"):
            stub.file(path, wheel)
        run = grocker("workspace", "build", str(root), "--wheel-index", stub.url, report=tmp_path / "r.json")
    assert evil_files(tmp_path) == []
    assert not list((root / ".grocker" / "wheels" / name).glob("[0-9a-f]*")), "a wheel directory was published"
    assert not list((root / ".grocker" / "wheels").rglob("*.whl"))
    errors = [ln for ln in run.err.splitlines() if ln.startswith("grocker: error:")]
    assert len(errors) == 1, run.err[-3000:]
    if case in ("wrong-sha256", "other-project-inside"):
        # Listed correctly, served wrong: the member fails with the index's error, no wheel kept.
        assert run.code == WorkspaceError.exit_code, run.err[-3000:]
        project = run.report["projects"][0] if run.report else {}
        assert project["status"] == "failed" and project["exit_code"] == WheelIndexError.exit_code
        assert "it was not used" in project["error"]
        state = root / ".grocker" / "members" / f"{name}.json"
        assert not state.exists() or "wheel" not in json.loads(state.read_text()).get("stages", {})
    else:
        # The page itself is refused while planning: nothing was downloaded.
        assert run.code == WheelIndexError.exit_code, run.err[-3000:]
        assert "nothing was downloaded" in errors[0] or "no sha256 hash" in errors[0]
        assert not (root / ".grocker" / "members").exists()


# -- credentials ----------------------------------------------------------------------------------

TOKEN = "tok-7Hq2Lr9XbZ4e"
PLUGIN_SECRET = "plugin-secret-5Wd8Kp3Nq"
AUTH_SERVER = """
import os, sys
import pypiserver
from pypiserver import bottle_wrapper as bottle

root, port = sys.argv[1:]
user, password = os.environ["INDEX_USER"], os.environ["INDEX_PASSWORD"]
app = pypiserver.app(roots=[root], authenticate=["download", "list", "update"],
                     auther=lambda u, p: (u, p) == (user, password))
bottle.run(app=app, host="127.0.0.1", port=int(port), server="wsgiref", quiet=True)
"""
PLUGIN = f"""
from setuptools_grocker.plugin import impl


@impl
def grocker_compile_environment(config):
    return {{"env": {{"LEAKY_TOKEN": "{PLUGIN_SECRET}"}}, "commands": ['echo "the plugin sees $LEAKY_TOKEN"']}}
"""


@pytest.fixture(scope="module")
def private_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real pypiserver that lists, serves and takes uploads only with ci:TOKEN (Basic auth)."""
    top = tmp_path_factory.mktemp("private-index")
    (top / "packages").mkdir()
    (top / "server.py").write_text(AUTH_SERVER)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(top / "server.py"), str(top / "packages"), str(port)],
                            env={**os.environ, "INDEX_USER": "ci", "INDEX_PASSWORD": TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/simple/", proc, "pypiserver")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def every_text_under(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix != ".whl")


def test_index_credentials_and_plugin_secrets_show_nowhere(private_index: str, tmp_path: Path,
                                                           client: docker.DockerClient) -> None:
    name = "private-lib"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "leaky_plugin.py").write_text(PLUGIN)
    first = small_workspace(tmp_path / "machine-a" / "ws", name, plugin="leaky_plugin")
    public = private_index
    with_token = private_index.replace("//", f"//ci:{TOKEN}@")
    base = {"PYTHONPATH": str(tmp_path / "site")}
    runs = []
    # No credentials: the index says 401, and grocker says where credentials go.
    refused = grocker("workspace", "plan", str(first), "--json", "--wheel-index", public, env=base)
    assert refused.code == WheelIndexError.exit_code and "GROCKER_WORKSPACE_INDEX_URL" in refused.err
    # Machine A: the credentials in the environment, the public URL on the command line.
    env_a = {**base, "GROCKER_WORKSPACE_INDEX_URL": with_token}
    plan = grocker("workspace", "plan", str(first), "--json", "--wheel-index", public, env=env_a)
    built = grocker("workspace", "build", str(first), "--wheel-index", public, env=env_a,
                    report=tmp_path / "a.json")
    runs += [plan, built]
    assert built.code == 0, built.err[-3000:]
    # The plugin's command ran, its value masked, in the build's log (container output goes there).
    assert "the plugin sees ***" in every_text_under(first / ".grocker" / "logs")
    basic = "Basic " + base64.b64encode(f"ci:{TOKEN}".encode()).decode()
    listing = urllib.request.Request(f"{public}/simple/{name}/", headers={"Authorization": basic})
    assert "private_lib-1.0.0-1" in urllib.request.urlopen(listing).read().decode()
    # Machine B: only the variable (no --wheel-index), then only ~/.netrc-style credentials.
    second = tmp_path / "machine-b" / "ws"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns(".grocker"))
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login ci password {TOKEN}\n")
    env_b = {**base, "NETRC": str(netrc)}
    plan_b = grocker("workspace", "plan", str(second), "--json", "--wheel-index", public, env=env_b)
    assert plan_b.code == 0, plan_b.err[-3000:]
    fetch = json.loads(plan_b.out)["members"][0]["fetch"]
    assert fetch.startswith(f"{public}/packages/private_lib-1.0.0-1"), fetch
    fetched = grocker("workspace", "build", str(second), "--wheel-index", public, env=env_b,
                      report=tmp_path / "b.json")
    runs += [plan_b, fetched]
    assert fetched.code == 0, fetched.err[-3000:]
    assert fetched.report["projects"][0]["reason"] == "fetched from the wheel index"
    manifests = list((second / ".grocker" / "wheels").rglob("manifest.json"))
    assert manifests and json.loads(manifests[0].read_text())["fetched"] == fetch
    seen = "\n".join([r.out + r.err for r in [refused, *runs]] + [
        (tmp_path / "a.json").read_text(), (tmp_path / "b.json").read_text(),
        every_text_under(first / ".grocker"), every_text_under(second / ".grocker")])
    assert TOKEN not in seen
    assert PLUGIN_SECRET not in seen
