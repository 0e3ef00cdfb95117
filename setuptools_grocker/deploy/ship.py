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

4. **Incident.** Every automatic rollback goes through :meth:`Shipper.record_rollback`: the incident report
   (:mod:`setuptools_grocker.deploy.incident`, with the failing tasks' last log lines read before their service
   was removed), the history record, then the ``grocker_incident`` hook. The judge's figures come from the
   ``grocker_release_metrics`` hook when a plugin answers for both sides, else from the edge's request log.

**More than one image's worth.** A ``pre-deploy`` job (migrations) runs once from the release's digest after
staging and before anything of production moves (:mod:`~setuptools_grocker.deploy.predeploy`); it failing
stops the release (``failed-pre-deploy``). The companion services (``NAME-worker``...) move to the digest
after the last canary step, before the promotion, and are watched by their tasks
(:mod:`~setuptools_grocker.deploy.companions`); one failing sends them back and the canary away, so the stable
web service is never updated for a release that does not hold.

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
from typing import TYPE_CHECKING, Any, Callable, Mapping

from setuptools_grocker.config import Canary, Watch
from setuptools_grocker.deploy.analysis import Side, Verdict, judge
from setuptools_grocker.deploy.companions import Companion, CompanionRelease, image_of
from setuptools_grocker.deploy.deployer import Deployer, DeployOptions, Publish, check_name, history
from setuptools_grocker.deploy.edge import DEFAULT_WEIGHT, MAX_WEIGHT, Edge, LoggedRequest, Pool, network_of
from setuptools_grocker.deploy.incident import collect, incident_paths, task_logs, windows_of, write
from setuptools_grocker.deploy.predeploy import run_pre_deploy
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
from setuptools_grocker.errors import DeployError, GrockerError
from setuptools_grocker.progress import Progress
from setuptools_grocker.report import write_json_atomic

if TYPE_CHECKING:
    from setuptools_grocker.plugin.manager import PluginManager

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
    #: Where this machine's build records are (the provenance of a local image, for the incident report).
    cache_home: Path | None = None
    #: Run once from the new image before production is touched (see predeploy.py).
    pre_deploy: str | None = None
    pre_deploy_timeout: float = 1800.0
    #: The application's other services (NAME-SUFFIX), released with NAME (see companions.py).
    services: tuple[Companion, ...] = ()
    #: Seconds their tasks are watched after their update.
    services_watch: float = 60.0
    #: False: ``deploy.replicas`` was not given; the release runs as many tasks as production does now.
    replicas_given: bool = True
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


