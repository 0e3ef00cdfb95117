"""The HAProxy edge of ``grocker deploy --publish`` on a real Swarm (single node, 127.0.0.1).

A tiny test application (the standard library's HTTP server, on the bootstrapped base) answers ``/`` with
its task and service, ``/fail`` with 500, ``/slow?s=N`` after N seconds, and ``/refuse`` by answering then
closing its listening socket (its task runs on, refusing connections). Service A is deployed with
``--publish``; service B beside it is added to A's edge as a second pool, as the canary part will.
"""
from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import docker
import pytest

from setuptools_grocker.deploy.deployer import Publish
from setuptools_grocker.deploy.edge import SOCKET, Edge, Pool, percentile
from setuptools_grocker.engine import Engine
from setuptools_grocker.progress import Progress
from tests.helpers import BASE_IMAGE, GROCKER, free_port, grocker, remove_images

APP = '''
import json, os, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        code = 500 if url.path == "/fail" else 200
        if url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("s", ["1"])[0]))
        body = json.dumps({"task": socket.gethostname(), "who": os.environ.get("WHO")}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if url.path == "/refuse":
            threading.Thread(target=stop).start()

    def log_message(self, *args):
        pass


def stop():
    SERVER.shutdown()
    SERVER.server_close()


SERVER = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
SERVER.daemon_threads = True
SERVER.serve_forever()
while True:  # refusing, not gone: the task runs on
    time.sleep(3600)
'''


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, registry: str, client: docker.DockerClient,
        run_id: str) -> Iterator[str]:
    root = tmp_path_factory.mktemp("edge-app")
    (root / "app.py").write_text(APP)
    (root / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nCOPY app.py /app.py\nUSER 10001\n"
        'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/python3", "/app.py"]\n')
    repo = f"{registry}/grocker-test/edge-app"
    client.images.build(path=str(root), tag=f"{repo}:{run_id}", rm=True)
    for line in client.images.push(repo, tag=run_id, stream=True, decode=True):
        assert "error" not in line, line
    yield f"{repo}:{run_id}"
    remove_images(client, f"{repo}:{run_id}")


@pytest.fixture(scope="module")
def services(app: str, run_id: str) -> Iterator[dict[str, Any]]:
    a, b = f"edge-{run_id[:6]}", f"edge-{run_id[:6]}-b"
    port = free_port()
    common = ["--health-interval", "1", "--start-period", "3", "--monitor", "1", "--edge-base", BASE_IMAGE]
    run = grocker("deploy", app, "--name", a, "--publish", f"127.0.0.1:{port}:8000", "--env", "WHO=a", *common)
    assert run.code == 0, run.err[-3000:]
    run = grocker("deploy", app, "--name", b, "--env", "WHO=b", *common)
    assert run.code == 0, run.err[-3000:]
    yield {"a": a, "b": b, "port": port, "url": f"http://127.0.0.1:{port}"}
    for name in (a, b):  # A first: its edge is on B's network too
        subprocess.run([*GROCKER, "stop", name], capture_output=True)


@pytest.fixture()
def edge(services: dict[str, Any]) -> Iterator[Edge]:
    with Engine(Progress(quiet=True)) as engine:
        yield Edge(engine, services["a"])


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


def up(edge: Edge, service: str) -> list[str]:
    return sorted(s.address for s in edge.servers() if s.service == service and s.status == "UP")


def test_requests_reach_the_service_through_a_non_root_haproxy(services: dict[str, Any], edge: Edge,
                                                                client: docker.DockerClient) -> None:
    status, body = get(services["url"] + "/")
    assert (status, body["who"]) == (200, "a")
    container = client.containers.get(f"{services['a']}-edge")
    # Published on 127.0.0.1 only; HAProxy under tini, as the package's haproxy user.
    bindings = [b for v in container.attrs["HostConfig"]["PortBindings"].values() for b in v]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(services["port"])}]
    assert container.attrs["Config"]["User"] == "haproxy"
    assert container.exec_run(["cat", "/proc/1/comm"]).output.strip() == b"tini"
    assert container.exec_run(["id", "-u"]).output.strip() != b"0"
    assert container.image.tags[0].startswith("grocker/edge:")
    # The runtime API is a socket of the haproxy user only; the configuration is root's, read-only to it.
    assert container.exec_run(["stat", "-c", "%a %U", SOCKET]).output.decode().split() == ["600", "haproxy"]
    assert container.exec_run(["sh", "-c", "test -w /etc/grocker-edge/haproxy.cfg"]).exit_code != 0
    assert edge.weights() == {services["a"]: 100}
    # A client that half-closes after its request still gets the whole answer.
    with socket.create_connection(("127.0.0.1", services["port"]), timeout=30) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        received = b"".join(iter(lambda: conn.recv(65536), b""))
    assert received.split(b"\r\n", 1)[0].endswith(b" 200 OK") and b'"who": "a"' in received


