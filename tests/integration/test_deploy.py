"""Deploy, automatic rollback, manual rollback, history and stop on a real Swarm (single node, 127.0.0.1).

Three versions of one small application, pushed to a real registry and deployed from it:
v1 and v2 are healthy; v3 passes its smoke test but answers its health path with 503 when it
runs with the production env file (a release that breaks in production only). The service
must keep answering on its port through every rollout, v3 included.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from setuptools_grocker.errors import DeployError
from tests.helpers import free_port, grocker, python_project, remove_images

SERVER = '''
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "{version}"
BROKEN_IN_PRODUCTION = {broken}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        if self.path == "/health" and BROKEN_IN_PRODUCTION and os.environ.get("DEPLOY_ENV") == "production":
            code = 503
        body = json.dumps({{"version": VERSION, "env": os.environ.get("DEPLOY_ENV")}}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
'''


def write_app(root: Path, version: str, broken: bool) -> Path:
    return python_project(
        root / f"v{version}", "shopfront", version=version, scripts={"shopfront": "shopfront.server:main"},
        modules={"__init__.py": f'__version__ = "{version}"\n',
                 "server.py": SERVER.format(version=version, broken=broken)},
        grocker='[tool.grocker]\nimage-name = "grocker-test/shopfront"\nports = [8000]\n\n'
                '[tool.grocker.commands]\nserver = "shopfront"\n\n'
                '[tool.grocker.smoke-test]\nport = 8000\npath = "/health"')


class Poller(threading.Thread):
    """GET the published port every 0.1 s; remember every answer (status, version) or failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[int, str | None]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    self.answers.append((resp.status, json.loads(resp.read())["version"]))
            except urllib.error.HTTPError as exc:
                self.answers.append((exc.code, None))
            except OSError as exc:
                self.answers.append((0, str(exc)))
            time.sleep(0.1)

    def stop(self) -> list[tuple[int, str | None]]:
        self._stop_event.set()
        self.join(timeout=10)
        return self.answers


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, registry: str, client: docker.DockerClient) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("deploy")
    refs = {}
    for version, broken in (("1.0.0", False), ("2.0.0", False), ("3.0.0", True)):
        run = grocker("build", str(write_app(root, version, broken)), "--push",
                      env={"GROCKER_REGISTRY": registry}, report=root / f"{version}.json")
        assert run.code == 0, run.err[-3000:]
        refs[version] = {"ref": run.project["image"], "digest": run.project["digest"]}
    env_file = root / "production.env"
    env_file.write_text("# the production settings\nDEPLOY_ENV=production\n")
    yield {"refs": refs, "env_file": env_file, "root": root}
    remove_images(client, *(r["ref"] for r in refs.values()))


@pytest.fixture(scope="module")
def service(images: dict, client: docker.DockerClient, run_id: str) -> Iterator[dict[str, Any]]:
    name = f"shop-{run_id[:6]}"
    port = free_port()
    yield {"name": name, "port": port, "url": f"http://127.0.0.1:{port}/"}
    subprocess.run([*grocker_argv(), "stop", name], capture_output=True)


def grocker_argv() -> list[str]:
    from tests.helpers import GROCKER

    return list(GROCKER)


def deploy(images: dict, service: dict, version: str, *extra: str) -> Any:
    return grocker("deploy", images["refs"][version]["ref"], "--name", service["name"],
                   "--publish", f"127.0.0.1:{service['port']}:8000", "--env-file", str(images["env_file"]),
                   "--replicas", "2", "--health-interval", "1", "--start-period", "3", "--monitor", "2",
                   "--json", *extra)


