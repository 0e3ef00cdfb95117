"""Buildbot steps that run the ``grocker`` CLI on a worker and read its JSON report.

Every step runs ``grocker ... --report -`` (the report on stdout, progress on stderr),
keeps the output as its ``stdio`` log, never logs the worker's environment, and sets
properties from the report. The wheel index (``wheel_index``, possibly with credentials,
e.g. ``util.Secret(...)``) reaches grocker through the command's environment
(``GROCKER_WORKSPACE_INDEX_URL``), never its argv: Buildbot writes every argv into the step's
log header, and a worker's process list shows it.

======================  =====================================================
``grocker_status``      built / cached / failed / skipped
``grocker_version``     the member's version
``grocker_wheel``       path of its wheel on the worker
``grocker_image``       the image reference (applications)
``grocker_image_id``    the image ID
``grocker_digest``      the registry digest after a push
======================  =====================================================
"""
from __future__ import annotations

import json
from typing import Any

from buildbot import config
from buildbot.process import buildstep
from buildbot.process.properties import Property
from buildbot.process.results import FAILURE, SKIPPED, SUCCESS, WARNINGS
from twisted.internet import defer

from setuptools_grocker.pipeline.stages import PLUGIN_PREFIX, POSITIONS, SLOT, STAGES, is_stage_name, position_order
from setuptools_grocker.progress import redact
from setuptools_grocker.registry.wheelhouse import INDEX_URL_ENV


class GrockerStep(buildstep.ShellMixin, buildstep.BuildStep):
    """Run one ``grocker`` command on the worker; read the JSON report it prints."""

    name = "grocker"
    renderables = ["root", "wheel_index", "grocker"]
    #: Words of the grocker command line after the executable, before the common options.
    command_words: tuple[str, ...] = ()

    def __init__(self, root: Any = ".", grocker: Any = "grocker", wheel_index: Any = None,
                 extra_args: Any = (), **kwargs: Any) -> None:
        kwargs.setdefault("logEnviron", False)
        kwargs = self.setupShellMixin(kwargs, prohibitArgs=["command"])
        super().__init__(**kwargs)
        if not root:
            config.error(f"{type(self).__name__}: root (the workspace directory on the worker) is required")
        if wheel_index and self.logEnviron:
            config.error(f"{type(self).__name__}: logEnviron=True would write the wheel index's credentials "
                         "(passed in the environment) into the step's log; leave it False")
        self.root = root
        self.grocker = grocker
        self.wheel_index = wheel_index
        self.extra_args = list(extra_args)
        self.report: dict[str, Any] | None = None
        #: grocker's one-line error (stderr), when it printed one.
        self.error: str | None = None

    def grocker_command(self) -> list[str]:
        exe = self.grocker if isinstance(self.grocker, list) else [self.grocker]
        return [*exe, *self.command_words, self.root, *self.extra_args]

    def command_env(self) -> dict[str, Any]:
        """The step's ``env`` plus the wheel index: it may hold credentials, so never in argv."""
        env = dict(self.env or {})
        if self.wheel_index:
            env[INDEX_URL_ENV] = self.wheel_index
        return env

    @defer.inlineCallbacks
    def run(self):
        cmd = yield self.makeRemoteShellCommand(command=self.grocker_command(), collectStdout=True,
                                                collectStderr=True, env=self.command_env())
        yield self.runCommand(cmd)
        self.report = self._parse(cmd.stdout)
        errors = [ln for ln in (cmd.stderr or "").splitlines() if ln.startswith("grocker: error:")]
        self.error = redact(errors[-1][len("grocker: error:"):].strip()) if errors else None
        if self.report is None:
            yield self.addCompleteLog("error", "grocker printed no JSON report; see stdio")
            return FAILURE
        yield self.addCompleteLog("report.json", redact(json.dumps(self.report, indent=2)))
        yield self.apply_report(self.report)
        return SUCCESS if cmd.rc == 0 else FAILURE

    @staticmethod
    def _parse(stdout: str) -> dict[str, Any] | None:
        text = (stdout or "").strip()
        start = text.find("{")
        if start < 0:
            return None
        try:
            data = json.loads(text[start:])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def apply_report(self, report: dict[str, Any]) -> Any:
        return None


