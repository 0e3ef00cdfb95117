"""GrockerShip (the nightly's release shipped, application by application) with Buildbot's step-testing harness."""
from __future__ import annotations

import json

import pytest
from buildbot.process.results import FAILURE, SUCCESS
from buildbot.test.reactor import TestReactorMixin
from buildbot.test.steps import ExpectShell, TestBuildStepMixin
from twisted.internet import defer
from twisted.trial import unittest

from buildbot_grocker import GrockerShip, configure

DIGESTS = {"shop": "sha256:" + "a" * 64, "till": "sha256:" + "b" * 64, "web": "sha256:" + "c" * 64}
RELEASE = {"release": "r1", "applications": {
    name: {"version": "2.0.0", "image": f"reg:5000/{name}:2.0.0", "digest": digest}
    for name, digest in DIGESTS.items()}}


def pinned(name: str) -> str:
    return f"reg:5000/{name}@{DIGESTS[name]}"


def ship_report(name: str, status: str, error: str | None = None) -> str:
    return json.dumps({"name": name, "image": pinned(name), "status": status,
                       **({"error": {"message": error, "hint": "see the report"}} if error else {})})


class TestShipStep(TestBuildStepMixin, TestReactorMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.setup_test_reactor()
        yield self.setup_test_build_step()

    @defer.inlineCallbacks
    def test_each_application_of_the_release_is_shipped_pinned_by_digest(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerShip(root="ws", applications=["till", "shop"], services={"shop": "shop-prod"},
                                    extra_args=["--publish", "127.0.0.1:8080:8000"],
                                    app_args={"till": ["--project", "apps/till"]}))
        self.build.setProperty("grocker_release", RELEASE, "release")
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=["grocker", "ship", pinned("till"), "--name", "till", "--json",
                                                  "--publish", "127.0.0.1:8080:8000", "--project", "apps/till"],
                        log_environ=False).stdout(ship_report("till", "promoted")).exit(0),
            ExpectShell(workdir="wkdir", command=["grocker", "ship", pinned("shop"), "--name", "shop-prod", "--json",
                                                  "--publish", "127.0.0.1:8080:8000"],
                        log_environ=False).stdout(ship_report("shop", "deployed")).exit(0))
        verdicts = {"till": {"service": "till", "image": pinned("till"), "status": "promoted", "error": None},
                    "shop": {"service": "shop-prod", "image": pinned("shop"), "status": "deployed", "error": None}}
        self.expect_outcome(result=SUCCESS, state_string="till promoted shop deployed")
        self.expect_property("grocker_ship", verdicts, "ship")
        self.expect_log_file("ship.json", json.dumps(verdicts, indent=2))
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_rolled_back_application_stops_the_ones_after_it(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerShip(root="ws"))  # every application, sorted
        self.build.setProperty("grocker_release", RELEASE, "release")
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=["grocker", "ship", pinned("shop"), "--name", "shop", "--json"],
                        log_environ=False).stdout(ship_report("shop", "promoted")).exit(0),
            ExpectShell(workdir="wkdir", command=["grocker", "ship", pinned("till"), "--name", "till", "--json"],
                        log_environ=False)
            .stdout(ship_report("till", "rolled-back", "canary step 5%: error rate 0.21 against 0.00")).exit(15))
        self.expect_outcome(result=FAILURE, state_string="shop promoted till rolled-back web not shipped "
                                                         "canary step 5%: error rate 0.21 against 0.00 (failure)")
        self.expect_property("grocker_ship", {
            "shop": {"service": "shop", "image": pinned("shop"), "status": "promoted", "error": None},
            "till": {"service": "till", "image": pinned("till"), "status": "rolled-back",
                     "error": "canary step 5%: error rate 0.21 against 0.00"},
            "web": {"service": "web", "image": pinned("web"), "status": "not shipped", "error": None}}, "ship")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_ship_that_printed_no_report_is_an_error(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerShip(root="ws", applications=["web"]))
        self.build.setProperty("grocker_release", RELEASE, "release")
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=["grocker", "ship", pinned("web"), "--name", "web", "--json"],
                        log_environ=False).stderr("grocker: error: no Swarm\n").exit(15))
        self.expect_outcome(result=FAILURE, state_string="web error no Swarm (failure)")
        self.expect_property("grocker_ship", {"web": {"service": "web", "image": pinned("web"), "status": "error",
                                                      "error": "no Swarm"}}, "ship")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_an_error_report_among_other_output_is_read(self):  # type: ignore[no-untyped-def]
        """``--json`` prints the report also when the ship raised (status ``error``); whatever a wrapper printed
        around it is skipped; exit 0 with a bad verdict still fails."""
        self.setup_step(GrockerShip(root="ws", applications=["web", "shop"]))
        self.build.setProperty("grocker_release", RELEASE, "release")
        report = json.dumps({"name": "web", "image": pinned("web"), "status": "error", "timeline": [],
                             "error": {"message": "web did not become healthy", "hint": "see the task logs"}},
                            indent=2)
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=["grocker", "ship", pinned("web"), "--name", "web", "--json"],
                        log_environ=False)
            .stdout("wrapper: {starting}\n" + report + "\nwrapper: done\n")
            .stderr("grocker: error: web did not become healthy\n").exit(15))
        self.expect_outcome(result=FAILURE,
                            state_string="web error shop not shipped web did not become healthy (failure)")
        self.expect_property("grocker_ship", {
            "web": {"service": "web", "image": pinned("web"), "status": "error",
                    "error": "web did not become healthy"},
            "shop": {"service": "shop", "image": pinned("shop"), "status": "not shipped", "error": None}}, "ship")
        self.expect_log_file("web.json", report)
        yield self.run_step()

    @defer.inlineCallbacks
    def test_a_failed_staging_with_exit_zero_still_fails(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerShip(root="ws", applications=["web"]))
        self.build.setProperty("grocker_release", RELEASE, "release")
        self.expect_commands(
            ExpectShell(workdir="wkdir", command=["grocker", "ship", pinned("web"), "--name", "web", "--json"],
                        log_environ=False).stdout(ship_report("web", "failed-staging", "tests failed")).exit(0))
        self.expect_outcome(result=FAILURE, state_string="web failed-staging tests failed (failure)")
        yield self.run_step()

    @defer.inlineCallbacks
    def test_without_a_release_nothing_is_shipped(self):  # type: ignore[no-untyped-def]
        self.setup_step(GrockerShip(root="ws", applications=["web"]))
        self.expect_outcome(result=FAILURE, state_string="not in the release: web (failure)")
        yield self.run_step()


def test_configure_ships_only_when_asked_and_after_the_release() -> None:
    from buildbot_grocker import GrockerRelease

    c: dict[str, object] = {}
    configure(c, workers=["w1"], path="ws", push=True)
    assert GrockerShip not in [s.step_class for s in c["builders"][0].factory.steps]  # type: ignore[index]
    c = {}
    configure(c, workers=["w1"], path="ws", push=True, ship=True, ship_applications=["shop"],
              ship_services={"shop": "shop-prod"}, ship_args=["--canary-steps", "5,50,100"])
    steps = c["builders"][0].factory.steps  # type: ignore[index]
    assert [s.step_class for s in steps][-2:] == [GrockerRelease, GrockerShip]
    assert steps[-1].kwargs["applications"] == ["shop"] and steps[-1].kwargs["services"] == {"shop": "shop-prod"}
    assert steps[-1].kwargs["extra_args"] == ["--canary-steps", "5,50,100"]
    with pytest.raises(ValueError, match="needs push=True"):
        configure({}, workers=["w1"], path="ws", ship=True)
