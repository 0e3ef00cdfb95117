"""`grocker ship` of releases that are more than one image: a pre-deploy job, a web service with its worker.

A tiny application whose entrypoint runs ``server`` (the default: the standard library's HTTP server answering
``/`` with its version) or ``worker`` (prints a heartbeat; with ``WORKER_CRASH`` set it exits 3 after 3 s, past
Swarm's update monitor, so only the watch of the worker's tasks can catch it). ``/migrate.py`` is the pre-deploy
job: it prints the variable of production's env file and the address of the web service on the overlay network,
and fails with ``MIGRATE_FAIL`` set. v1 runs as NAME (behind the edge) and NAME-worker; v2 and v3 are shipped
while the bounded load generator of test_ship_release sends requests through the edge. Short windows: one
canary step at 50 %, 3 s windows, a 6 s watch of the worker.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from tests.helpers import GROCKER, free_port, grocker, remove_images
from tests.integration.test_ship_release import COMMON, Load, push_app_image, services, stable_image, versions

APP = '''
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "{version}"

if sys.argv[1:] == ["worker"]:
    print(f"worker v{{VERSION}} started", flush=True)
    started = time.monotonic()
    while True:
        time.sleep(0.5)
        if os.environ.get("WORKER_CRASH") and time.monotonic() - started > 3:
            print(f"worker v{{VERSION}} crashing: cannot reach the queue", flush=True)
            sys.exit(3)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"version": VERSION}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


SERVER = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
SERVER.daemon_threads = True
SERVER.serve_forever()
'''

MIGRATE = '''
import os, socket, sys

print("database:", os.environ.get("DATABASE_URL"))
print("web service at", socket.gethostbyname(os.environ["WEB"]))
if os.environ.get("MIGRATE_FAIL"):
    print("migration 0042_add_column failed: column exists")
    sys.exit(2)
print("migrations applied")
'''

WATCH = ["--canary-steps", "50,100", "--canary-window", "3", "--min-requests", "10", "--max-inconclusive", "3",
         "--drain", "1", "--services-watch", "6"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, registry: str, client: docker.DockerClient,
           run_id: str) -> Iterator[dict[str, str]]:
    repo = f"{registry}/grocker-test/ship-multi"
    refs = {}
    for version in ("1", "2", "3"):
        refs[version] = push_app_image(client, tmp_path_factory.mktemp(f"ship-multi-v{version}"), repo,
                                       f"{run_id}-v{version}", {"app.py": APP.format(version=version),
                                                                "migrate.py": MIGRATE})
    yield refs
    remove_images(client, *refs.values())


@pytest.fixture(scope="module")
def production(images: dict[str, str], run_id: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """v1 as NAME (published) and NAME-worker; the project names the pre-deploy job and the worker."""
    name = f"shipm-{run_id[:6]}"
    port = free_port()
    project = tmp_path_factory.mktemp("ship-multi-project")
    (project / "pyproject.toml").write_text(
        '[tool.grocker]\npre-deploy = "python3 /migrate.py"\n\n'
        '[tool.grocker.services]\nworker = { command = "worker", replicas = 1 }\n\n'
        '[tool.grocker.watch]\nbake = 0\n')  # the drift watch has its own tests (test_ship_release.py)
    env_file = project / "production.env"
    env_file.write_text("DATABASE_URL=postgres://db.internal/shop\n")
    run = grocker("deploy", images["1"], "--name", name, "--publish", f"127.0.0.1:{port}:8000",
                  "--env-file", str(env_file), *COMMON)
    assert run.code == 0, run.err[-3000:]
    run = grocker("deploy", images["1"], "--name", f"{name}-worker", "--command", "worker",
                  "--env-file", str(env_file), *COMMON)
    assert run.code == 0, run.err[-3000:]
    yield {"name": name, "url": f"http://127.0.0.1:{port}/", "project": project, "state": project / "state",
           "env_file": env_file}
    for service in (f"{name}-canary", f"{name}-worker", name):
        subprocess.run([*GROCKER, "stop", service], capture_output=True)


def ship(production: dict[str, Any], image: str, report: Path, *extra: str) -> Any:
    return grocker("ship", image, "--name", production["name"], "--project", str(production["project"]),
                   "--state-dir", str(production["state"]), "--env-file", str(production["env_file"]),
                   "--env", f"WEB={production['name']}", *COMMON, *WATCH, *extra, report=report, timeout=600)


def history(name: str) -> list[dict[str, Any]]:
    out = subprocess.run([*GROCKER, "history", name, "--json"], capture_output=True, text=True).stdout
    return list(json.loads(out))


def test_a_failing_pre_deploy_job_deploys_nothing(production: dict[str, Any], images: dict[str, str],
                                                  client: docker.DockerClient, tmp_path: Path) -> None:
    name = production["name"]
    web, worker = stable_image(client, name), stable_image(client, f"{name}-worker")
    run = ship(production, images["2"], tmp_path / "report.json", "--env", "MIGRATE_FAIL=1")
    assert run.code == 15, run.err[-3000:]
    errors = [line for line in run.err.splitlines() if line.startswith("grocker: error:")]
    assert len(errors) == 1 and "pre-deploy job failed (exit code 2)" in errors[0], errors
    assert "nothing was deployed" in errors[0]
    report = run.report
    assert report is not None and report["status"] == "failed-pre-deploy", report
    job = report["pre_deploy"]
    assert job["exit_code"] == 2 and job["command"] == "python3 /migrate.py"
    assert "@sha256:" in job["image"] and job["image"] == report["pinned"]
    # It ran with production's env file, on the service's overlay network, and its output is in the report.
    assert "database: postgres://db.internal/shop" in job["tail"] and "web service at " in job["tail"]
    assert "migration 0042_add_column failed" in job["tail"]
    # Nothing deployed: no canary, both services on v1.
    assert stable_image(client, name) == web and stable_image(client, f"{name}-worker") == worker
    assert services(client, name) == {name, f"{name}-worker"}
    assert versions(production["url"]) == {"1"}
    last = history(name)[-1]
    assert last["action"] == "pre-deploy" and last["status"] == "failed" and last["exit_code"] == 2


def test_web_and_worker_are_promoted_together(production: dict[str, Any], images: dict[str, str],
                                              client: docker.DockerClient, tmp_path: Path) -> None:
    name = production["name"]
    # Production scaled by hand since its deploy: a ship without --replicas keeps its count.
    client.services.get(name).scale(2)
    load = Load(production["url"])
    load.start()
    run = ship(production, images["2"], tmp_path / "report.json")
    load.stop()
    assert run.code == 0, run.err[-3000:]
    report = run.report
    assert report is not None and report["status"] == "promoted", report
    assert client.services.get(name).attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    pinned = report["pinned"]
    assert report["pre_deploy"]["exit_code"] == 0 and "migrations applied" in report["pre_deploy"]["tail"]
    worker = report["services"]["worker"]
    assert worker["status"] == "deployed" and worker["failures"] == [] and worker["pinned"] == pinned
    # Both services on the new digest; the worker runs its command; no request failed meanwhile.
    assert stable_image(client, name) == pinned and stable_image(client, f"{name}-worker") == pinned
    spec = client.services.get(f"{name}-worker").attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["Args"] == ["worker"]
    assert versions(production["url"]) == {"2"}
    assert load.failures == [] and {status for status, _ in load.answers} == {200}
    events = [e["event"] for e in report["timeline"]]
    assert events.index("pre-deploy job passed") < events.index("canary deployed")
    assert events.index("services held") < events.index("promoted")
    records = history(name)
    assert [r["action"] for r in records[-3:]] == ["pre-deploy", "deploy", "ship"]
    assert records[-1]["status"] == "promoted"
    assert history(f"{name}-worker")[-1]["pinned"] == pinned


def test_a_crashing_worker_rolls_the_whole_release_back(production: dict[str, Any], images: dict[str, str],
                                                        client: docker.DockerClient, tmp_path: Path) -> None:
    name = production["name"]
    web, worker = stable_image(client, name), stable_image(client, f"{name}-worker")
    load = Load(production["url"])
    load.start()
    run = ship(production, images["3"], tmp_path / "report.json", "--env", "WORKER_CRASH=1")
    load.stop()
    assert run.code == 15, run.err[-3000:]
    report = run.report
    assert report is not None and report["status"] == "rolled-back", report
    assert f"{name}-worker ended within the watch" in report["error"]["message"]
    failure = report["services"]["worker"]["failures"][0]
    assert failure["exit_code"] == 3 and "crashing: cannot reach the queue" in failure["log_tail"]
    assert report["services"]["worker"]["rolled_back_to"] == worker
    # Web (never promoted: its canary removed) and worker back on the previous release's digest.
    assert stable_image(client, name) == web and stable_image(client, f"{name}-worker") == worker
    assert services(client, name) == {name, f"{name}-worker"}
    assert versions(production["url"]) == {"2"}
    assert load.failures == []
    assert client.services.get(f"{name}-worker").attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"] == ["worker"]
    last = history(name)[-1]
    assert last["action"] == "ship" and last["status"] == "rolled-back" and "worker" in last["reason"]
    assert history(f"{name}-worker")[-1]["action"] == "rollback"


def test_a_controller_killed_while_the_worker_is_watched_is_undone_by_the_next_run(
        production: dict[str, Any], images: dict[str, str], client: docker.DockerClient, tmp_path: Path) -> None:
    name = production["name"]
    web, worker = stable_image(client, name), stable_image(client, f"{name}-worker")
    state = production["state"] / f"ship-{name}.json"
    argv = ["ship", images["3"], "--name", name, "--project", str(production["project"]),
            "--state-dir", str(production["state"]), "--env-file", str(production["env_file"]),
            "--env", f"WEB={name}", *COMMON, *WATCH, "--services-watch", "120"]
    load = Load(production["url"])
    load.start()
    proc = subprocess.Popen([*GROCKER, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if (state.exists() and json.loads(state.read_text()).get("phase") == "services"
                    and stable_image(client, f"{name}-worker") != worker):
                break
            assert proc.poll() is None, "ship ended before its services were released"
            time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        load.stop()
    assert stable_image(client, f"{name}-worker") != worker and f"{name}-canary" in services(client, name)
    # The next run (its pre-deploy job fails) first puts the worker back and removes the canary.
    run = ship(production, images["3"], tmp_path / "report.json", "--env", "MIGRATE_FAIL=1")
    assert run.code == 15, run.err[-3000:]
    report = run.report
    assert report is not None and report["status"] == "failed-pre-deploy"
    events = [e["event"] for e in report["timeline"]]
    assert events[0].startswith("unfinished release found") and "service rolled back" in events
    assert stable_image(client, name) == web and stable_image(client, f"{name}-worker") == worker
    assert services(client, name) == {name, f"{name}-worker"}
    assert versions(production["url"]) == {"2"} and load.failures == []