class GrockerPlan(GrockerStep):
    """``grocker workspace plan ROOT --json``: sets ``grocker_plan`` (the whole plan)."""

    name = "plan"
    command_words = ("workspace", "plan")

    def grocker_command(self) -> list[str]:
        return [*super().grocker_command(), "--json"]

    @defer.inlineCallbacks
    def run(self):
        cmd = yield self.makeRemoteShellCommand(command=self.grocker_command(), collectStdout=True,
                                                env=self.command_env())
        yield self.runCommand(cmd)
        plan = self._parse(cmd.stdout)
        if cmd.rc != 0 or plan is None:
            return FAILURE
        self.setProperty("grocker_plan", plan, self.name)
        todo = [m["name"] for m in plan["members"] if not m["up_to_date"]]
        self.descriptionDone = [f"{len(plan['members'])} members, {len(todo)} to build"]
        return SUCCESS


class GrockerRelease(GrockerStep):
    """``grocker workspace release ROOT --json``: publish the release document, move the pointer, then the tags.

    Runs after the graph when every member succeeded; sets ``grocker_release`` (the release
    document: application -> image digest, library versions) and keeps it as a log. A release
    that is published but left convenience tags behind (listed in the document's ``lagging``)
    ends in WARNINGS: it is current, and the next run moves those tags. ``configure()`` gives
    it an exclusive MasterLock per workspace, so two releases of one workspace never overlap.
    """

    name = "release"
    renderables = [*GrockerStep.renderables, "release"]
    command_words = ("workspace", "release")

    def __init__(self, release: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release = release

    def grocker_command(self) -> list[str]:
        exe = self.grocker if isinstance(self.grocker, list) else [self.grocker]
        cmd = [*exe, *self.command_words, self.root, "--json", *self.extra_args]
        return cmd + (["--release", self.release] if self.release else [])

    @defer.inlineCallbacks
    def run(self):
        result = yield super().run()
        if result == FAILURE and self.report and self.report.get("lagging"):
            return WARNINGS
        return result

    def apply_report(self, report: dict[str, Any]) -> None:
        self.setProperty("grocker_release", report, self.name)
        self.descriptionDone = [f"release {report.get('release')}",
                                f"{len(report.get('applications') or {})} applications"]
        if report.get("lagging"):
            self.descriptionDone.append(f"{len(report['lagging'])} tags lag")


class GrockerRefreshRoot(GrockerStep):
    """``grocker refresh-root ROOT --json``: check the Debian mirror for newer packages of the root image of the
    project (or workspace) at ``root``; build the refreshed root when there are some.

    Sets ``grocker_root_refresh`` (the report: ``refreshed``, ``packages_changed``...). Schedule it before the
    rebase steps of the nightly (docs/supply-chain.md).
    """

    name = "refresh-root"
    command_words = ("refresh-root",)

    def grocker_command(self) -> list[str]:
        return [*super().grocker_command(), "--json"]

    def apply_report(self, report: dict[str, Any]) -> None:
        self.setProperty("grocker_root_refresh", report, self.name)
        changed = report.get("packages_changed") or []
        self.descriptionDone = ([f"root refreshed, {len(changed)} Debian packages changed"]
                                if report.get("refreshed") else ["root current"])


class GrockerRebase(GrockerStep):
    """``grocker rebase IMAGE --report -``: put ``image`` on its refreshed root (smoke-tested before it is tagged).

    Appends ``{"image", "rebased", "new_image_id", "tag", "packages_changed"}`` to the ``grocker_rebased``
    property (with ``error``, grocker's one-line reason, when the rebase was refused or failed), so that the
    nightly's last step can say which images were rebased and which Debian packages changed; ``root`` is the
    working directory's project (the smoke test's configuration).
    """

    name = "rebase"
    renderables = [*GrockerStep.renderables, "image", "tag"]
    command_words = ("rebase",)

    def __init__(self, image: Any = None, tag: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not image:
            config.error("GrockerRebase: image (the image reference to rebase) is required")
        self.image = image
        self.tag = tag

    def grocker_command(self) -> list[str]:
        exe = self.grocker if isinstance(self.grocker, list) else [self.grocker]
        cmd = [*exe, *self.command_words, self.image, "--project", self.root, "--report", "-", *self.extra_args]
        return cmd + (["--tag", self.tag] if self.tag else [])

    @defer.inlineCallbacks
    def run(self):
        result = yield super().run()
        if self.report is None:  # refused (another Python on the new root...) or failed: in the report too
            done = list(self.getProperty("grocker_rebased") or [])
            done.append({"image": self.image, "rebased": False, "new_image_id": None, "tag": None,
                         "packages_changed": [], "error": self.error or "grocker rebase failed; see its log"})
            self.setProperty("grocker_rebased", done, self.name)
            self.descriptionDone = [f"{self.image} not rebased", *([self.error] if self.error else [])]
        return result

    def apply_report(self, report: dict[str, Any]) -> None:
        done = list(self.getProperty("grocker_rebased") or [])
        done.append({k: report.get(k) for k in ("image", "rebased", "new_image_id", "tag", "packages_changed")})
        self.setProperty("grocker_rebased", done, self.name)
        changed = report.get("packages_changed") or []
        self.descriptionDone = ([f"rebased {self.image}", f"{len(changed)} Debian packages changed"]
                                if report.get("rebased") else [f"{self.image} not rebased"])


def refreshed_root_current(step: buildstep.BuildStep) -> bool:
    """``doStepIf`` of the rebase steps: a refreshed root is what builds use now (this refresh made it, or an
    earlier one), per the ``grocker_root_refresh`` report. Without one there is nothing to rebase onto (and
    ``grocker rebase`` would refuse: "never refreshed")."""
    report = step.getProperty("grocker_root_refresh") or {}
    roots: list[Any] = report["roots"] if isinstance(report.get("roots"), list) else [report]
    return bool(report.get("refreshed")) or any(
        isinstance(r, dict) and (r.get("root") or {}).get("tag") not in (None, f"grocker/root:{r.get('recipe_key')}")
        for r in roots)


class GrockerRefreshReport(buildstep.BuildStep):
    """The security refresh's summary: what the refresh changed (``grocker_root_refresh``) and which images the
    rebase steps moved (``grocker_rebased``), as the ``refresh.json`` log and the ``grocker_refresh_report``
    property (``{"refreshed", "packages_changed", "rebased": [...], "not_rebased": [...]}``). Runs always, also
    after a failed rebase, so the night's report is complete."""

    name = "refresh-report"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("alwaysRun", True)
        super().__init__(**kwargs)

    @defer.inlineCallbacks
    def run(self):
        refresh = self.getProperty("grocker_root_refresh")
        done = list(self.getProperty("grocker_rebased") or [])
        if not refresh:  # refresh-root failed (its step says why): nothing to report as current
            self.descriptionDone = ["no refresh report (see refresh-root)"]
            return SKIPPED
        packages: list[dict[str, Any]] = list(refresh.get("packages_changed") or [])
        rebased_images = [d for d in done if d.get("rebased")]
        report = {"refreshed": bool(refresh.get("refreshed")), "packages_changed": packages,
                  "rebased": rebased_images, "not_rebased": [d for d in done if not d.get("rebased")]}
        self.setProperty("grocker_refresh_report", report, self.name)
        yield self.addCompleteLog("refresh.json", json.dumps(report, indent=2))
        changed = ", ".join(f"{c.get('name')} {c.get('old') or '-'} -> {c.get('new') or '-'}" for c in packages)
        rebased = ", ".join(str(d.get("image")) for d in rebased_images)
        self.descriptionDone = [
            f"root refreshed ({changed})" if report["refreshed"] else "root current",
            f"rebased {rebased}" if rebased else "no image rebased"]
        return SUCCESS


class GrockerShip(GrockerStep):
    """``grocker ship IMAGE@DIGEST --name SERVICE --json`` for each application of the nightly's workspace release
    (the ``grocker_release`` property that ``GrockerRelease`` sets), one after the other.

    ``applications``: the names of the release's applications to ship, in that order (default: all of them,
    sorted); ``services``: application -> production service name (default: the application's name);
    ``app_args``: application -> more ``grocker ship`` arguments (``--publish``, ``--project``...), after the
    common ``extra_args``. The first application that is not promoted (or deployed) stops the step: the later ones
    are not shipped. Sets ``grocker_ship`` (``{app: {"service", "image", "status", "error"}}``, also the
    ``ship.json`` log); its summary gives each verdict.
    """

    name = "ship"
    renderables = [*GrockerStep.renderables, "applications", "services", "app_args"]
    command_words = ("ship",)
    #: The ship statuses that let the next application go.
    GOOD = ("promoted", "deployed", "unchanged")

    def __init__(self, applications: Any = None, services: Any = None, app_args: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.applications = applications
        self.services = services
        self.app_args = app_args

    def targets(self) -> list[tuple[str, str]]:
        """``[(application, image pinned by digest)]`` from the release document."""
        from setuptools_grocker.ref import ImageRef

        release = self.getProperty("grocker_release") or {}
        apps = release.get("applications") or {}
        names = list(self.applications) if self.applications else sorted(apps)
        missing = [n for n in names if n not in apps]
        if missing:
            raise ValueError(f"not in the release: {', '.join(missing)}")
        return [(n, f"{ImageRef.parse(str(apps[n]['image'])).repository}@{apps[n]['digest']}") for n in names]

    @staticmethod
    def _parse_last(stdout: str) -> dict[str, Any] | None:
        """The JSON report ``--json`` prints: the last object that starts a line (anything printed before or
        after it, e.g. by a wrapper around grocker, is skipped)."""
        text = stdout or ""
        starts = [0] if text.startswith("{") else []
        starts += [i + 1 for i, ch in enumerate(text) if ch == "\n" and text[i + 1:i + 2] == "{"]
        for start in reversed(starts):
            try:
                data, _ = json.JSONDecoder().raw_decode(text, start)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
        return None

    def ship_command(self, app: str, image: str) -> list[str]:
        exe = self.grocker if isinstance(self.grocker, list) else [self.grocker]
        service = (self.services or {}).get(app, app)
        return [*exe, *self.command_words, image, "--name", service, "--json", *self.extra_args,
                *(self.app_args or {}).get(app, [])]

    @defer.inlineCallbacks
    def run(self):
        try:
            targets = self.targets()
        except ValueError as exc:
            yield self.addCompleteLog("error", f"{exc}; ship runs after GrockerRelease (grocker_release)")
            self.descriptionDone = [str(exc)]
            return FAILURE
        verdicts: dict[str, dict[str, Any]] = {}
        result = SUCCESS
        for app, image in targets:
            if result != SUCCESS:
                verdicts[app] = {"service": (self.services or {}).get(app, app), "image": image,
                                 "status": "not shipped", "error": None}
                continue
            cmd = yield self.makeRemoteShellCommand(command=self.ship_command(app, image), collectStdout=True,
                                                    collectStderr=True, env=self.command_env())
            yield self.runCommand(cmd)
            report = self._parse_last(cmd.stdout) or {}
            if report:  # the whole release report (timeline, canary steps, functional tests) for whoever digs
                yield self.addCompleteLog(f"{app}.json", redact(json.dumps(report, indent=2)))
            lines = [ln for ln in (cmd.stderr or "").splitlines() if ln.startswith("grocker: error:")]
            error = report.get("error") or (lines[-1][len("grocker: error:"):].strip() if lines else None)
            status = report.get("status") if report.get("status") not in (None, "running") else None
            verdicts[app] = {"service": (self.services or {}).get(app, app), "image": image,
                             # exit 0 with no report: an older grocker, or a wrapper that ate stdout
                             "status": status or ("error" if cmd.rc else "unknown"),
                             "error": redact(str(error.get("message") if isinstance(error, dict) else error))
                             if error else None}
            if cmd.rc != 0 or verdicts[app]["status"] not in self.GOOD:
                result = FAILURE
        self.setProperty("grocker_ship", verdicts, self.name)
        yield self.addCompleteLog("ship.json", redact(json.dumps(verdicts, indent=2)))
        self.descriptionDone = [f"{app} {v['status']}" for app, v in verdicts.items()] or ["nothing to ship"]
        why = next((v["error"] for v in verdicts.values() if v["error"]), None)
        if result != SUCCESS and why:  # the reason of the verdict that stopped the ship, shortened
            self.descriptionDone.append(why if len(why) <= 120 else why[:117] + "...")
        return result


class GrockerMemberStep(GrockerStep):
    """One stage of one workspace member: ``grocker workspace build ROOT --only M --no-deps --stage S``."""

    renderables = [*GrockerStep.renderables, "member"]
    stage = "wheel"
    command_words = ("workspace", "build")

    def __init__(self, member: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("name", self.stage)
        super().__init__(**kwargs)
        if member is None:
            config.error(f"{type(self).__name__}: member is required (e.g. Property('grocker_member'))")
        if not is_stage_name(self.stage):
            config.error(f"{type(self).__name__}: unknown stage {self.stage!r}")
        self.member = member

    def grocker_command(self) -> list[str]:
        # --verbose: the step's log is where CI users read pip's and the engine's output (the log file
        # grocker also writes stays on the worker).
        return [*super().grocker_command(), "--only", self.member, "--no-deps", "--stage", self.stage,
                "--report", "-", "--verbose"]

    def apply_report(self, report: dict[str, Any]) -> None:
        projects = report.get("projects") or []
        if not projects:
            return
        p = projects[0]
        for prop, key in (("grocker_status", "status"), ("grocker_version", "version"), ("grocker_wheel", "wheel"),
                          ("grocker_image", "image"), ("grocker_image_id", "image_id"),
                          ("grocker_digest", "digest")):
            if p.get(key) is not None:
                self.setProperty(prop, p[key], self.name)
        status = p.get("status")
        # Redacted again here: the report may come from an older grocker on the worker.
        self.descriptionDone = [f"{self.stage} {status}"] + ([redact(str(p["error"]))] if p.get("error") else [])


class GrockerWheel(GrockerMemberStep):
    """Build the member's wheel (libraries) or its compiled closure (applications)."""

    stage = "wheel"


class GrockerTest(GrockerMemberStep):
    """Run a library's tests against the wheels of its internal dependencies."""

    stage = "test"


class GrockerImage(GrockerMemberStep):
    """Build an application's runtime image (untagged until the smoke test passes)."""

    stage = "image"


class GrockerSmokeTest(GrockerMemberStep):
    """Smoke-test the image (check, command, HTTP probe on 127.0.0.1); tag it when it passes."""

    stage = "smoke"


class GrockerPush(GrockerMemberStep):
    """Push the application's image; sets ``grocker_digest``."""

    stage = "push"


class GrockerPluginStage(GrockerMemberStep):
    """A custom stage contributed by a plugin, as a step of its own (``--stage plugin:NAME``)."""

    def __init__(self, stage_name: str = "", **kwargs: Any) -> None:
        if not stage_name:
            config.error("GrockerPluginStage: stage_name (the plugin stage's name) is required")
        self.stage = PLUGIN_PREFIX + stage_name
        kwargs.setdefault("name", stage_name)
        super().__init__(**kwargs)


# One step class per member stage of setuptools_grocker.pipeline.stages
# (tests/unit/test_stages.py checks it is complete).
_STEP_OF: dict[str, type[GrockerMemberStep]] = {
    cls.stage: cls for cls in (GrockerWheel, GrockerTest, GrockerImage, GrockerSmokeTest, GrockerPush)}


def member_steps(kind_property: str = "grocker_kind", plugin_stages: Any = (),
                 **kwargs: Any) -> list[buildstep.BuildStep]:
    """The steps of one member build: library stages or application stages, by ``kind_property``.

    ``plugin_stages``: ``[(name, position, kinds)]`` of plugin stages to show as steps of their
    own, ``kinds`` being ``("library", "application")`` or a part of it.
    """

    def is_library(step: buildstep.BuildStep) -> bool:
        return bool(step.getProperty(kind_property) == "library")

    def is_application(step: buildstep.BuildStep) -> bool:
        return not is_library(step)

    def has_tests(step: buildstep.BuildStep) -> bool:
        return is_library(step) and "test" in (step.getProperty("grocker_stages") or ["test"])

    def wants_push(step: buildstep.BuildStep) -> bool:
        return is_application(step) and bool(step.getProperty("grocker_push", False))

    kwargs.setdefault("member", Property("grocker_member"))
    common = {"hideStepIf": lambda results, step: results == SKIPPED, **kwargs}
    when: dict[str, Any] = {"wheel": True, "test": has_tests, "image": is_application, "smoke": is_application,
                            "push": wants_push}
    # Sorted by plugin position (stable: a member stage comes before plugin stages at its own slot).
    ordered: list[tuple[int, buildstep.BuildStep]] = [
        (position_order(SLOT[stage]), _STEP_OF[stage](doStepIf=when[stage], **common)) for stage in STAGES]
    for name, position, kinds in plugin_stages:
        if position not in POSITIONS:
            config.error(f"member_steps: plugin stage {name!r} has unknown position {position!r}")

        def applies(step: buildstep.BuildStep, kinds: tuple[str, ...] = tuple(kinds)) -> bool:
            return str(step.getProperty(kind_property)) in kinds

        ordered.append((position_order(position), GrockerPluginStage(stage_name=name, doStepIf=applies, **common)))
    return [step for _, step in sorted(ordered, key=lambda item: item[0])]


__all__ = [
    "GrockerImage", "GrockerMemberStep", "GrockerPlan", "GrockerPush", "GrockerRebase", "GrockerRefreshReport",
    "GrockerRefreshRoot", "GrockerRelease", "GrockerShip", "GrockerSmokeTest", "GrockerStep", "GrockerPluginStage",
    "GrockerTest", "GrockerWheel", "member_steps", "refreshed_root_current",
]