def measured(plugins: PluginManager | None, canary: str, stable: str, start: float, end: float,
             from_edge: Callable[[float, float], tuple[Side, Side]]) -> tuple[Side, Side, str]:
    """The canary's and the stable's figures over [start, end), and where they come from: the
    ``grocker_release_metrics`` plugin that answered for both sides, else the edge (``from_edge(start, end)``)."""
    if plugins is not None:
        first = plugins.grocker_release_metrics(canary, start, end)
        second = plugins.grocker_release_metrics(stable, start, end) if first is not None else None
        if first is not None and second is not None:
            def side(figures: Mapping[str, Any]) -> Side:
                times = tuple(round(t) for t in figures.get("times_ms", ()))
                return Side(figures["requests"], figures["errors"], times)
            names = ", ".join(dict.fromkeys((first[0], second[0])))
            return side(first[1]), side(second[1]), f"plugin {names}"
    c, s = from_edge(start, end)
    return c, s, "edge"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class Shipper:
    def __init__(self, engine: Engine, progress: Progress, plugins: PluginManager | None = None) -> None:
        self.engine = engine
        self.progress = progress
        #: The ``grocker_incident`` and ``grocker_release_metrics`` hooks' plugins (None: no plugin).
        self.plugins = plugins
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
        for service in (f"{name}-staging", f"{name}-canary", *(c.service(name) for c in options.services)):
            check_name(service)
        self.report = {"name": name, "image": options.deploy.image, "status": "running", "timeline": [],
                       "steps": []}
        stable = self.engine.service(name)
        records = history(self.engine, name) if stable is not None else []
        deployed = [r for r in records if r.get("status") == "deployed"]
        if not options.deploy.publish and deployed:
            options.deploy.publish = tuple(Publish.parse(p) for p in deployed[-1].get("publish", []))
        if not options.replicas_given and stable is not None:
            # As many tasks as production runs now (scaled by hand since its deploy, too): a ship that does not
            # say otherwise never scales production down.
            running = ((stable.get("Spec") or {}).get("Mode") or {}).get("Replicated", {}).get("Replicas")
            if isinstance(running, int) and running > 0:
                options.deploy.replicas = running
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
        if options.pre_deploy and not self._pre_deploy(options, first=stable is None):
            return self.report
        if stable is None:
            record = self.deployer.deploy(options.deploy)
            self._event("first release deployed", pinned=record["pinned"])
            self.report.update(status="deployed", pinned=record["pinned"])
            self._record_pre_deploy(name)
            failure = self._release_services(options, record["pinned"])
            if failure is not None:
                self.report.update(status="failed-services", error={
                    "message": f"the services of {record['pinned']} failed: {failure}; nothing to go back to "
                               "(first release)",
                    "hint": "see services in the report (each failed task's log lines), fix the release and ship it"})
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

    # -- pre-deploy job and companion services ------------------------------------------
    def _pre_deploy(self, options: ShipOptions, *, first: bool) -> bool:
        """Run the pre-deploy job once from the release's digest; False (the report says why) when it failed."""
        name = options.deploy.name
        command = options.pre_deploy or ""
        pinned = self.deployer.pin(options.deploy.image)
        self.report["pinned"] = pinned
        self._event("pre-deploy job", command=command)
        result = run_pre_deploy(self.engine, options.deploy, pinned, command, options.pre_deploy_timeout)
        self.report["pre_deploy"] = result.to_json()
        if result.exit_code == 0:
            self._event("pre-deploy job passed", seconds=result.seconds)
            if not first:
                self._record_pre_deploy(name)
            return True
        self._event("pre-deploy job failed", exit_code=result.exit_code)
        if first:  # the network it ran on is the only trace of a release that never started
            self.engine.remove_network(network_of(name))
        else:
            self._record_pre_deploy(name)
        self.report.update(status="failed-pre-deploy", error={
            "message": f"the pre-deploy job failed (exit code {result.exit_code}): nothing was deployed",
            "hint": "see pre_deploy.tail in the report; production runs its previous release (the job may have "
                    "done part of its work: check before shipping again)"})
        return False

    def _record_pre_deploy(self, name: str) -> None:
        job = self.report.get("pre_deploy")
        if job:
            self.deployer.add_record(name, {
                "action": "pre-deploy", "pinned": job["image"], "command": job["command"],
                "status": "passed" if job["exit_code"] == 0 else "failed", "exit_code": job["exit_code"],
                "seconds": job["seconds"]})

    def _release_services(self, options: ShipOptions, pinned: str, save: Any = None) -> str | None:
        """Move the companion services to ``pinned`` and watch them; the reason when they failed (they are then
        back on their previous release). With ``save``, what they ran before is in the state first: a run that
        finds the phase ``services`` unfinished puts them back (:meth:`_recover_services`)."""
        if not options.services:
            return None
        if save is not None:
            save(phase="services", services={c.service(options.deploy.name): image_of(self.engine.service(
                c.service(options.deploy.name))) for c in options.services})
        companions = CompanionRelease(self.engine, self.deployer, self._event)
        self.report["services"] = companions.report
        return companions.release(options.deploy, options.services, pinned, options.services_watch)

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
        self._recover_services(state)
        write_state(path, {**state, "phase": "rolled-back", "recovered_at": _now()})

    def _recover_services(self, state: dict[str, Any]) -> None:
        """A run that died while its companion services were moving or watched: they go back to what they ran
        before (the web side is the canary, removed by :meth:`_recover`)."""
        if state.get("phase") != "services":
            return
        companions = CompanionRelease(self.engine, self.deployer, self._event)
        for service, previous in (state.get("services") or {}).items():
            companions.restore(service, previous)

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
            failure = self._release_services(options, pinned)  # a service added, or one a failed run left behind
            if failure is not None:
                self.report.update(status="failed-services", error={
                    "message": f"{name} already runs {pinned} but its services failed on it: {failure}; "
                               "they are back on their previous release",
                    "hint": "see services in the report (each failed task's log lines)"})
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
                logs = self._rollback(edge, name, canary, options, save)
                self.report["verdict"] = verdict.to_json()
                self.record_rollback(name, pinned, verdict.reason, went_back_to=self.report.get("stable"),
                                     trigger=f"canary at {share}%", logs=logs, state_dir=options.state_dir,
                                     cache_home=options.cache_home, verdict=self.report["verdict"])
                self.report.update(status="rolled-back", error={
                    "message": f"the canary of {pinned} was rolled back at {share}%: {verdict.reason}",
                    "hint": "production runs the stable release; see steps in the report"})
                return self.report
        if options.services:
            # Before the stable service moves: a worker that fails then only costs the canary's removal.
            failure = self._release_services(options, pinned, save)
            if failure is not None:
                self._rollback(edge, name, canary, options, save)
                failed = [{"service": f"{name}-{suffix}", "tasks": [
                    {"task": f["task"], "lines": f["log_tail"].splitlines()} for f in entry.get("failures", [])]}
                    for suffix, entry in self.report.get("services", {}).items() if entry.get("failures")]
                self.record_rollback(name, pinned, failure, went_back_to=self.report.get("stable"),
                                     trigger="companion services watched", logs=failed[0] if failed else {},
                                     state_dir=options.state_dir, cache_home=options.cache_home)
                self.report.update(status="rolled-back", error={
                    "message": f"the release of {pinned} was rolled back: {failure}",
                    "hint": "every service runs its previous release; see services in the report (each failed "
                            "task's log lines)"})
                return self.report
        self._promote(edge, name, canary, pinned, options, save)
        self._record(name, pinned, "promoted", "every step passed")
        self.report["status"] = "promoted"
        return self.report

    def _record(self, name: str, pinned: str, status: str, reason: str, action: str = "ship", **extra: Any) -> None:
        """The release's outcome and verdicts in NAME's history (`grocker history NAME`)."""
        self.deployer.add_record(name, {
            "action": action, "pinned": pinned, "status": status, "reason": reason,
            "steps": [[step["share"], step.get("verdict")] for step in self.report.get("steps", [])], **extra})

    def record_rollback(self, name: str, pinned: str, reason: str, *, went_back_to: str | None, trigger: str,
                        logs: Mapping[str, Any], state_dir: Path, cache_home: Path | None = None,
                        verdict: Mapping[str, Any] | None = None, windows: list[Mapping[str, Any]] | None = None,
                        action: str = "ship", status: str = "rolled-back") -> dict[str, str] | None:
        """The one place an automatic rollback of ``pinned`` (back to ``went_back_to``) is recorded, once the
        traffic is back: the incident report (JSON and Markdown in ``state_dir/incidents``), NAME's history
        record (``rolled-back``, with the incident's path), then every ``grocker_incident`` plugin.

        ``logs`` is :func:`~setuptools_grocker.deploy.incident.task_logs` of the failing service, read before
        it was removed or rolled back; ``windows`` defaults to every window of the report's steps; ``action``
        names the history record's kind (``ship``; a drift watch may say ``watch``); ``status`` is ``alert`` for a
        drift that was not rolled back (an irreversible release): the same report, ``went_back_to`` None.
        Returns the paths (also the report's ``incident``), or None when the report could not be written (a
        warning; the rollback stands). A plugin that fails is a warning too."""
        self.report.setdefault("timeline", [])
        self.report.setdefault("steps", [])
        paths = incident_paths(state_dir, name)
        try:
            incident = collect(self.engine, service=name, trigger=trigger, reason=reason, release=pinned,
                               went_back_to=went_back_to, logs=logs, timeline=self.report.get("timeline", []),
                               windows=windows if windows is not None else windows_of(self.report["steps"]),
                               cache_home=cache_home, verdict=verdict, outcome=status)
            write(incident, paths)
        except (GrockerError, OSError) as exc:
            self.progress.warn(f"the incident report of {pinned} could not be written ({exc}); the rollback stands")
            self._record(name, pinned, status, reason, action)
            return None
        shown = {k: str(v) for k, v in paths.items()}
        self._record(name, pinned, status, reason, action, incident=shown["json"])
        self.report["incident"] = shown
        self._event("incident report written", path=shown["markdown"])
        if self.plugins is not None:
            for plugin, error in self.plugins.grocker_incident(incident, paths):
                self.progress.warn(f"plugin '{plugin}' failed in grocker_incident: {error}; the report is kept "
                                   f"at {shown['json']}")
        return shown

    def _judge_step(self, edge: Edge, name: str, canary: str, settings: Canary, step: dict[str, Any]) -> Verdict:
        inconclusive = 0
        while True:
            start = time.time()
            time.sleep(settings.window)
            end = time.time()
            c, s, source = measured(self.plugins, canary, name, start, end,
                                    lambda a, b: sides(edge.requests(since=int(a)), canary, name, a, b))
            verdict = judge(c, s, min_requests=settings.min_requests, alpha=settings.alpha,
                            latency_margin_ms=settings.latency_margin_ms)
            step["windows"].append({**verdict.to_json(), "source": source})
            self._event(f"window: {verdict.verdict}", reason=verdict.reason)
            if verdict.verdict != "inconclusive":
                return verdict
            inconclusive += 1
            if inconclusive >= settings.max_inconclusive:
                return Verdict("inconclusive", f"{inconclusive} inconclusive windows in a row: {verdict.reason}",
                               verdict.canary, verdict.stable)

    def _rollback(self, edge: Edge, name: str, canary: str, options: ShipOptions, save: Any) -> dict[str, Any]:
        """Canary to weight 0, a drain, the canary out of the edge and removed; returns its tasks' last log
        lines, read after the drain and before the removal (its logs go with its service)."""
        started = time.monotonic()
        save(phase="rolling-back", weights={name: DEFAULT_WEIGHT, canary: 0})
        pools = {p.service for p in edge.pools()}
        if canary in pools:
            edge.set_weight(canary, 0)
        edge.set_weight(name, DEFAULT_WEIGHT)
        self._event("canary weight 0: all traffic on the stable release")
        time.sleep(options.drain)
        logs = task_logs(self.engine, canary)
        if canary in pools:
            edge.set_pools([Pool(name)])
        if self.engine.service(canary) is not None:
            self.deployer.stop(canary)
        save(phase="rolled-back")
        self._event("canary removed", seconds=round(time.monotonic() - started, 1))
        return logs

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
                self.record_rollback(name, pinned, f"{reason}; not rolled back: {why_not}", went_back_to=None,
                                     trigger=where, logs=task_logs(self.engine, name), state_dir=state_dir,
                                     verdict=streak.windows[-1], windows=self._drift_windows(streak, phase),
                                     status="alert")
            write_state(path, {**state, "phase": "alert", "alerted": pinned, "updated": _now()})
            self.report.update(status="alert", error={
                "message": f"{pinned} drifted in {where} ({verdict.reason}) but is not rolled back: {why_not}",
                "hint": f"ship a fixed release, or roll back by hand (grocker rollback {name}) if its data allows"})
            return self.report
        logs = task_logs(self.engine, name)  # before the drifting tasks are replaced
        self._revert(name, current, target, rollout, drain, state_dir)
        self._restore_companions()
        self.record_rollback(name, pinned, reason, went_back_to=target["pinned"], trigger=where, logs=logs,
                             state_dir=state_dir, verdict=streak.windows[-1],
                             windows=self._drift_windows(streak, phase))
        write_state(path, {**state, "pinned": target["pinned"], "phase": "rolled-back", "failing": 0, "windows": [],
                           "rolled_back": pinned, "updated": _now()})
        self.report.update(status="rolled-back", reverted_to=target["pinned"], error={
            "message": f"{pinned} drifted in {where} ({verdict.reason}): rolled back to {target['pinned']}",
            "hint": "production runs the previous release; see windows and verdict in the report"})
        return self.report

    def _drift_windows(self, streak: Streak, phase: str) -> list[Mapping[str, Any]]:
        """The drift's windows for the incident report: the release under ``canary``, the baseline under
        ``stable`` (the report's table shows those two sides)."""
        keys = ("verdict", "reason", "errors_p", "latency_p", "source")
        return [{"share": 100, "phase": phase, **{k: w.get(k) for k in keys},
                 "canary": w.get("production", w.get("canary")), "stable": w.get("baseline", w.get("stable"))}
                for w in streak.windows]

    def _restore_companions(self) -> None:
        """After a drift's rollback of the web service: the release's companion services (moved before its
        promotion) go back to what they ran before it, by digest."""
        services = self.report.get("services") or {}
        if not services:
            return
        companions = CompanionRelease(self.engine, self.deployer, self._event)
        for entry in services.values():
            if entry.get("service") and entry.get("pinned") == self.report.get("pinned"):
                companions.restore(entry["service"], entry.get("previous"))

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


__all__ = ["ShipOptions", "Shipper", "measured", "read_state", "sides", "state_file", "weights_for", "write_state"]