def test_scaling_up_is_seen_without_a_restart(services: dict[str, Any], edge: Edge,
                                              client: docker.DockerClient) -> None:
    pid = edge.pid()
    started = client.containers.get(edge.container).attrs["State"]["StartedAt"]
    client.services.get(services["a"]).scale(3)
    wait_for("3 servers of A up in the edge", lambda: len(up(edge, services["a"])) == 3)
    tasks = {get(services["url"] + "/")[1]["task"] for _ in range(30)}
    assert len(tasks) == 3
    assert edge.pid() == pid
    assert client.containers.get(edge.container).attrs["State"]["StartedAt"] == started


def test_a_task_refusing_or_killed_is_retried_on_another(services: dict[str, Any], edge: Edge,
                                                         client: docker.DockerClient) -> None:
    since = time.time()
    status, refusing = get(services["url"] + "/refuse")
    assert status == 200
    answers = [get(services["url"] + "/") for _ in range(30)]
    assert all(code == 200 for code, _ in answers), answers
    assert refusing["task"] not in {body["task"] for _, body in answers}
    # The edge tried the refusing task and sent the request on to another.
    assert any(r.retries > 0 for r in edge.requests(since=int(since))), edge.requests(since=int(since))
    # A task killed outright: the requests that follow all succeed.
    victim = next(c for c in client.containers.list(filters={"label": f"com.docker.swarm.service.name={services['a']}"})
                  if c.id[:12] != refusing["task"])
    victim.kill()
    answers = [get(services["url"] + "/") for _ in range(30)]
    assert all(code == 200 for code, _ in answers), answers


def test_counters_and_request_log_per_server(services: dict[str, Any], edge: Edge) -> None:
    before = {s.server: s for s in edge.servers() if s.service == services["a"]}
    since = int(time.time())
    results = [get(services["url"] + path)[0] for path in ["/fail"] * 5 + ["/"] * 10]
    assert results.count(500) == 5
    after = [s for s in edge.servers() if s.service == services["a"]]

    def delta(field: str) -> int:
        return sum(getattr(s, field) - (getattr(before[s.server], field) if s.server in before else 0)
                   for s in after)

    assert delta("requests") >= 15 and delta("http_5xx") == 5
    logged = [r for r in edge.requests(since=since) if r.service == services["a"]]
    assert sum(1 for r in logged if r.status == 500) == 5 and len(logged) >= 15
    assert all(r.total_ms >= 0 and r.server.startswith(services["a"] + "-") for r in logged)
    assert percentile([r.total_ms for r in logged], 95) is not None


def test_weight_zero_at_run_time_drains_a_pool_without_a_reload(services: dict[str, Any], edge: Edge,
                                                                 client: docker.DockerClient) -> None:
    a, b = services["a"], services["b"]
    # The canary part's shape: the stable and the canary service as two pools of one backend. Adding a pool
    # to a running edge is a reload of the same container (it joins B's network), not a new container.
    started = client.containers.get(edge.container).attrs["State"]["StartedAt"]
    before = edge.pid()
    assert not edge.ensure([Publish.parse(f"127.0.0.1:{services['port']}:8000")], [Pool(a), Pool(b)],
                           base_image=BASE_IMAGE, labels={"io.grocker.deploy": a}, progress=Progress(quiet=True))
    assert client.containers.get(edge.container).attrs["State"]["StartedAt"] == started
    assert edge.pid() != before and [p.service for p in edge.pools()] == [a, b]
    wait_for("B up in the edge", lambda: up(edge, b))
    wait_for("A up in the edge", lambda: up(edge, a))
    assert {get(services["url"] + "/")[1]["who"] for _ in range(20)} == {"a", "b"}
    pid = edge.pid()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(get, services["url"] + "/slow?s=5") for _ in range(8)]
        time.sleep(1.5)  # all of them in flight
        edge.set_weight(b, 0)
        during = [get(services["url"] + "/")[1]["who"] for _ in range(20)]
        finished = [f.result() for f in slow]
    # The requests in flight on B were not dropped; no new request went to B; no reload.
    assert all(code == 200 for code, _ in finished), finished
    assert "b" in {body["who"] for _, body in finished}
    assert set(during) == {"a"}
    assert edge.pid() == pid
    assert edge.weights() == {a: 100, b: 0}
    assert {s.weight for s in edge.servers() if s.service == b} == {0}
    # A reload starts a new worker from the configuration, and the weights hold.
    assert edge.reload() != pid
    assert {s.weight for s in edge.servers() if s.service == b} == {0}
    assert {get(services["url"] + "/")[1]["who"] for _ in range(20)} == {"a"}
    edge.set_weight(b, 100)
    assert "b" in {get(services["url"] + "/")[1]["who"] for _ in range(20)}


def test_bad_weight_is_refused(services: dict[str, Any], edge: Edge) -> None:
    from setuptools_grocker.errors import DeployError

    with pytest.raises(DeployError, match="is not a number from 0 to 256"):
        edge.set_weight(services["b"], 300)
    with pytest.raises(DeployError, match="is not a pool of"):
        edge.set_weight("nope", 0)
