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
        self.expect_outcome(result=FAILURE)
        yield self.run_step()
