"""`grocker ship` on a real Swarm (single node, 127.0.0.1) behind the real HAProxy edge.

A tiny application (the standard library's HTTP server on the bootstrapped base) answers ``/`` with its version,
and 500 to every FAIL_EVERY-th request when that variable is set, and SLOW_MS later to every request from
SLOW_AFTER seconds after it started (v4: a release that passes its canary and gets slow in production); its
image carries the labels a grocker build sets for ``grocker diff`` (``io.grocker.distributions``: the app's own
distribution at its version; ``org.opencontainers.image.version``) and the functional tests (``/functional.py``:
20 requests to ``$GROCKER_TARGET_URL``, any 500 fails).
v1 is deployed with ``grocker deploy --publish``; v2 (good), v3 (same code, another version) and v4 are shipped
while a bounded load generator sends requests through the edge. Windows are short (4 s) and the steps few (25,
50, 100).
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest

from setuptools_grocker.deploy.edge import Edge
from setuptools_grocker.engine import Engine
from setuptools_grocker.progress import Progress
from tests.helpers import BASE_IMAGE, GROCKER, free_port, grocker, install_plugin, pythonpath, remove_images

APP = '''
import itertools, json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "{version}"
FAIL_EVERY = int(os.environ.get("FAIL_EVERY") or 0)
SLOW_AFTER = float(os.environ.get("SLOW_AFTER") or 0)
SLOW_MS = float(os.environ.get("SLOW_MS") or 0)
SLOW_SINCE = time.time() + SLOW_AFTER if SLOW_MS else None
COUNT = itertools.count(1)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with LOCK:
            n = next(COUNT)
        code = 500 if FAIL_EVERY and n % FAIL_EVERY == 0 else 200
        if code == 500:
            print(f"ERROR request {{n}}: simulated failure", file=sys.stderr, flush=True)
        slow = SLOW_SINCE is not None and time.time() >= SLOW_SINCE
        if slow:
            time.sleep(SLOW_MS / 1000)
        body = json.dumps({{"version": VERSION, "slow_since": SLOW_SINCE if slow else None}}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


SERVER = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
SERVER.daemon_threads = True
SERVER.serve_forever()
'''

FUNCTIONAL = '''
import os, sys, time, urllib.error, urllib.request

url = os.environ["GROCKER_TARGET_URL"] + "/"
deadline = time.time() + 60
while True:
    try:
        urllib.request.urlopen(url, timeout=5).read()
        break
    except urllib.error.HTTPError:
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the staging service never answered")
        time.sleep(0.5)
failures = 0
for i in range(20):
    try:
        urllib.request.urlopen(url, timeout=5).read()
    except urllib.error.HTTPError as exc:
        failures += 1
        print(f"FAILED test_home_page[{i}]: HTTP {exc.code}")
print(f"{failures} of 20 functional requests failed")
sys.exit(1 if failures else 0)
'''

COMMON = ["--health-interval", "1", "--start-period", "3", "--monitor", "1", "--edge-base", BASE_IMAGE]


class Load(threading.Thread):
    """A bounded load generator: a request every 20 ms on a new connection, until stopped or 600 s passed."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[int, str | None]] = []
        #: (when it was answered, its version, since when its task is slow: None when it is not)
        self.timed: list[tuple[float, str | None, float | None]] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 600
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    answer = json.loads(resp.read())
                    self.answers.append((resp.status, answer["version"]))
                    self.timed.append((time.time(), answer["version"], answer.get("slow_since")))
            except urllib.error.HTTPError as exc:
                self.answers.append((exc.code, None))
                self.timed.append((time.time(), f"HTTP {exc.code}", None))
            except OSError as exc:
                self.failures.append(str(exc))
            time.sleep(0.02)

    def stop(self) -> Load:
        self._stop_event.set()
        self.join(30)
        return self


