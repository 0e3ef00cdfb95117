"""Plugins on real builds: a real installed distribution found through its entry point."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from setuptools_grocker.errors import PluginError
from tests.helpers import grocker, install_plugin, pythonpath, remove_images

PACKAGES = Path(__file__).resolve().parent.parent / "packages"


@pytest.fixture(scope="module")
def testkit_site(tmp_path_factory: pytest.TempPathFactory) -> str:
    return install_plugin(tmp_path_factory, "grocker-plugin-testkit")


@pytest.fixture(scope="module")
def testkit(testkit_site: str) -> dict[str, str]:
    """The testkit plugin, found through its entry point."""
    return pythonpath(testkit_site)


@pytest.fixture(scope="module")
def testkit_and_ordering(tmp_path_factory: pytest.TempPathFactory, testkit_site: str) -> dict[str, str]:
    """The testkit and a second plugin that uses tryfirst and wraps grocker_runtime_image."""
    return pythonpath(install_plugin(tmp_path_factory, "grocker-plugin-ordering"), testkit_site)


def events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def project(tmp_path: Path) -> Path:
    target = tmp_path / "hatch-app"
    shutil.copytree(PACKAGES / "hatch-app", target)
    return target


def test_plugins_lists_the_entry_point(testkit: dict[str, str]) -> None:
    out = subprocess.run([sys.executable, "-m", "setuptools_grocker", "plugins", "--json"], capture_output=True,
                         text=True, env={**os.environ, **testkit}, check=True).stdout
    plugins = {p["name"]: p for p in json.loads(out)}
    assert plugins["testkit"]["origin"] == "entry point of grocker-plugin-testkit 0.1.0"
    assert set(plugins["testkit"]["hooks"]) == {
        "grocker_configure", "grocker_stages", "grocker_compile_environment", "grocker_runtime_image",
        "grocker_smoke_tests", "grocker_after_publish", "grocker_sign", "grocker_verify_signature",
        "grocker_incident", "grocker_release_metrics"}
    assert plugins["setuptools_grocker.pipeline.build"] == {
        "name": "setuptools_grocker.pipeline.build", "origin": "builtin", "hooks": ["grocker_stages"]}
    assert plugins["setuptools_grocker.pipeline.smoke"]["origin"] == "builtin"


def test_a_plugin_changes_a_real_image(client: docker.DockerClient, testkit: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    tag = "grocker-test/plugin-app:1"
    run = grocker("build", str(project(tmp_path)), "--tag", tag, report=tmp_path / "r.json",
                  env={**testkit, "TESTKIT_LOG": str(log), "GROCKER_TRACE_PLUGINS": "1"})
    try:
        assert run.code == 0, run.err[-3000:]
        seen = events(log)
        stages = [e["name"] for e in seen if e["event"] == "stage"]
        assert stages == ["before-compile", "after-compile", "after-image", "after-smoke"]
        in_image = next(e for e in seen if e["event"] == "in-image")
        assert in_image["output"] == "hello from the testkit plugin"
        assert seen[-1] == {"event": "published", "image": tag, "status": "built"}
        image = client.images.get(tag)
        assert image.labels["com.example.testkit"] == "1" and image.labels["com.example.configured"] == "yes"
        assert client.containers.run(tag, ["hello"], remove=True).decode().strip() == "hello from the testkit plugin"
        # The stage order in the output: custom stages are named with their plugin.
        assert "testkit before-compile [testkit] ok" in run.err
        assert "plugin trace: grocker_stages -> testkit" in run.err
    finally:
        remove_images(client, tag)


def test_pluggy_order_configure_chaining_and_a_wrapper_on_a_real_build(
        client: docker.DockerClient, testkit_and_ordering: dict[str, str], tmp_path: Path) -> None:
    """Two entry-point plugins: 'ordering' (registered first, but tryfirst) and the testkit.

    Both append to one label in grocker_configure: the image has both values, the tryfirst
    one first, and the testkit saw ordering's change. Ordering's stage at after-compile runs
    before the testkit's (tryfirst), and its wrapper changed the testkit's contribution.
    """
    log = tmp_path / "events.jsonl"
    tag = "grocker-test/plugin-ordering:1"
    listed = subprocess.run([sys.executable, "-m", "setuptools_grocker", "plugins", "--json"], capture_output=True,
                            text=True, env={**os.environ, **testkit_and_ordering}, check=True).stdout
    assert {p["name"]: p["origin"] for p in json.loads(listed)}["ordering"] == \
        "entry point of grocker-plugin-ordering 0.1.0"
    run = grocker("build", str(project(tmp_path)), "--tag", tag, report=tmp_path / "r.json",
                  env={**testkit_and_ordering, "TESTKIT_LOG": str(log), "GROCKER_TRACE_PLUGINS": "1"})
    try:
        assert run.code == 0, run.err[-3000:]
        labels = client.images.get(tag).labels
        assert labels["com.example.chain"] == "ordering,testkit"
        assert labels["com.example.testkit"] == "1, wrapped by ordering"
        assert labels["com.example.configured"] == "yes"
        seen = events(log)
        configure = [(e["plugin"], e["labels"].get("com.example.chain")) for e in seen if e["event"] == "configure"]
        assert configure[:2] == [("ordering", None), ("testkit", "ordering")]
        stages = [(e["plugin"], e["name"]) for e in seen if e["event"] == "stage"]
        assert stages == [("testkit", "before-compile"), ("ordering", "after-compile"), ("testkit", "after-compile"),
                          ("testkit", "after-image"), ("testkit", "after-smoke")]
        wrapped = [e for e in seen if e["event"] == "wrapped"][0]
        assert {"com.example.testkit": "1"} in wrapped["labels"]  # the wrapper saw the testkit's contribution
        order = [ln for ln in run.err.splitlines() if ln.startswith("plugin trace: grocker_configure ->")][:2]
        assert order == ["plugin trace: grocker_configure -> ordering [tryfirst]",
                         "plugin trace: grocker_configure -> testkit"]
        assert "plugin trace: grocker_runtime_image -> ordering [wrapper]" in run.err
        assert "ordering after-compile [ordering] ok" in run.err
    finally:
        remove_images(client, tag)


def test_a_failing_plugin_names_itself_and_tags_nothing(client: docker.DockerClient, testkit: dict[str, str],
                                                        tmp_path: Path) -> None:
    tag = "grocker-test/plugin-fail:1"
    run = grocker("build", str(project(tmp_path)), "--tag", tag, env={**testkit, "TESTKIT_FAIL_STAGE": "after-image"})
    assert run.code == PluginError.exit_code
    line = [ln for ln in run.err.splitlines() if ln.startswith("grocker: error:")][0]
    assert "stage 'testkit after-image' of plugin 'testkit' failed: RuntimeError" in line
    assert "GROCKER_DISABLE_PLUGINS=testkit" in line
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(tag)


def test_garbage_from_a_hook_is_named(testkit: dict[str, str], tmp_path: Path) -> None:
    run = grocker("build", str(project(tmp_path)), env={**testkit, "TESTKIT_GARBAGE": "1"})
    assert run.code == PluginError.exit_code
    assert "plugin 'testkit' returned str from grocker_runtime_image, expected an ImageContribution" in run.err


def test_blocklist_disables_the_plugin(client: docker.DockerClient, testkit: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    tag = "grocker-test/plugin-blocked:1"
    run = grocker("build", str(project(tmp_path)), "--tag", tag,
                  env={**testkit, "TESTKIT_LOG": str(log), "GROCKER_DISABLE_PLUGINS": "testkit"})
    try:
        assert run.code == 0, run.err[-3000:]
        assert events(log) == []
        assert "com.example.testkit" not in client.images.get(tag).labels
    finally:
        remove_images(client, tag)


def test_example_frontend_plugin_builds_and_serves_a_site(client: docker.DockerClient, tmp_path: Path) -> None:
    """examples/grocker-plugin-frontend, installed from its directory, changes a real image."""
    import time
    import urllib.request

    from tests.helpers import EXAMPLES

    target = tmp_path / "site-packages"
    source = tmp_path / "plugin-src"  # pip builds in-tree: keep the repository clean
    shutil.copytree(EXAMPLES / "grocker-plugin-frontend", source)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(source)], check=True, capture_output=True)
    app = tmp_path / "demo-front"
    shutil.copytree(EXAMPLES / "demo-front", app, ignore=shutil.ignore_patterns(".grocker"))
    tag = "grocker-test/demo-front:1"
    run = grocker("build", str(app), "--tag", tag, report=tmp_path / "r.json", env=pythonpath(str(target)))
    try:
        assert run.code == 0, run.err[-3000:]
        assert "frontend [frontend] ok" in run.err
        image = client.images.get(tag)
        assert image.labels["io.grocker.frontend"] == "nginx"
        container = client.containers.run(tag, detach=True, ports={"8080/tcp": ("127.0.0.1", None)})
        try:
            container.reload()
            port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/assets/site.css", timeout=3) as resp:
                        assert b"font-family" in resp.read()
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.3)
        finally:
            container.remove(force=True)
        # No build tool of the front-end reached the image: the site is static files only.
        listing = client.containers.run(tag, ["run", "sh", "-c", "ls /opt/frontend/site; command -v gcc || true"],
                                        remove=True).decode()
        assert listing.split() == ["assets", "index.html"]
    finally:
        remove_images(client, tag)


def test_workspace_members_run_the_plugins(client: docker.DockerClient, testkit: dict[str, str], tmp_path: Path,
                                           run_id: str) -> None:
    from tests.helpers import generate

    root = tmp_path / "ws"
    prefix = f"p{run_id[:5]}-"
    generate(root, libs=1, apps=1, levels=1, prefix=prefix)
    log = tmp_path / "events.jsonl"
    app = f"{prefix}app-00"
    run = grocker("workspace", "build", str(root), report=tmp_path / "r.json", env={**testkit, "TESTKIT_LOG": str(log)})
    try:
        assert run.code == 0, run.err[-3000:]
        stages = [(e["project"], e["name"]) for e in events(log) if e["event"] == "stage"]
        # Library: compile positions only; application: all four.
        assert [n for p, n in stages if p == f"{prefix}lib-00"] == ["before-compile", "after-compile"], stages
        assert [n for p, n in stages if p == app] == ["before-compile", "after-compile", "after-image",
                                                      "after-smoke"], stages
        assert [e["image"] for e in events(log) if e["event"] == "published"] == [f"{app}:2.0.0"]
        assert client.images.get(f"{app}:2.0.0").labels["com.example.testkit"] == "1"
        assert client.containers.run(f"{app}:2.0.0", ["hello"], remove=True).decode().strip() == \
            "hello from the testkit plugin"
    finally:
        remove_images(client, f"{app}:2.0.0")


def test_plugin_stage_alone_as_a_ci_step_would_run_it(testkit: dict[str, str], tmp_path: Path, run_id: str) -> None:
    from tests.helpers import generate

    root = tmp_path / "ws"
    prefix = f"q{run_id[:5]}-"
    generate(root, libs=1, apps=1, levels=1, prefix=prefix)
    log = tmp_path / "events.jsonl"
    env = {**testkit, "TESTKIT_LOG": str(log)}
    lib = f"{prefix}lib-00"
    base = ["workspace", "build", str(root), "--only", lib, "--no-deps"]
    assert grocker(*base, "--stage", "wheel", env=env).code == 0
    assert [e for e in events(log) if e["event"] == "stage"] == []  # staged: plugin stages only by name
    run = grocker(*base, "--stage", "plugin:testkit after-compile", env=env, report=tmp_path / "r.json")
    assert run.code == 0, run.err[-3000:]
    assert [(e["project"], e["name"]) for e in events(log) if e["event"] == "stage"] == [(lib, "after-compile")]
    unknown = grocker(*base, "--stage", "plugin:nope", env=env, report=tmp_path / "u.json")
    assert unknown.code != 0 and "no plugin stage named 'nope'" in unknown.project["error"]
