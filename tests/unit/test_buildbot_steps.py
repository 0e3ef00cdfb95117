"""The Buildbot steps with Buildbot's own step-testing harness (no worker, no engine)."""
from __future__ import annotations

import json

import pytest
from buildbot.process.properties import Property
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import ExpectShell, TestBuildStepMixin
from twisted.internet import defer
from twisted.trial import unittest

from buildbot_grocker import (
    GrockerImage,
    GrockerPlan,
    GrockerPush,
    GrockerSmokeTest,
    GrockerTest,
    GrockerWheel,
)


def report(status: str = "built", **extra: object) -> str:
    project = {"name": "core", "version": "1.2.0", "kind": "library", "status": status, "wheel": "/w/core.whl",
               "image": None, "image_id": None, "digest": None, "seconds": 1.0, "depends_on": [], "error": None}
    project.update(extra)
    return json.dumps({"ok": status in ("built", "cached"), "seconds": 1.0, "projects": [project]})


TOKEN = "glpat-Zq9vX3c8Ww1tK7mN"
INDEX = f"http://ci:{TOKEN}@127.0.0.1:1/"


def member_command(stage: str, member: str = "core") -> list[str]:
    # Never --wheel-index: the index (and its credentials) goes through the environment.
    return ["grocker", "workspace", "build", "ws", "--only", member, "--no-deps", "--stage", stage, "--report", "-",
            "--verbose"]


class TestMemberSteps(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.setup_test_reactor()
        yield self.setup_test_build_step()

    @defer.inlineCallbacks
    def test_wheel_sets_properties_from_the_report(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerWheel(root="ws", member="core", wheel_index="http://127.0.0.1:1/"))
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=member_command("wheel"), log_environ=False,
                        env={"GROCKER_WORKSPACE_INDEX_URL": "http://127.0.0.1:1/"})
            .stdout(report()).stderr("[core] built in 1.0s\n").exit(0))
        self.expect_outcome(result=SUCCESS, state_string="wheel built")
        self.expect_property("grocker_status", "built", "wheel")
        self.expect_property("grocker_version", "1.2.0", "wheel")
        self.expect_property("grocker_wheel", "/w/core.whl", "wheel")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_index_credentials_go_through_the_environment_only(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerWheel(root="ws", member="core", wheel_index=INDEX, env={"LANG": "C.UTF-8"}))
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=member_command("wheel"), log_environ=False,
                        env={"LANG": "C.UTF-8", "GROCKER_WORKSPACE_INDEX_URL": INDEX})
            .stdout(report("failed", error=f"the wheel index https://ci:{TOKEN}@h answered HTTP 500")).exit(14))
        self.expect_outcome(result=FAILURE, state_string="wheel failed the wheel index https://***@h answered "
                                                         "HTTP 500 (failure)")
        self.expect_log_file("report.json", json.dumps(json.loads(report(
            "failed", error="the wheel index https://***@h answered HTTP 500")), indent=2))
        yield self.run_step()
        step = self.get_nth_step(0)
        assert TOKEN not in " ".join(step.command)
        assert TOKEN not in json.dumps(step.build.getProperties().asDict())

    @defer.inlineCallbacks
    def test_failed_stage_fails_with_the_error(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerTest(root="ws", member="core"))
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=member_command("test"), log_environ=False)
            .stdout(report("failed", error="the tests of core failed: 1 failed in 0.1s")).exit(11))
        self.expect_outcome(result=FAILURE, state_string="test failed the tests of core failed: 1 failed in 0.1s "
                                                         "(failure)")
        self.expect_property("grocker_status", "failed", "test")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_member_from_a_property(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerImage(root="ws", member=Property("grocker_member")))
        self.build.setProperty("grocker_member", "web", "test")
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=member_command("image", member="web"), log_environ=False)
            .stdout(report(name="web", kind="application", image_id="sha256:abc")).exit(0))
        self.expect_outcome(result=SUCCESS)
        self.expect_property("grocker_image_id", "sha256:abc", "image")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_smoke_and_push_set_image_and_digest(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerSmokeTest(root="ws", member="web"))
        self.setup_step(GrockerPush(root="ws", member="web"))
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=member_command("smoke", member="web"), log_environ=False)
            .stdout(report(image="reg:5000/web:2.0")).exit(0),
            ExpectShell(workdir="wkdir", command=member_command("push", member="web"), log_environ=False)
            .stdout(report(image="reg:5000/web:2.0", digest="sha256:def")).exit(0))
        self.expect_outcome(result=SUCCESS)  # the smoke step
        self.expect_outcome(result=SUCCESS)  # the push step
        yield self.run_step()
        self.assertEqual(self.get_nth_step(1).getProperty("grocker_digest"), "sha256:def")
        self.assertEqual(self.get_nth_step(0).getProperty("grocker_image"), "reg:5000/web:2.0")

    @defer.inlineCallbacks
    def test_no_report_is_a_failure(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerWheel(root="ws", member="core"))
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=member_command("wheel"), log_environ=False)
            .stderr("grocker: command not found\n").exit(127))
        self.expect_outcome(result=FAILURE)
        self.expect_log_file("error", "grocker printed no JSON report; see stdio")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_plan_sets_the_plan_property(self):  # type: ignore[no-untyped-def]
        plan = {"root": "ws", "order": ["core", "web"], "levels": [["core"], ["web"]], "members": [
            {"name": "core", "kind": "library", "up_to_date": True, "reason": None, "depends_on": []},
            {"name": "web", "kind": "application", "up_to_date": False, "reason": "never built",
             "depends_on": ["core"]}]}
        self.setup_step(GrockerPlan(root="ws", wheel_index=INDEX))
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=["grocker", "workspace", "plan", "ws", "--json"], log_environ=False,
                        env={"GROCKER_WORKSPACE_INDEX_URL": INDEX})
            .stdout(json.dumps(plan)).exit(0))
        self.expect_outcome(result=SUCCESS, state_string="2 members, 1 to build")
        self.expect_property("grocker_plan", plan, "plan")
        yield self.run_step()
        assert TOKEN not in json.dumps(self.get_nth_step(0).build.getProperties().asDict())