def answer(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def spec_image(client: docker.DockerClient, name: str) -> str:
    return client.api.inspect_service(name)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def history(name: str) -> list[dict[str, Any]]:
    run = grocker("history", name, "--json")
    assert run.code == 0, run.err
    return json.loads(run.out)


def test_deploy_v1(images: dict, service: dict, client: docker.DockerClient, registry: str) -> None:
    run = deploy(images, service, "1.0.0")
    assert run.code == 0, run.err[-3000:]
    record = json.loads(run.out)
    assert record["status"] == "deployed" and record["version"] == "1.0.0"
    # Pinned by digest: what runs is what the registry holds under that digest.
    pinned = f"{registry}/grocker-test/shopfront@{images['refs']['1.0.0']['digest']}"
    assert record["pinned"] == pinned
    assert spec_image(client, service["name"]) == pinned
    assert answer(service["url"]) == {"version": "1.0.0", "env": "production"}
    spec = client.api.inspect_service(service["name"])["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Healthcheck"]["Test"][-3:] == ["health", "8000", "/health"]
    assert spec["UpdateConfig"]["FailureAction"] == "rollback" and spec["UpdateConfig"]["Order"] == "start-first"
    # The env file is a secret: not in the service's spec, read by the entrypoint from /config.
    assert "DEPLOY_ENV" not in json.dumps(spec)
    assert [s["File"]["Name"] for s in container["Secrets"]] == ["/config/50-production.env"]
    # Its name is keyed by the service's own random key, not the plain hash of the file.
    plain = hashlib.sha256(images["env_file"].read_bytes()).hexdigest()[:12]
    assert container["Secrets"][0]["SecretName"].startswith(f"{service['name']}-env-")
    assert plain not in container["Secrets"][0]["SecretName"]
    assert len(spec["Labels"]["io.grocker.secret-key"]) == 64
    # The same deploy again: the same secret name, so nothing to roll.
    again = deploy(images, service, "1.0.0")
    assert again.code == 0, again.err[-3000:]
    assert json.loads(again.out)["status"] == "unchanged"
    assert client.api.inspect_service(service["name"])["Spec"]["Labels"]["io.grocker.secret-key"] == \
        spec["Labels"]["io.grocker.secret-key"]
    # The edge (HAProxy) listens on 127.0.0.1 only, and runs under tini (PID 1), not as PID 1 itself.
    edge = client.containers.get(f"{service['name']}-edge")
    assert list(edge.attrs["HostConfig"]["PortBindings"].values()) == [[{"HostIp": "127.0.0.1",
                                                                         "HostPort": str(service["port"])}]]
    assert edge.attrs["Config"]["Entrypoint"][:3] == ["/usr/bin/tini", "-g", "--"]
    assert edge.attrs["Config"]["Entrypoint"][3] == "/usr/sbin/haproxy"
    assert edge.exec_run(["cat", "/proc/1/comm"]).output.strip() == b"tini"


def test_deploy_v2_healthy_without_a_failed_request(images: dict, service: dict) -> None:
    poller = Poller(service["url"])
    poller.start()
    run = deploy(images, service, "2.0.0")
    time.sleep(1)
    answers = poller.stop()
    assert run.code == 0, run.err[-3000:]
    assert json.loads(run.out)["status"] == "deployed"
    assert answer(service["url"])["version"] == "2.0.0"
    assert answers and all(code == 200 for code, _ in answers), answers
    assert {v for _, v in answers} <= {"1.0.0", "2.0.0"}


def test_deploy_v3_unhealthy_is_rolled_back_while_the_service_answers(images: dict, service: dict,
                                                                        client: docker.DockerClient,
                                                                        registry: str) -> None:
    poller = Poller(service["url"])
    poller.start()
    run = deploy(images, service, "3.0.0")
    answers = poller.stop()
    assert run.code == DeployError.exit_code, run.err[-3000:]
    last = run.err.strip().splitlines()[-1]
    assert last.startswith("grocker: error: ") and "rolled" in last and "back to" in last
    # Never a failed request, never an answer from v3.
    assert len(answers) > 20
    assert all(code == 200 and version == "2.0.0" for code, version in answers), answers
    assert spec_image(client, service["name"]) == \
        f"{registry}/grocker-test/shopfront@{images['refs']['2.0.0']['digest']}"
    assert [(r["version"], r["status"]) for r in history(service["name"])] == \
        [("1.0.0", "deployed"), ("2.0.0", "deployed"), ("3.0.0", "failed")]


def test_manual_rollback_goes_back_one_release_by_digest(images: dict, service: dict,
                                                         client: docker.DockerClient, registry: str) -> None:
    run = grocker("rollback", service["name"], "--health-interval", "1", "--start-period", "3", "--monitor", "2",
                  "--json")
    assert run.code == 0, run.err[-3000:]
    assert answer(service["url"]) == {"version": "1.0.0", "env": "production"}
    assert spec_image(client, service["name"]) == \
        f"{registry}/grocker-test/shopfront@{images['refs']['1.0.0']['digest']}"
    records = history(service["name"])
    assert [(r["action"], r["version"]) for r in records] == \
        [("deploy", "1.0.0"), ("deploy", "2.0.0"), ("deploy", "3.0.0"), ("rollback", "1.0.0")]
    assert records[1]["undone"] is True
    text = grocker("history", service["name"])
    assert "rolled back" in text.out and "rollback" in text.out
    # Nothing earlier than 1.0.0: a second rollback says so, and changes nothing.
    again = grocker("rollback", service["name"])
    assert again.code == DeployError.exit_code
    assert "no earlier release" in again.err.strip().splitlines()[-1]
    assert answer(service["url"])["version"] == "1.0.0"


def test_bad_input_is_one_line_and_changes_nothing(images: dict, service: dict, tmp_path: Path) -> None:
    bad_env = tmp_path / "bad.env"
    bad_env.write_text("DEPLOY_ENV production\n")
    cases = [
        (["--publish", "127.0.0.1:notaport:8000"], "is not [HOST:]HOST_PORT:PORT"),
        (["--env-file", str(bad_env)], "bad.env:1: expected KEY=VALUE"),
        (["--env-file", str(tmp_path / "missing.env")], "cannot read env file"),
    ]
    for extra, expected in cases:
        run = grocker("deploy", images["refs"]["2.0.0"]["ref"], "--name", service["name"], *extra)
        assert run.code == DeployError.exit_code, (extra, run.err)
        assert expected in run.err.strip().splitlines()[-1]
    run = grocker("deploy", "grocker-test/no-such-image:9", "--name", service["name"])
    assert run.code == DeployError.exit_code and "cannot be pulled" in run.err
    run = grocker("deploy", images["refs"]["2.0.0"]["ref"], "--name=-bad-")
    assert run.code != 0 and "service name" in run.err
    assert answer(service["url"])["version"] == "1.0.0"


def test_a_smoke_test_label_that_names_another_host_is_refused(images: dict, service: dict,
                                                                client: docker.DockerClient, tmp_path: Path) -> None:
    """An image whose label would send the probe and the health check to http://127.0.0.1:PORT@evil.example/x."""
    (tmp_path / "Dockerfile").write_text(
        f"FROM {images['refs']['2.0.0']['ref']}\n"
        'LABEL io.grocker.smoke-test="{\\"port\\": 8000, \\"path\\": \\"@evil.example/x\\"}"\n')
    ref = "grocker-test/shopfront-evil-label:1"
    client.images.build(path=str(tmp_path), tag=ref, rm=True)
    secrets_before = {s["ID"] for s in client.api.secrets(filters={"label": f"io.grocker.deploy={service['name']}"})}
    try:
        other = f"{service['name']}-evil"
        run = grocker("deploy", ref, "--name", other, "--env-file", str(images["env_file"]))
        assert run.code == DeployError.exit_code, run.err[-3000:]
        last = run.err.strip().splitlines()[-1]
        assert "io.grocker.smoke-test label of grocker-test/shopfront-evil-label:1" in last
        assert "'@evil.example/x' must start with '/'" in last
        # Nothing was created: no service, no secret.
        with pytest.raises(docker.errors.NotFound):
            client.api.inspect_service(other)
        assert not client.api.secrets(filters={"label": f"io.grocker.deploy={other}"})
        # Nor can it replace the running release.
        run = grocker("deploy", ref, "--name", service["name"])
        assert run.code == DeployError.exit_code
        assert answer(service["url"])["version"] == "1.0.0"
        assert {s["ID"] for s in client.api.secrets(filters={"label": f"io.grocker.deploy={service['name']}"})} \
            == secrets_before
    finally:
        remove_images(client, ref)


def test_stop_removes_everything(images: dict, service: dict, client: docker.DockerClient) -> None:
    run = grocker("stop", service["name"])
    assert run.code == 0, run.err
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_service(service["name"])
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(f"{service['name']}-edge")
    assert not client.api.secrets(filters={"label": f"io.grocker.deploy={service['name']}"})
    with pytest.raises(OSError):
        urllib.request.urlopen(service["url"], timeout=3)
    assert grocker("history", service["name"]).code == DeployError.exit_code
