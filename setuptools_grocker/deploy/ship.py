"""``grocker ship IMAGE --name NAME``: staging, functional tests, canary, promotion or rollback.

1. **Staging.** The image is deployed as the service ``NAME-staging`` (the deployer: pinned by digest, health
   checked), with the ``--staging-env`` variables. The ``functional-tests`` command then runs by ``sh -c`` in a
   container of the image (or ``functional-tests-image``) on the staging service's overlay network, with
   ``GROCKER_TARGET_URL=http://NAME-staging:PORT``. A non-zero exit stops the release there: production is not
   touched, the report holds the tail of the tests' output. The staging service is removed either way (unless
   ``keep_staging``).
2. **Canary.** With no service NAME yet, the release is simply deployed (a first release has nothing to compare
   with). Otherwise it is deployed as ``NAME-canary`` (same configuration as production), added to NAME's edge
   as a second pool at weight 0 (a reload: connections in flight finish), and its share of the traffic grows
   along ``canary.steps``. At each step below 100 % the edge's request log of one window is judged
   (:mod:`setuptools_grocker.deploy.analysis`): ``pass`` goes to the next step, ``inconclusive`` waits another
   window (at most ``canary.max-inconclusive`` in a row), ``fail`` (or too many inconclusive windows) rolls
   the canary back: its weight 0, the stable's back to full, a drain, its pool out of the edge, its service
   removed.
3. **Promotion.** The stable service is never rolling-updated while it takes traffic: all the traffic goes to
   the canary first (canary weight up, stable weight 0), then the stable service is updated to the canary's
   digest (at weight 0: whatever its rolling update does, no request goes to it), its new tasks are awaited
   up in the edge, the traffic moves back to it (stable weight up, canary 0), and the canary is drained and
   removed. Each move is a runtime weight change: no reload, no dropped connection. Renaming roles instead
   (the canary service becoming "the" service) would change the service's name at each release, and with it
   its history, its secrets and what ``grocker deploy NAME`` means.

**State.** Every change of weight is written first to ``STATE_DIR/ship-NAME.json`` (atomically: a temporary
file renamed). A run that finds a state that is not final (the previous controller died) does not guess where
it stopped: it puts the stable back at full weight, the canary at 0, removes the canary, then starts over.
"""
from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from setuptools_grocker.config import Canary, Watch
from setuptools_grocker.deploy.analysis import Side, Verdict, judge
from setuptools_grocker.deploy.deployer import Deployer, DeployOptions, Publish, check_name, history
from setuptools_grocker.deploy.edge import DEFAULT_WEIGHT, MAX_WEIGHT, Edge, LoggedRequest, Pool, network_of
from setuptools_grocker.deploy.watch import (
    IRREVERSIBLE,
    Streak,
    WatchOptions,
    baseline_from_log,
    is_irreversible,
    judge_windows,
    side_from_json,
    side_json,
    watch_file,
)
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import DeployError
from setuptools_grocker.progress import Progress
from setuptools_grocker.report import write_json_atomic

TARGET_URL_VAR = "GROCKER_TARGET_URL"
#: Lines of the functional tests' output kept in the report.
TAIL_LINES = 40
FINAL = ("promoted", "rolled-back", "deployed", "unchanged", "failed-staging")


@dataclass
class ShipOptions:
    #: The production configuration of the release (as ``grocker deploy`` takes it); its name is NAME.
    deploy: DeployOptions
    functional_tests: str | None = None
    functional_tests_image: str | None = None
    #: The container port the staging URL names (default: the first route's target port).
    port: int | None = None
    staging_env: dict[str, str] = field(default_factory=dict)
    keep_staging: bool = False
    tests_timeout: float = 1800.0
    canary: Canary = Canary()
    #: Seconds a drained pool (weight 0) keeps its tasks before they are stopped.
    drain: float = 5.0
    state_dir: Path = Path(".grocker")
    #: The bake window and the baseline (``watch.*``).
    watch: Watch = Watch()
    #: From its promotion on, the release is never rolled back automatically: drift alerts instead.
    irreversible: bool = False


def state_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"ship-{name}.json"


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write the controller's state atomically (a reader sees the old file or the new one, never a part)."""
    write_json_atomic(path, state)