def test_configuration_errors() -> None:
    from buildbot.config.errors import ConfigErrors, capture_config_errors

    with pytest.raises(ConfigErrors, match="member is required"):
        with capture_config_errors(raise_on_error=True):
            GrockerWheel(root="ws")
    with pytest.raises(ConfigErrors, match="logEnviron=True would write the wheel index's credentials"):
        with capture_config_errors(raise_on_error=True):
            GrockerWheel(root="ws", member="core", wheel_index=INDEX, logEnviron=True)


class FakeTriggerable:
    """Stands in for the Triggerable scheduler: records triggers, finishes builds at once."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.triggered: list[tuple[str, dict[str, object]]] = []

    def trigger(self, waited_for, sourcestamps=None, set_props=None, parent_buildid=None,  # type: ignore[no-untyped-def]
                parent_relationship=None):
        props = set_props.asDict()
        member = props["grocker_member"][0]
        self.triggered.append((member, {k: v[0] for k, v in props.items()}))
        brid = len(self.triggered)
        result = FAILURE if member in self.failing else SUCCESS
        return defer.succeed((brid, {1: brid})), defer.succeed((result, {1: brid}))


def plan_of(*members: tuple[str, list[str], bool]) -> dict[str, object]:
    return {"order": [m[0] for m in members], "members": [
        {"name": n, "kind": "library", "version": "1", "depends_on": deps, "up_to_date": up,
         "reason": None if up else "never built", "stages": ["wheel", "test"]} for n, deps, up in members]}


class TestGraphStep(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.setup_test_reactor()
        yield self.setup_test_build_step()

    def run_graph(self, plan: dict[str, object], failing: set[str]) -> FakeTriggerable:
        from types import SimpleNamespace

        from buildbot_grocker import GrockerGraph

        fake = FakeTriggerable(failing)
        self.setup_step(GrockerGraph(scheduler="grocker-member", extra_properties={"grocker_push": True}))
        self.build.setProperty("grocker_plan", plan, "plan")
        self.master.scheduler_manager = SimpleNamespace(namedServices={"grocker-member": fake})
        return fake

    @defer.inlineCallbacks
    def test_failure_skips_exactly_the_dependents(self):  # type: ignore[no-untyped-def]
        plan = plan_of(("a", [], False), ("c", [], False), ("up", [], True), ("b", ["a"], False),
                       ("d", ["b", "up"], False), ("e", ["c", "up"], False))
        fake = self.run_graph(plan, failing={"a"})
        self.expect_outcome(result=FAILURE, state_string="2 built, 1 up to date, 1 failed, 2 skipped (failure)")
        self.expect_property("grocker_results", {
            "status": {"up": "up to date", "a": "failed", "c": "built", "e": "built", "b": "skipped", "d": "skipped"},
            "reasons": {"b": "dependency a failed", "d": "dependency b was skipped"}}, "members")
        yield self.run_step()
        self.assertEqual([m for m, _ in fake.triggered], ["a", "c", "e"])
        props = dict(fake.triggered[0][1])
        self.assertEqual((props["grocker_kind"], props["grocker_push"]), ("library", True))
        self.assertEqual(props["grocker_stages"], ["wheel", "test"])

    @defer.inlineCallbacks
    def test_everything_up_to_date_triggers_nothing(self):  # type: ignore[no-untyped-def]
        fake = self.run_graph(plan_of(("a", [], True), ("b", ["a"], True)), failing=set())
        self.expect_outcome(result=SUCCESS, state_string="2 up to date")
        yield self.run_step()
        self.assertEqual(fake.triggered, [])

    @defer.inlineCallbacks
    def test_without_a_plan_it_fails(self):  # type: ignore[no-untyped-def]
        from buildbot_grocker import GrockerGraph

        self.setup_step(GrockerGraph())
        self.expect_outcome(result=FAILURE)
        self.expect_log_file("error", "no plan in property grocker_plan; run GrockerPlan first")
        yield self.run_step()


class TestPluginStageStep(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.setup_test_reactor()
        yield self.setup_test_build_step()

    @defer.inlineCallbacks
    def test_plugin_stage_runs_as_its_own_step(self):  # type: ignore[no-untyped-def]
        from buildbot_grocker import GrockerPluginStage

        self.setup_step(GrockerPluginStage(stage_name="frontend", root="ws", member="web"))
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=member_command("plugin:frontend", member="web"), log_environ=False)
            .stdout(report(name="web")).exit(0))
        self.expect_outcome(result=SUCCESS, state_string="plugin:frontend built")
        yield self.run_step()


def test_member_steps_place_plugin_stages_by_position() -> None:
    from buildbot_grocker import member_steps

    steps = member_steps(plugin_stages=[("frontend", "after-compile", ("application",)),
                                        ("lint", "before-compile", ("library", "application"))], root=".")
    assert [s.name for s in steps] == ["lint", "wheel", "frontend", "test", "image", "smoke", "push"]


def release_document(lagging: list[dict[str, str]]) -> dict[str, object]:
    return {"release": "r1", "applications": {"web": {"digest": "sha256:1"}, "api": {"digest": "sha256:2"}},
            "document": {"image": "reg:5000/shop-release:r1", "digest": "sha256:d",
                         "pointer": "reg:5000/shop-release:latest"},
            "lagging": lagging}


def release_step_of(c: dict[str, object]) -> object:
    """The GrockerRelease step (factory) of the nightly builder that ``configure()`` added to ``c``."""
    from buildbot_grocker import GrockerRelease

    factory = c["builders"][0].factory  # type: ignore[index]
    return next(s for s in factory.steps if s.step_class is GrockerRelease)


def test_configure_serialises_the_releases_of_one_workspace() -> None:
    from buildbot.locks import LockAccess, MasterLock

    from buildbot_grocker import configure

    def lock_of(**kwargs: object) -> LockAccess:
        c: dict[str, object] = {}
        configure(c, workers=["w1"], push=True, **kwargs)  # type: ignore[arg-type]
        (access,) = release_step_of(c).kwargs["locks"]  # type: ignore[attr-defined]
        return access

    nightly = lock_of(repourl="file:///srv/shop.git", prefix="nightly")
    assert isinstance(nightly.lockid, MasterLock) and nightly.mode == "exclusive"
    # Another builder set for the same workspace (another prefix, branch, or worker) takes the same lock ...
    assert lock_of(repourl="file:///srv/shop.git", prefix="hotfix", branch="hotfix") == nightly
    # ... another workspace another one.
    assert lock_of(repourl="file:///srv/till.git").lockid != nightly.lockid
    assert lock_of(path="/srv/shop").lockid == MasterLock("grocker-release:/srv/shop")


class TestReleaseStep(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.setup_test_reactor()
        yield self.setup_test_build_step()

    command = ["grocker", "workspace", "release", "ws", "--json", "--release", "r1"]

    @defer.inlineCallbacks
    def test_a_published_release_with_lagging_tags_warns(self):  # type: ignore[no-untyped-def]
        from buildbot_grocker import GrockerRelease

        document = release_document([{"tag": "reg:5000/web:r1", "error": "HTTP 503"}])
        self.setup_step(GrockerRelease(root="ws", release="r1"))
        self.expect_commands(ExpectShell(workdir="wkdir", command=self.command, log_environ=False)
                             .stdout(json.dumps(document)).exit(18))
        self.expect_outcome(result=WARNINGS, state_string="release r1 2 applications 1 tags lag (warnings)")
        self.expect_property("grocker_release", document, "release")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_release_that_did_not_publish_fails(self):  # type: ignore[no-untyped-def]
        from buildbot_grocker import GrockerRelease

        self.setup_step(GrockerRelease(root="ws", release="r1"))
        self.expect_commands(ExpectShell(workdir="wkdir", command=self.command, log_environ=False)
                             .stderr("grocker: error: the release pointer moved under you (another release?)\n")
                             .exit(17))
        self.expect_outcome(result=FAILURE)
        yield self.run_step()

    @defer.inlineCallbacks
    def test_the_release_waits_for_the_workspace_lock(self):  # type: ignore[no-untyped-def]
        """The step configure() makes does not start while another release holds the master lock."""
        from buildbot_grocker import configure

        c: dict[str, object] = {}
        configure(c, workers=["w1"], path="ws", push=True)
        step = release_step_of(c)
        (access,) = step.kwargs["locks"]  # type: ignore[attr-defined]
        lock = yield self.master.botmaster.getLockByID(access.lockid, 0)
        other_release = object()
        lock.claim(other_release, access)
        self.setup_step(step)
        self.expect_commands(ExpectShell(workdir="wkdir", command=["grocker", "workspace", "release", "ws", "--json"],
                                         log_environ=False).stdout(json.dumps(release_document([]))).exit(0))
        self.expect_outcome(result=SUCCESS)
        running = self.run_step()
        self.reactor.advance(5)
        self.assertFalse(running.called, "the release ran while another release held the lock")
        self.assertTrue(self.get_nth_step(0)._waitingForLocks)
        lock.release(other_release, access)
        self.reactor.advance(1)
        yield running