def push_app_image(client: docker.DockerClient, root: Path, repo: str, tag: str, files: dict[str, str],
                   labels: dict[str, str] | None = None) -> str:
    """A test application's image: ``files`` (``app.py`` first, run as the entrypoint) on the bootstrapped base,
    non-root under tini, built and pushed to ``repo:tag``; its reference."""
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nCOPY {' '.join(files)} /\nUSER 10001\n"
        'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/python3", "/app.py"]\n')
    client.images.build(path=str(root), tag=f"{repo}:{tag}", rm=True, labels=labels or {})
    for line in client.images.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    return f"{repo}:{tag}"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, registry: str, client: docker.DockerClient,
           run_id: str) -> Iterator[dict[str, str]]:
    repo = f"{registry}/grocker-test/ship-app"
    refs = {}
    for version in ("1", "2", "3", "4"):
        refs[version] = push_app_image(
            client, tmp_path_factory.mktemp(f"ship-app-v{version}"), repo, f"{run_id}-v{version}",
            {"app.py": APP.format(version=version), "functional.py": FUNCTIONAL},
            {"io.grocker.distributions": json.dumps([f"ship-app=={version}", "certifi==2024.2.2"]),
             "org.opencontainers.image.version": version})
    yield refs
    remove_images(client, *refs.values())