def read_state(path: Path) -> dict[str, Any] | None:
    """The state a previous run left; an unreadable one is an unknown state (treated as not final)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"phase": "unknown"}
    return data if isinstance(data, dict) else {"phase": "unknown"}


def weights_for(share: int) -> tuple[int, int]:
    """(stable, canary) weights that give the canary ``share`` percent of the requests (same task counts)."""
    if share >= 100:
        return 0, DEFAULT_WEIGHT
    return DEFAULT_WEIGHT, min(MAX_WEIGHT, max(1, round(DEFAULT_WEIGHT * share / (100 - share))))


def sides(requests: list[LoggedRequest], canary: str, stable: str, start: float, end: float) -> tuple[Side, Side]:
    """The canary's and the stable's requests logged in [start, end): errors are 5xx or no answer."""
    def side(service: str) -> Side:
        mine = [r for r in requests if r.service == service and start <= r.at < end]
        return Side(len(mine), sum(1 for r in mine if r.status >= 500 or r.status < 0),
                    tuple(r.total_ms for r in mine))
    return side(canary), side(stable)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class Shipper:
    def __init__(self, engine: Engine, progress: Progress) -> None:
        self.engine = engine
        self.progress = progress
        self.deployer = Deployer(engine, progress)
        self.report: dict[str, Any] = {}

    def _event(self, what: str, **details: Any) -> None:
        self.report["timeline"].append({"at": _now(), "event": what, **details})
        self.progress.info(what + "".join(f" {k}={v}" for k, v in details.items()))

    def ship(self, options: ShipOptions) -> dict[str, Any]:
        """Run the release; the report (``status``: promoted, deployed, unchanged, failed-staging, rolled-back).
        A release stopped at staging or rolled back is a report with ``error``, not an exception."""
        name = options.deploy.name
        check_name(name)
        for service in (f"{name}-staging", f"{name}-canary"):
            check_name(service)
        self.report = {"name": name, "image": options.deploy.image, "status": "running", "timeline": [],
                       "steps": []}
        stable = self.engine.service(name)
        records = history(self.engine, name) if stable is not None else []
        deployed = [r for r in records if r.get("status") == "deployed"]
        if not options.deploy.publish and deployed:
            options.deploy.publish = tuple(Publish.parse(p) for p in deployed[-1].get("publish", []))
        port = options.port or (options.deploy.publish[0].port if options.deploy.publish else None)
        if options.functional_tests and port is None:
            raise DeployError("no port to give the functional tests the staging URL of",
                              "give --port (the container port the application listens on) or --publish")
        path = state_file(options.state_dir, name)
        self._recover(name, path)
        if options.functional_tests:
            if not self._staging(options, port or 0):
                return self.report
        else:
            self._event("no functional-tests configured: staging skipped")
        if stable is None:
            record = self.deployer.deploy(options.deploy)
            self._event("first release deployed", pinned=record["pinned"])
            self.report.update(status="deployed", pinned=record["pinned"])
            return self.report
        if not options.deploy.publish:
            raise DeployError(f"{name} has no edge (it was deployed without --publish): a canary needs one",
                              f"deploy {name} with --publish first, or give --publish")
        baseline = self._take_baseline(name, options.watch)
        report = self._canary(options, path)
        if report["status"] != "promoted":
            return report
        return self._bake(options, baseline)

    # -- staging -------------------------------------------------------------------------
    def _staging(self, options: ShipOptions, port: int) -> bool:
        staging = f"{options.deploy.name}-staging"
        opts = replace(options.deploy, name=staging, publish=(), env=dict(options.staging_env), env_files=())
        start = time.monotonic()
        try:
            record = self.deployer.deploy(opts)
            self._event("staging deployed", service=staging, pinned=record["pinned"])
            url = f"http://{staging}:{port}"
            command = options.functional_tests or ""
            with self.progress.stage(f"functional tests against {url}"):
                result = self.engine.run(options.functional_tests_image or record["pinned"], [command],
                                         entrypoint=["sh", "-c"], env={TARGET_URL_VAR: url},
                                         network=network_of(staging), timeout=options.tests_timeout)
            self.report["functional_tests"] = {
                "command": command, "url": url, "exit_code": result.exit_code,
                "seconds": round(time.monotonic() - start, 1), "tail": result.tail(TAIL_LINES)}
        finally:
            if not options.keep_staging and self.engine.service(staging) is not None:
                self.deployer.stop(staging)
        if result.exit_code != 0:
            self._event("functional tests failed", exit_code=result.exit_code)
            self.report.update(status="failed-staging", error={
                "message": f"the functional tests failed against {staging} (exit code {result.exit_code}); "
                           "production was not touched",
                "hint": "see functional_tests.tail in the report, fix the release and ship it again"})
            return False
        self._event("functional tests passed")
        return True

    # -- canary --------------------------------------------------------------------------
    def _recover(self, name: str, path: Path) -> None:
        """A previous run that did not finish: stable at full weight, canary at 0 and removed."""
        state = read_state(path)
        if state is None or state.get("phase") in FINAL:
            return
        self._event("unfinished release found: canary to weight 0", previous=state.get("phase"))
        canary = f"{name}-canary"
        edge = Edge(self.engine, name)
        if self.engine.container_labels(edge.container) is not None:
            pools = {p.service for p in edge.pools()}
            if name in pools:
                edge.set_weight(name, DEFAULT_WEIGHT)
            if canary in pools:
                edge.set_weight(canary, 0)
                edge.set_pools([Pool(name)])
        if self.engine.service(canary) is not None:
            self.deployer.stop(canary)
        write_state(path, {**state, "phase": "rolled-back", "recovered_at": _now()})

    def _canary(self, options: ShipOptions, path: Path) -> dict[str, Any]:
        name = options.deploy.name
        canary = f"{name}-canary"
        edge = Edge(self.engine, name)
        state: dict[str, Any] = {"name": name, "canary": canary, "image": options.deploy.image, "phase": "starting",
                                 "share": 0, "weights": {name: DEFAULT_WEIGHT, canary: 0}}

        def save(**changes: Any) -> None:
            state.update(changes, updated=_now())
            write_state(path, state)

        save()
        record = self.deployer.deploy(replace(options.deploy, name=canary, publish=()))
        pinned = record["pinned"]
        stable_pinned = (self.engine.service(name) or {}).get("Spec", {}).get("TaskTemplate", {}) \
            .get("ContainerSpec", {}).get("Image")
        self.report.update(pinned=pinned, stable=stable_pinned)
        if stable_pinned == pinned:
            self.deployer.stop(canary)
            save(phase="unchanged")
            self.report["status"] = "unchanged"
            return self.report
        self._event("canary deployed", service=canary, pinned=pinned)
        try:
            return self._steps(options, edge, canary, pinned, save)
        except BaseException as exc:  # an edge or engine error, an interrupt: the canary goes, then the error
            self._event("release interrupted: canary to weight 0", error=str(exc) or type(exc).__name__)
            try:
                self._rollback(edge, name, canary, replace(options, drain=0), save)
            except Exception as again:  # the next run recovers from the state file
                self._event("could not remove the canary; the next run will", error=str(again))
            raise

    def _steps(self, options: ShipOptions, edge: Edge, canary: str, pinned: str, save: Any) -> dict[str, Any]:
        name = options.deploy.name
        settings = options.canary
        edge.set_pools([Pool(name, DEFAULT_WEIGHT), Pool(canary, 0)])
        save(phase="canary")
        for share in settings.steps:
            if share >= 100:
                break
            stable_w, canary_w = weights_for(share)
            save(share=share, weights={name: stable_w, canary: canary_w})
            edge.set_weight(canary, canary_w)
            self._event("canary share", percent=share, weight=canary_w)
            step: dict[str, Any] = {"share": share, "windows": []}
            self.report["steps"].append(step)
            verdict = self._judge_step(edge, name, canary, settings, step)
            step["verdict"] = verdict.verdict
            if verdict.verdict != "pass":
                self._rollback(edge, name, canary, options, save)
                self._record(name, pinned, "rolled-back", verdict.reason)
                self.report.update(status="rolled-back", verdict=verdict.to_json(), error={
                    "message": f"the canary of {pinned} was rolled back at {share}%: {verdict.reason}",
                    "hint": "production runs the stable release; see steps in the report"})
                return self.report
        self._promote(edge, name, canary, pinned, options, save)
        self._record(name, pinned, "promoted", "every step passed")
        self.report["status"] = "promoted"
        return self.report

    def _record(self, name: str, pinned: str, status: str, reason: str) -> None:
        """The release's outcome and verdicts in NAME's history (`grocker history NAME`)."""
        self.deployer.add_record(name, {
            "action": "ship", "pinned": pinned, "status": status, "reason": reason,
            "steps": [[step["share"], step.get("verdict")] for step in self.report["steps"]]})

    def _judge_step(self, edge: Edge, name: str, canary: str, settings: Canary, step: dict[str, Any]) -> Verdict:
        inconclusive = 0
        while True:
            start = time.time()
            time.sleep(settings.window)
            end = time.time()
            c, s = sides(edge.requests(since=int(start)), canary, name, start, end)
            verdict = judge(c, s, min_requests=settings.min_requests, alpha=settings.alpha,
                            latency_margin_ms=settings.latency_margin_ms)
            step["windows"].append(verdict.to_json())
            self._event(f"window: {verdict.verdict}", reason=verdict.reason)
            if verdict.verdict != "inconclusive":
                return verdict
            inconclusive += 1
            if inconclusive >= settings.max_inconclusive:
                return Verdict("inconclusive", f"{inconclusive} inconclusive windows in a row: {verdict.reason}",
                               verdict.canary, verdict.stable)

    def _rollback(self, edge: Edge, name: str, canary: str, options: ShipOptions, save: Any) -> None:
        started = time.monotonic()
        save(phase="rolling-back", weights={name: DEFAULT_WEIGHT, canary: 0})
        pools = {p.service for p in edge.pools()}
        if canary in pools:
            edge.set_weight(canary, 0)
        edge.set_weight(name, DEFAULT_WEIGHT)
        self._event("canary weight 0: all traffic on the stable release")
        time.sleep(options.drain)
        if canary in pools:
            edge.set_pools([Pool(name)])
        if self.engine.service(canary) is not None:
            self.deployer.stop(canary)
        save(phase="rolled-back")
        self._event("canary removed", seconds=round(time.monotonic() - started, 1))

    def _promote(self, edge: Edge, name: str, canary: str, pinned: str, options: ShipOptions, save: Any) -> None:
        started = time.monotonic()
        save(phase="promoting", share=100, weights={name: 0, canary: DEFAULT_WEIGHT})
        edge.set_weight(canary, DEFAULT_WEIGHT)
        edge.set_weight(name, 0)
        self._event("all traffic on the canary; updating the stable service at weight 0")
        time.sleep(options.drain)
        self.deployer.deploy(replace(options.deploy, image=pinned))
        self._wait_up(edge, name, options.deploy.replicas, options.deploy.timeout)
        save(weights={name: DEFAULT_WEIGHT, canary: 0})
        edge.set_weight(name, DEFAULT_WEIGHT)
        edge.set_weight(canary, 0)
        self._event("traffic back on the stable service, now on the new release", pinned=pinned)
        time.sleep(options.drain)
        edge.set_pools([Pool(name)])
        self.deployer.stop(canary)
        save(phase="promoted")
        self._event("promoted", seconds=round(time.monotonic() - started, 1))

    def _wait_up(self, edge: Edge, name: str, replicas: int, timeout: float) -> None:
        """Until the edge sees as many servers of ``name`` up as the service has running tasks (and replicas)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = [t for t in self.engine.service_tasks(name)
                     if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]
            addresses = {a["Addresses"][0].split("/")[0] for t in tasks for a in t.get("NetworksAttachments", [])
                         if a.get("Addresses") and a["Network"]["Spec"]["Name"] == network_of(name)}
            up = {s.address.split(":")[0] for s in edge.servers() if s.service == name and s.status == "UP"}
            if len(tasks) >= replicas and addresses and addresses <= up:
                return
            time.sleep(0.5)
        raise DeployError(f"the edge does not see {name}'s new tasks up within {timeout:.0f}s; "
                          "the traffic stays on the canary", f"see `docker logs {edge.container}`")


    # -- the drift watch: bake window, `grocker watch` ----------------------------------------
    def _take_baseline(self, name: str, settings: Watch) -> Side:
        """Production's baseline: the requests of the last ``watch.baseline`` seconds answered by NAME's current
        release (none from before its deploy record: a release rolled back or replaced is not a baseline)."""
        deployed = [r for r in history(self.engine, name) if r.get("status") == "deployed" and r.get("at")]
        now = time.time()
        seconds = settings.baseline
        if deployed:
            try:
                since = datetime.datetime.fromisoformat(deployed[-1]["at"]).timestamp()
                seconds = max(0.0, min(seconds, now - since))
            except ValueError:
                pass
        baseline = baseline_from_log(Edge(self.engine, name), name, seconds, now)
        self.report["baseline"] = baseline.figures()
        self._event("baseline", seconds=round(seconds), requests=baseline.requests, errors=baseline.errors,
                    median_ms=baseline.figures()["median_ms"])
        return baseline

    def _bake(self, options: ShipOptions, baseline: Side) -> dict[str, Any]:
        """After a promotion: mark an irreversible release, then watch ``watch.bake`` seconds for drift."""
        name, pinned = options.deploy.name, self.report["pinned"]
        if options.irreversible:
            self.deployer.add_record(name, {"action": "ship", "pinned": pinned, "status": IRREVERSIBLE,
                                            "reason": "marked irreversible at its promotion: drift alerts, "
                                                      "nothing rolls it back automatically"})
            self._event("release marked irreversible")
        state = {"name": name, "pinned": pinned, "baseline_of": self.report.get("stable"),
                 "baseline": side_json(baseline), "phase": "bake", "failing": 0, "windows": []}
        path = watch_file(options.state_dir, name)
        write_state(path, {**state, "updated": _now()})
        if options.watch.bake <= 0:
            self._event("no bake window (watch.bake = 0)")
            return self.report
        self.report["phase"] = "bake"
        self._event("bake window", seconds=options.watch.bake)
        return self._watch_windows(name, pinned, baseline, state, path, options.watch, options.deploy,
                                   options.drain, options.state_dir, duration=options.watch.bake, phase="bake")

    def watch(self, options: WatchOptions) -> dict[str, Any]:
        """``grocker watch NAME``: NAME's windows against its baseline, until a drift (a rollback, or an alert
        for an irreversible release) or the bound of ``options`` (status ``ok``)."""
        name = options.name
        check_name(name)
        self.report = {"name": name, "status": "running", "phase": "watch", "timeline": [], "steps": [],
                       "windows": []}
        service = self.engine.service(name)
        if service is None:
            raise DeployError(f"no service named {name}", f"deploy it first: grocker deploy IMAGE --name {name}")
        if self.engine.container_labels(Edge(self.engine, name).container) is None:
            raise DeployError(f"{name} has no edge (it was deployed without --publish): the watch reads its "
                              "request log", f"deploy {name} with --publish")
        self._recover(name, state_file(options.state_dir, name))
        pinned = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        self.report["pinned"] = pinned
        path = watch_file(options.state_dir, name)
        state = read_state(path) or {}
        baseline = side_from_json(state.get("baseline") or {}) if state.get("pinned") == pinned else None
        if baseline is not None and baseline.requests >= options.settings.min_requests:
            self.report["baseline"] = baseline.figures()
            self._event("baseline from the state", requests=baseline.requests, of=state.get("baseline_of"))
        else:
            # No baseline for what runs (deployed by hand, or too short): the current release's own log.
            baseline = self._take_baseline(name, options.settings)
            state = {"name": name, "pinned": pinned, "baseline_of": pinned, "baseline": side_json(baseline),
                     "failing": 0, "windows": []}
        state["phase"] = "watch"
        write_state(path, {**state, "updated": _now()})
        rollout = options.deploy or DeployOptions(name=name, image=pinned)
        return self._watch_windows(name, pinned, baseline, state, path, options.settings, rollout, options.drain,
                                   options.state_dir, windows=options.windows, duration=options.duration,
                                   phase="watch")

    def _watch_windows(self, name: str, pinned: str, baseline: Side, state: dict[str, Any], path: Path,
                       settings: Watch, rollout: DeployOptions, drain: float, state_dir: Path, *,
                       windows: int | None = None, duration: float | None = None, phase: str) -> dict[str, Any]:
        streak = Streak(settings.fail_windows, int(state.get("failing") or 0), list(state.get("windows") or []))
        self.report["windows"] = streak.windows

        def on_window(window: dict[str, Any]) -> None:
            self._event(f"{phase} window: {window['verdict']}", reason=window["reason"])
            state.update(failing=streak.failing, windows=streak.windows)
            write_state(path, {**state, "updated": _now()})

        verdict = judge_windows(Edge(self.engine, name), name, baseline, settings, streak, windows=windows,
                                duration=duration, on_window=on_window)
        if verdict is None:
            if phase == "watch":
                self.report["status"] = "ok"
            self._event(f"no drift in the {phase} window" if phase == "bake" else "no drift",
                        windows=len(streak.windows))
            return self.report
        return self._on_drift(name, pinned, verdict, streak, state, path, rollout, drain, state_dir, phase)

    def _on_drift(self, name: str, pinned: str, verdict: Verdict, streak: Streak, state: dict[str, Any],
                  path: Path, rollout: DeployOptions, drain: float, state_dir: Path, phase: str) -> dict[str, Any]:
        """A drift: back to the previous release by digest, or, for an irreversible release (or none to go back
        to), an alert. Either goes through :meth:`_record` (the incident report's trigger)."""
        where = "the bake window" if phase == "bake" else "the watch"
        reason = f"drift in {where}: {verdict.reason}"
        self.report.update(phase=phase, verdict=streak.windows[-1])
        self._event("drift", reason=verdict.reason)
        target: dict[str, Any] | None = None
        why_not = ""
        if is_irreversible(history(self.engine, name), pinned):
            why_not = "it is irreversible"
        else:
            try:
                current, target = self.deployer.rollback_target(name)
            except DeployError as exc:
                why_not = exc.message
        if target is None:
            if state.get("alerted") != pinned:  # a restarted watch does not record the same alert again
                self._record(name, pinned, "alert", f"{reason}; not rolled back: {why_not}")
            write_state(path, {**state, "phase": "alert", "alerted": pinned, "updated": _now()})
            self.report.update(status="alert", error={
                "message": f"{pinned} drifted in {where} ({verdict.reason}) but is not rolled back: {why_not}",
                "hint": f"ship a fixed release, or roll back by hand (grocker rollback {name}) if its data allows"})
            return self.report
        self._revert(name, current, target, rollout, drain, state_dir)
        self._record(name, pinned, "rolled-back", reason)
        write_state(path, {**state, "pinned": target["pinned"], "phase": "rolled-back", "failing": 0, "windows": [],
                           "rolled_back": pinned, "updated": _now()})
        self.report.update(status="rolled-back", reverted_to=target["pinned"], error={
            "message": f"{pinned} drifted in {where} ({verdict.reason}): rolled back to {target['pinned']}",
            "hint": "production runs the previous release; see windows and verdict in the report"})
        return self.report

    def _revert(self, name: str, current: dict[str, Any], target: dict[str, Any], rollout: DeployOptions,
                drain: float, state_dir: Path) -> None:
        """Back to ``target`` without a dropped request: it runs first as NAME's canary pool and takes all the
        traffic; NAME is then rolling-updated to it at weight 0 (``grocker rollback``'s update, by digest, with
        its configuration, recorded in the history), takes the traffic back, and the canary goes."""
        started = time.monotonic()
        canary = f"{name}-canary"
        edge = Edge(self.engine, name)
        path = state_file(state_dir, name)
        state: dict[str, Any] = {"name": name, "canary": canary, "image": target["pinned"], "phase": "reverting",
                                 "weights": {name: DEFAULT_WEIGHT, canary: 0}}
        write_state(path, {**state, "updated": _now()})
        replicas = int(target.get("replicas") or 1)
        self.deployer.deploy_release(target, canary, replace(rollout, name=canary, publish=()))
        self._event("previous release deployed beside production", service=canary, pinned=target["pinned"])
        edge.set_pools([Pool(name, DEFAULT_WEIGHT), Pool(canary, 0)])
        self._wait_up(edge, canary, replicas, rollout.timeout)
        write_state(path, {**state, "weights": {name: 0, canary: DEFAULT_WEIGHT}, "updated": _now()})
        edge.set_weight(canary, DEFAULT_WEIGHT)
        edge.set_weight(name, 0)
        self.report["traffic_back"] = {"at": _now(), "seconds": round(time.monotonic() - started, 1)}
        self._event("all traffic on the previous release", pinned=target["pinned"])
        time.sleep(drain)
        self.deployer.deploy_release(target, name, rollout, undo=current)
        self._wait_up(edge, name, replicas, rollout.timeout)
        write_state(path, {**state, "weights": {name: DEFAULT_WEIGHT, canary: 0}, "updated": _now()})
        edge.set_weight(name, DEFAULT_WEIGHT)
        edge.set_weight(canary, 0)
        self._event("traffic back on the service, now on the previous release")
        time.sleep(drain)
        edge.set_pools([Pool(name)])
        self.deployer.stop(canary)
        write_state(path, {**state, "phase": "rolled-back", "updated": _now()})
        self._event("rolled back", seconds=round(time.monotonic() - started, 1))


__all__ = ["ShipOptions", "Shipper", "read_state", "sides", "state_file", "weights_for", "write_state"]
