"""The security-refresh Buildbot steps (refresh-root, rebase) with Buildbot's own step-testing harness."""
from __future__ import annotations

import json

from buildbot.process.results import FAILURE, SUCCESS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import ExpectShell, TestBuildStepMixin
from twisted.internet import defer
from twisted.trial import unittest

from buildbot_grocker import GrockerRebase, GrockerRefreshRoot

CHANGE = {"name": "libssl3", "old": "3.0.11-1~deb12u2", "new": "3.0.13-1~deb12u1"}


def rebase_report(image: str, rebased: bool = True) -> dict[str, object]:
    return {"image": image, "image_id": "sha256:old", "rebased": rebased, "reason": None if rebased else "already",
            "new_image_id": "sha256:new" if rebased else None, "tag": image if rebased else None,
            "packages_changed": [CHANGE] if rebased else [], "smoke_test": "passed" if rebased else None}


class TestRefreshSteps(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.setup_test_reactor()
        yield self.setup_test_build_step()

    @defer.inlineCallbacks
    def test_refresh_root_reports_the_packages_changed(self):  # type: ignore[no-untyped-def]
        report = {"refreshed": True, "packages_changed": [CHANGE], "pending": [CHANGE]}
        self.setup_step(GrockerRefreshRoot(root="ws"))
        self.expect_commands(ExpectShell(workdir="wkdir", command=["grocker", "refresh-root", "ws", "--json"],
                                         log_environ=False).stdout(json.dumps(report)).exit(0))
        self.expect_outcome(result=SUCCESS, state_string="root refreshed, 1 Debian packages changed")
        self.expect_property("grocker_root_refresh", report, "refresh-root")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_rebase_appends_what_it_did_to_the_nightly_s_list(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerRebase(root="ws/shop", image="reg:5000/shop:1.4.0"))
        earlier = {"image": "reg:5000/till:2.0", "rebased": False, "new_image_id": None, "tag": None,
                   "packages_changed": []}
        self.build.setProperty("grocker_rebased", [earlier], "rebase")
        self.expect_commands(ExpectShell(workdir="wkdir", command=["grocker", "rebase", "reg:5000/shop:1.4.0",
                                                                   "--project", "ws/shop", "--report", "-"],
                                         log_environ=False)
                             .stdout(json.dumps(rebase_report("reg:5000/shop:1.4.0"))).exit(0))
        self.expect_outcome(result=SUCCESS, state_string="rebased reg:5000/shop:1.4.0 1 Debian packages changed")
        self.expect_property("grocker_rebased", [earlier, {
            "image": "reg:5000/shop:1.4.0", "rebased": True, "new_image_id": "sha256:new",
            "tag": "reg:5000/shop:1.4.0", "packages_changed": [CHANGE]}], "rebase")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_refused_rebase_fails_the_step(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerRebase(root="ws", image="shop:1", tag="shop:1-r"))
        self.expect_commands(ExpectShell(workdir="wkdir", command=["grocker", "rebase", "shop:1", "--project", "ws",
                                                                   "--report", "-", "--tag", "shop:1-r"],
                                         log_environ=False)
                             .stderr("grocker: error: cannot rebase shop:1 onto pypy: Python version 3.11 -> 3.9\n")
                             .exit(19))
        self.expect_outcome(result=FAILURE, state_string="shop:1 not rebased cannot rebase shop:1 onto pypy: "
                                                         "Python version 3.11 -> 3.9 (failure)")
        self.expect_property("grocker_rebased", [{
            "image": "shop:1", "rebased": False, "new_image_id": None, "tag": None, "packages_changed": [],
            "error": "cannot rebase shop:1 onto pypy: Python version 3.11 -> 3.9"}], "rebase")
        yield self.run_step()


class TestRefreshReport(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.setup_test_reactor()
        yield self.setup_test_build_step()

    @defer.inlineCallbacks
    def test_the_report_names_the_images_rebased_and_the_packages_changed(self):  # type: ignore[no-untyped-def]
        from buildbot_grocker import GrockerRefreshReport

        self.setup_step(GrockerRefreshReport())
        shop = {"image": "reg:5000/shop:1.4.0", "rebased": True, "new_image_id": "sha256:new",
                "tag": "reg:5000/shop:1.4.0", "packages_changed": [CHANGE]}
        till = {"image": "reg:5000/till:2.0", "rebased": False, "new_image_id": None, "tag": None,
                "packages_changed": []}
        self.build.setProperty("grocker_root_refresh", {"refreshed": True, "packages_changed": [CHANGE]}, "refresh")
        self.build.setProperty("grocker_rebased", [shop, till], "rebase")
        report = {"refreshed": True, "packages_changed": [CHANGE], "rebased": [shop], "not_rebased": [till]}
        self.expect_outcome(result=SUCCESS, state_string="root refreshed (libssl3 3.0.11-1~deb12u2 -> "
                                                         "3.0.13-1~deb12u1) rebased reg:5000/shop:1.4.0")
        self.expect_property("grocker_refresh_report", report, "refresh-report")
        self.expect_log_file("refresh.json", json.dumps(report, indent=2))
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_current_root_reports_nothing_rebased(self):  # type: ignore[no-untyped-def]
        from buildbot_grocker import GrockerRefreshReport

        self.setup_step(GrockerRefreshReport())
        self.build.setProperty("grocker_root_refresh", {"refreshed": False, "packages_changed": []}, "refresh")
        self.expect_outcome(result=SUCCESS, state_string="root current no image rebased")
        yield self.run_step()


class TestRefreshReportAfterAFailure(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.setup_test_reactor()
        yield self.setup_test_build_step()

    @defer.inlineCallbacks
    def test_a_failed_refresh_is_not_reported_as_a_current_root(self):  # type: ignore[no-untyped-def]
        from buildbot.process.results import SKIPPED

        from buildbot_grocker import GrockerRefreshReport

        self.setup_step(GrockerRefreshReport())
        self.expect_outcome(result=SKIPPED, state_string="no refresh report (see refresh-root) (skipped)")
        yield self.run_step()


class Step:
    """What ``doStepIf`` is given: something with the build's properties."""

    def __init__(self, **properties: object) -> None:
        self.properties = properties

    def getProperty(self, name: str) -> object:  # noqa: N802 (Buildbot's name)
        return self.properties.get(name)


def test_rebase_runs_once_a_refreshed_root_is_current() -> None:
    from buildbot_grocker import steps

    def report(tag: str, refreshed: bool = False) -> dict[str, object]:
        return {"recipe_key": "abc", "root": {"tag": tag, "id": "sha256:1"}, "refreshed": refreshed}

    wanted = steps.refreshed_root_current
    assert not wanted(Step())  # no refresh ran
    assert not wanted(Step(grocker_root_refresh=report("grocker/root:abc")))  # never refreshed: the recipe's root
    assert wanted(Step(grocker_root_refresh=report("grocker/root:def", refreshed=True)))  # refreshed tonight
    assert wanted(Step(grocker_root_refresh=report("grocker/root:def")))  # an earlier refresh's root is current
    workspace = {"refreshed": False, "roots": [report("grocker/root:abc"), report("grocker/root:def")]}
    assert wanted(Step(grocker_root_refresh=workspace))
    assert not wanted(Step(grocker_root_refresh={"refreshed": False, "roots": [report("grocker/root:abc")]}))


def test_configure_adds_the_refresh_builder_before_the_nightly() -> None:
    import pytest
    from buildbot.schedulers.forcesched import ForceScheduler
    from buildbot.schedulers.timed import Nightly

    from buildbot_grocker import GrockerRefreshReport, configure

    c: dict[str, object] = {}
    assert "refresh" not in configure(c, workers=["w1"], path="ws")  # off by default
    c = {}
    names = configure(c, workers=["w1"], path="ws", hour=2, refresh=True,
                      rebase=["127.0.0.1:5000/shop:1.4", "till:2"], grocker=["gk"])
    assert (names["refresh"], names["refresh_force"]) == ("grocker-refresh", "grocker-refresh-force")
    builder = next(b for b in c["builders"] if b.name == "grocker-refresh")  # type: ignore[attr-defined]
    assert builder.workernames == ["grocker-orchestrator"]
    classes = [s.step_class for s in builder.factory.steps]
    assert classes == [GrockerRefreshRoot, GrockerRebase, GrockerRebase, GrockerRefreshReport]
    shop, till = builder.factory.steps[1:3]
    # A reference naming a registry is pushed (signed) after its smoke test; a local one is only tagged.
    assert shop.kwargs["extra_args"] == ["--push"] and till.kwargs["extra_args"] == []
    assert shop.kwargs["doStepIf"] is till.kwargs["doStepIf"]
    nightly = next(s for s in c["schedulers"] if s.name == "grocker-refresh")  # type: ignore[attr-defined]
    assert isinstance(nightly, Nightly) and nightly._config_kwargs["hour"] == 1
    assert nightly.builderNames == ["grocker-refresh"]
    assert any(isinstance(s, ForceScheduler) and s.name == "grocker-refresh-force" for s in c["schedulers"])
    with pytest.raises(ValueError, match="needs refresh=True"):
        configure({}, workers=["w1"], path="ws", rebase=["shop:1"])