@pytest.fixture(scope="module")
def production(images: dict[str, str], run_id: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    name = f"ship-{run_id[:6]}"
    port = free_port()
    project = tmp_path_factory.mktemp("ship-project")
    (project / "pyproject.toml").write_text(
        '[tool.grocker]\nfunctional-tests = "python3 /functional.py"\n\n'
        "[tool.grocker.canary]\nsteps = [25, 50, 100]\nwindow = 4\nmin-requests = 15\nmax-inconclusive = 2\n\n"
        "[tool.grocker.watch]\nbake = 0\nwindow = 4\nmin-requests = 10\nfail-windows = 2\n")
    run = grocker("deploy", images["1"], "--name", name, "--publish", f"127.0.0.1:{port}:8000", *COMMON)
    assert run.code == 0, run.err[-3000:]
    yield {"name": name, "url": f"http://127.0.0.1:{port}/", "project": project, "state": project / "state"}
    for service in (f"{name}-canary", f"{name}-staging", name):
        subprocess.run([*GROCKER, "stop", service], capture_output=True)


@pytest.fixture(scope="module")
def testkit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The testkit plugin (tests/packages), installed as the plugin tests install it: its grocker_incident
    records what it was sent."""
    return pythonpath(install_plugin(tmp_path_factory, "grocker-plugin-testkit"))


def ship(production: dict[str, Any], image: str, report: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    return grocker("ship", image, "--name", production["name"], "--project", str(production["project"]),
                   "--state-dir", str(production["state"]), "--drain", "2", *COMMON, *extra, report=report,
                   timeout=600, env=env)


def events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def versions(url: str, n: int = 20) -> set[str]:
    seen = set()
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=10) as resp:
            seen.add(json.loads(resp.read())["version"])
    return seen


def services(client: docker.DockerClient, name: str) -> set[str]:
    return {s.name for s in client.services.list(filters={"name": name}) if s.name.startswith(name)}


def stable_image(client: docker.DockerClient, name: str) -> str:
    return str(client.services.get(name).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])


def test_failing_functional_tests_stop_the_release_at_staging(production: dict[str, Any], images: dict[str, str],
                                                              client: docker.DockerClient, tmp_path: Path) -> None:
    before = stable_image(client, production["name"])
    run = ship(production, images["2"], tmp_path / "report.json", "--staging-env", "FAIL_EVERY=2")
    assert run.code == 15, run.err[-3000:]
    errors = [line for line in run.err.splitlines() if line.startswith("grocker: error:")]
    assert len(errors) == 1 and "functional tests failed" in errors[0] and "production was not touched" in errors[0]
    report = run.report
    assert report is not None and report["status"] == "failed-staging"
    tests = report["functional_tests"]
    assert tests["exit_code"] == 1 and "FAILED test_home_page" in tests["tail"]
    assert "functional requests failed" in tests["tail"]
    assert tests["url"] == f"http://{production['name']}-staging:8000"
    # Production untouched; no staging or canary service left.
    assert stable_image(client, production["name"]) == before
    assert services(client, production["name"]) == {production["name"]}
    assert versions(production["url"]) == {"1"}


def test_a_canary_answering_500_to_one_in_five_is_rolled_back(production: dict[str, Any], images: dict[str, str],
                                                              client: docker.DockerClient, testkit: dict[str, str],
                                                              tmp_path: Path) -> None:
    name = production["name"]
    before = stable_image(client, name)
    load = Load(production["url"])
    load.start()
    # The testkit plugin receives the incident, then fails: the rollback and the report must not mind.
    log = tmp_path / "testkit.jsonl"
    run = ship(production, images["3"], tmp_path / "report.json", "--env", "FAIL_EVERY=5",
               env={**testkit, "TESTKIT_LOG": str(log), "TESTKIT_FAIL_INCIDENT": "1"})
    load.stop()
    assert run.code == 15, run.err[-3000:]
    report = run.report
    assert report is not None and report["status"] == "rolled-back", report
    verdict = report["verdict"]
    assert verdict["verdict"] == "fail" and verdict["reason"].startswith("canary errors"), verdict
    assert verdict["canary"]["requests"] >= 15 and 0.1 <= verdict["canary"]["error_rate"] <= 0.3
    assert verdict["stable"]["errors"] == 0 and verdict["errors_p"] < 0.01
    assert report["steps"][0]["share"] == 25 and report["steps"][0]["verdict"] == "fail"
    assert "rolled back at 25%" in report["error"]["message"]
    # All traffic back on v1; the canary is gone from the edge and the Swarm; production's errors stayed
    # within the canary's share of its error rate (25 % of 20 %), and no request failed outright.
    assert stable_image(client, name) == before
    assert services(client, name) == {name}
    assert versions(production["url"]) == {"1"}
    with Engine(Progress(quiet=True)) as engine:
        assert [p.service for p in Edge(engine, name).pools()] == [name]
    assert load.failures == []
    errors = sum(1 for status, _ in load.answers if status >= 500)
    assert len(load.answers) > 100 and errors / len(load.answers) < 0.25 * 0.2 * 1.5, (errors, len(load.answers))
    state = json.loads((production["state"] / f"ship-{name}.json").read_text())
    assert state["phase"] == "rolled-back"
    # The verdict is in the service's history; a `grocker rollback` still goes over deploys only.
    history = json.loads(subprocess.run([*GROCKER, "history", name, "--json"], capture_output=True,
                                        text=True).stdout)
    assert history[-1]["action"] == "ship" and history[-1]["status"] == "rolled-back"
    assert history[-1]["reason"] == verdict["reason"] and history[-1]["steps"] == [[25, "fail"]]
    assert history[-1]["incident"] == report["incident"]["json"]
    table = subprocess.run([*GROCKER, "history", name], capture_output=True, text=True).stdout
    assert "25%:fail" in table and f"incident: {report['incident']['json']}" in table
    # The incident report: JSON and Markdown in the state directory, naming the release and the one it went
    # back to, what changed between them, the canary's error rate, and the canary's last log lines.
    paths = {k: Path(v) for k, v in report["incident"].items()}
    assert paths["json"].parent == production["state"].resolve() / "incidents"
    assert paths["json"].name.startswith(f"{name}-") and paths["markdown"].with_suffix(".json") == paths["json"]
    incident = json.loads(paths["json"].read_text())
    assert incident["release"]["pinned"] == report["pinned"] and incident["release"]["version"] == "3"
    assert incident["went_back_to"]["pinned"] == before and incident["went_back_to"]["version"] == "1"
    assert incident["changes"]["changed"] == {"ship-app": {"from": "1", "to": "3"}}
    assert incident["changes"]["unchanged"] == 1 and incident["changes"]["source"] == "labels"
    assert "no provenance" in incident["release"]["provenance"]["error"]  # a plain docker build records none
    assert incident["windows"][-1]["canary"] == verdict["canary"] and incident["windows"][-1]["source"] == "edge"
    assert incident["windows"][-1]["canary"]["p99_ms"] is not None
    logged = [line for task in incident["logs"]["tasks"] for line in task["lines"]]
    assert incident["logs"]["service"] == f"{name}-canary"
    assert any("simulated failure" in line for line in logged), logged
    assert any(e["event"] == "canary removed" for e in incident["timeline"])
    text = paths["markdown"].read_text()
    assert f"# Incident: {name} rolled back" in text and report["pinned"] in text and before in text
    rate = verdict["canary"]["errors"] / verdict["canary"]["requests"]
    assert "~ ship-app 1 -> 3" in text and f"| {verdict['canary']['errors']} | {rate:.1%} |" in text
    assert "simulated failure" in text
    # The plugin got it through grocker_incident; its failure was one warning line.
    sent = [e for e in events(log) if e["event"] == "incident"]
    assert len(sent) == 1 and sent[0]["release"] == report["pinned"] and sent[0]["went_back_to"] == before
    assert sent[0]["paths"] == report["incident"] and sent[0]["markdown_exists"] is True
    warnings = [line for line in run.err.splitlines() if "failed in grocker_incident" in line]
    assert len(warnings) == 1 and "plugin 'testkit'" in warnings[0] and str(paths["json"]) in warnings[0]


def test_a_good_canary_is_promoted_without_a_failed_request(production: dict[str, Any], images: dict[str, str],
                                                           client: docker.DockerClient, tmp_path: Path) -> None:
    name = production["name"]
    load = Load(production["url"])
    load.start()
    run = ship(production, images["2"], tmp_path / "report.json")
    load.stop()
    assert run.code == 0, run.err[-3000:]
    report = run.report
    assert report is not None and report["status"] == "promoted", report
    assert [s["verdict"] for s in report["steps"]] == ["pass", "pass"]
    assert report["functional_tests"]["exit_code"] == 0
    # The stable service runs the new digest; the canary is gone; every request is served by v2.
    assert stable_image(client, name) == report["pinned"] and "@sha256:" in report["pinned"]
    assert services(client, name) == {name}
    assert versions(production["url"], 30) == {"2"}
    # The load generator saw no failed request during the whole release, promotion included.
    assert load.failures == []
    assert {status for status, _ in load.answers} == {200}
    assert {v for _, v in load.answers} == {"1", "2"}
    history = json.loads(subprocess.run([*GROCKER, "history", name, "--json"], capture_output=True,
                                        text=True).stdout)
    assert history[-1]["action"] == "ship" and history[-1]["status"] == "promoted"
    assert history[-2]["action"] == "deploy" and history[-2]["pinned"] == report["pinned"]


def test_a_controller_killed_mid_canary_leaves_weight_zero_on_the_next_run(
        production: dict[str, Any], images: dict[str, str], client: docker.DockerClient, tmp_path: Path) -> None:
    name = production["name"]
    state = production["state"] / f"ship-{name}.json"
    proc = subprocess.Popen([*GROCKER, "ship", images["3"], "--name", name, "--project", str(production["project"]),
                             "--state-dir", str(production["state"]), "--canary-window", "120", *COMMON],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if state.exists() and json.loads(state.read_text()).get("share") == 25:
                break
            assert proc.poll() is None, "ship ended before its first canary step"
            time.sleep(0.5)
        with Engine(Progress(quiet=True)) as engine:
            edge = Edge(engine, name)
            deadline = time.monotonic() + 30
            while edge.weights().get(f"{name}-canary") != 33 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert edge.weights()[f"{name}-canary"] == 33
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"{name}-canary" in services(client, name)
    # The next run finds the unfinished state: canary at weight 0 and removed, before anything else.
    run = ship(production, images["3"], tmp_path / "report.json", "--staging-env", "FAIL_EVERY=2")
    assert run.code == 15, run.err[-3000:]
    report = run.report
    assert report is not None and report["timeline"][0]["event"].startswith("unfinished release found")
    assert services(client, name) == {name}
    with Engine(Progress(quiet=True)) as engine:
        assert Edge(engine, name).weights() == {name: 100}
    assert versions(production["url"]) == {"2"}


# v4 passes its canary (one 4 s window at 50 %) and gets 200 ms slower 20 s after its tasks started: in
# production, after the promotion (users' default bake window: 600 s; windows of 60 s).
SLOW = ["--env", "SLOW_AFTER=20", "--env", "SLOW_MS=200", "--canary-steps", "50,100"]


def _at(event: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(event["at"]).timestamp()


def _event(report: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(e for e in report["timeline"] if e["event"].startswith(prefix))


def _slow_since(load: Load, before: float) -> float:
    """Since when the task that answered last before ``before`` was slow (the app says so in its answers)."""
    return next(since for at, _, since in reversed(load.timed) if at < before and since is not None)


def test_a_release_that_gets_slow_is_rolled_back_in_the_bake_window(
        production: dict[str, Any], images: dict[str, str], client: docker.DockerClient, tmp_path: Path) -> None:
    name = production["name"]
    before = stable_image(client, name)
    old = versions(production["url"], 5)
    load = Load(production["url"])
    load.start()
    run = ship(production, images["4"], tmp_path / "report.json", *SLOW, "--bake", "60")
    load.stop()
    assert run.code == 15, run.err[-3000:]
    errors = [line for line in run.err.splitlines() if line.startswith("grocker: error:")]
    assert len(errors) == 1 and "drifted in the bake window" in errors[0] and f"rolled back to {before}" in errors[0]
    report = run.report
    assert report is not None and report["status"] == "rolled-back" and report["phase"] == "bake", report
    assert [s["verdict"] for s in report["steps"]] == ["pass"]
    assert report["baseline"]["requests"] >= 10 and report["reverted_to"] == before
    verdict = report["verdict"]
    assert verdict["verdict"] == "fail" and verdict["reason"].startswith("production slower"), verdict
    assert verdict["production"]["median_ms"] - verdict["baseline"]["median_ms"] > 100
    verdicts = [w["verdict"] for w in report["windows"]]
    assert verdicts[-2:] == ["fail", "fail"] and "pass" in verdicts, verdicts  # not slow yet: no false alarm
    # Traffic back on the previous digest with its configuration (no SLOW_* variables); no canary left; not one
    # request of the load generator failed.
    assert stable_image(client, name) == before
    env = client.services.get(name).attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []
    assert not [e for e in env if e.startswith("SLOW_")]
    assert services(client, name) == {name}
    assert versions(production["url"]) == old
    bad = [(round(at, 2), what) for at, what, _ in load.timed if what and what.startswith("HTTP")]
    with Engine(Progress(quiet=True)) as engine:
        edge_errors = [r for r in Edge(engine, name).requests() if r.status >= 500]
    assert load.failures == [] and {status for status, _ in load.answers} == {200}, (
        bad, edge_errors, [(round(_at(e), 2), e["event"]) for e in report["timeline"]])
    history = json.loads(subprocess.run([*GROCKER, "history", name, "--json"], capture_output=True,
                                        text=True).stdout)
    assert history[-1]["action"] == "ship" and history[-1]["status"] == "rolled-back"
    assert history[-1]["reason"].startswith("drift in the bake window: production slower")
    # The drift's incident report: the release, the one it went back to, the windows against the baseline.
    incident = json.loads(Path(report["incident"]["json"]).read_text())
    assert history[-1]["incident"] == report["incident"]["json"]
    assert incident["release"]["pinned"] == report["pinned"] and incident["went_back_to"]["pinned"] == before
    assert incident["reason"].startswith("drift in the bake window") and incident["windows"][-1]["verdict"] == "fail"
    assert Path(report["incident"]["markdown"]).read_text().count("production slower") >= 1
    assert history[-2]["action"] == "rollback" and history[-2]["pinned"] == before
    assert history[-2]["from"] == report["pinned"]
    # Measured: slowdown to verdict, verdict to all traffic on the previous release, and to the rollback's end.
    verdict_at = _at(_event(report, "drift"))
    back_at = _at(_event(report, "all traffic on the previous release"))
    done = _event(report, "rolled back")
    print(f"\nMEASURED v4 bake: detection {verdict_at - _slow_since(load, verdict_at):.1f}s after the slowdown, "
          f"traffic back {back_at - verdict_at:.1f}s after the verdict, rollback done in {done['seconds']}s, "
          f"{len(load.failures)} failed and {sum(1 for s, _ in load.answers if s >= 500)} 5xx "
          f"of {len(load.answers)} requests")


def test_an_irreversible_release_that_drifts_is_alerted_by_the_watch_not_rolled_back(
        production: dict[str, Any], images: dict[str, str], client: docker.DockerClient, tmp_path: Path) -> None:
    name = production["name"]
    load = Load(production["url"])
    load.start()
    try:
        run = ship(production, images["4"], tmp_path / "ship.json", *SLOW, "--irreversible")
        assert run.code == 0, run.err[-3000:]
        assert run.report is not None and run.report["status"] == "promoted"
        pinned = run.report["pinned"]
        watch_args = ["watch", name, "--project", str(production["project"]), "--state-dir", str(production["state"]),
                      "--drain", "2", *COMMON]
        watch = grocker(*watch_args, "--windows", "12", report=tmp_path / "watch.json", timeout=300)
        history = json.loads(subprocess.run([*GROCKER, "history", name, "--json"], capture_output=True,
                                            text=True).stdout)
        # A watch started again goes on from its state (baseline, failing windows): one more failing window is
        # the drift again, alerted again, but not written twice into the history.
        again = grocker(*watch_args, "--once", report=tmp_path / "again.json", timeout=120)
    finally:
        load.stop()
    assert watch.code == 15, watch.err[-3000:]
    errors = [line for line in watch.err.splitlines() if line.startswith("grocker: error:")]
    assert len(errors) == 1 and "drifted in the watch" in errors[0] and "not rolled back: it is irreversible" in \
        errors[0], errors
    report = watch.report
    assert report is not None and report["status"] == "alert" and report["pinned"] == pinned, report
    assert report["timeline"][0]["event"] == "baseline from the state"  # the one ship took before the canary
    assert report["verdict"]["reason"].startswith("production slower")
    assert [w["verdict"] for w in report["windows"]][-2:] == ["fail", "fail"]
    # Still on the irreversible release; the alert is in its history and in the watch's state.
    assert stable_image(client, name) == pinned
    assert services(client, name) == {name}
    assert versions(production["url"], 5) == {"4"}
    assert history[-1]["action"] == "ship" and history[-1]["status"] == "alert"
    assert history[-1]["reason"].endswith("not rolled back: it is irreversible")
    assert history[-1]["incident"] == report["incident"]["json"]  # the alert goes to grocker_incident too
    assert json.loads(Path(report["incident"]["json"]).read_text())["went_back_to"] is None
    assert any(r["status"] == "irreversible" and r["pinned"] == pinned for r in history)
    state = json.loads((production["state"] / f"watch-{name}.json").read_text())
    assert state["phase"] == "alert" and state["alerted"] == pinned
    assert again.code == 15 and again.report is not None and again.report["status"] == "alert", again.err[-3000:]
    assert again.report["timeline"][0]["event"] == "baseline from the state"
    assert [w["verdict"] for w in again.report["windows"]][-1] == "fail"
    assert json.loads(subprocess.run([*GROCKER, "history", name, "--json"], capture_output=True,
                                     text=True).stdout) == history
    assert load.failures == []
    verdict_at = _at(_event(report, "drift"))
    print(f"\nMEASURED v4 watch (irreversible): detection {verdict_at - _slow_since(load, verdict_at):.1f}s after "
          f"the slowdown, {len(load.failures)} failed of {len(load.answers)} requests")
