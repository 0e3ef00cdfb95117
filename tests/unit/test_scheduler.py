"""The one DAG scheduler (setuptools_grocker.pipeline.scheduler), driven by hand as its callers drive it."""
from __future__ import annotations

from typing import Callable, Iterable

import pytest

from setuptools_grocker.pipeline.scheduler import Scheduler

DIAMOND = {"base": [], "left": ["base"], "right": ["base"], "app": ["left", "right"]}


def drive(sched: Scheduler, fails: Iterable[str] = (), slots: int | None = None,
          on_fail: Callable[[Scheduler], object] | None = None) -> list[list[str]]:
    """Run the scheduler to the end, finishing every started member at once; the batches started, in order."""
    fails = set(fails)
    waves: list[list[str]] = []
    while not sched.settled:
        batch = sched.advance(slots)
        if batch.start:
            waves.append(batch.start)
        running = sched.running
        if not running:
            break
        for name in running:
            if name in fails:
                sched.failed(name)
                if on_fail:
                    on_fail(sched)
            else:
                sched.succeeded(name)
    assert sched.settled
    return waves


def skipped(sched: Scheduler) -> dict[str, str | None]:
    return {n: sched.reason(n) for n, s in sched.outcomes().items() if s == "skipped"}


def test_diamond_runs_in_levels():
    sched = Scheduler(DIAMOND, ["base", "left", "right", "app"])
    assert drive(sched) == [["base"], ["left", "right"], ["app"]]
    assert set(sched.outcomes().values()) == {"succeeded"}


def test_member_starts_only_when_every_dependency_succeeded():
    sched = Scheduler(DIAMOND, ["base", "left", "right", "app"])
    assert sched.advance().start == ["base"]
    assert sched.advance().start == []  # base still running: nothing else is ready, nothing is unreachable
    sched.succeeded("base")
    assert sched.advance().start == ["left", "right"]
    sched.succeeded("left")
    assert sched.advance().start == []  # app waits for right
    assert sched.status("app") == "pending"
    sched.succeeded("right")
    assert sched.advance().start == ["app"]


def test_failure_in_diamond_skips_the_top_naming_the_dependency():
    sched = Scheduler(DIAMOND, ["base", "left", "right", "app"])
    drive(sched, fails={"left"})
    assert sched.outcomes() == {"base": "succeeded", "left": "failed", "right": "succeeded", "app": "skipped"}
    assert skipped(sched) == {"app": "dependency left failed"}


def test_failure_skips_exactly_its_transitive_dependents():
    graph = {"a": [], "b": ["a"], "c": ["b"], "d": ["c"], "x": [], "y": ["x"], "z": ["y", "a"], "w": ["x"]}
    sched = Scheduler(graph, ["a", "x", "b", "y", "w", "c", "z", "d"])
    drive(sched, fails={"b"})
    assert skipped(sched) == {"c": "dependency b failed", "d": "dependency c was skipped"}
    assert sched.outcomes() == {"a": "succeeded", "x": "succeeded", "b": "failed", "y": "succeeded",
                                "w": "succeeded", "c": "skipped", "z": "succeeded", "d": "skipped"}


def test_independent_branch_keeps_running_while_the_other_fails():
    graph = {"lib1": [], "app1": ["lib1"], "lib2": [], "app2": ["lib2"]}
    sched = Scheduler(graph, ["lib1", "lib2", "app1", "app2"])
    assert sched.advance().start == ["lib1", "lib2"]
    sched.failed("lib1")
    batch = sched.advance()
    assert batch.skipped == [("app1", "dependency lib1 failed")]
    assert batch.start == []  # lib2 still running
    sched.succeeded("lib2")
    assert sched.advance().start == ["app2"]
    sched.succeeded("app2")
    assert sched.settled


def test_skip_reason_names_the_first_bad_dependency_in_sorted_order():
    graph = {"zlib": [], "alib": [], "app": ["zlib", "alib"]}
    sched = Scheduler(graph, ["zlib", "alib", "app"])
    drive(sched, fails={"zlib", "alib"})
    assert skipped(sched) == {"app": "dependency alib failed"}


def test_skips_reach_dependents_listed_before_their_dependency():
    # An order that is not topological must not leave a dependent of a skipped member "unreachable".
    graph = {"a": [], "b": ["a"], "c": ["b"]}
    sched = Scheduler(graph, ["c", "b", "a"])
    drive(sched, fails={"a"})
    assert skipped(sched) == {"b": "dependency a failed", "c": "dependency b was skipped"}


def test_slots_limit_how_many_run_at_once_in_order():
    graph = {n: [] for n in "abcde"}
    sched = Scheduler(graph, list("edcba"))
    assert drive(sched, slots=2) == [["e", "d"], ["c", "b"], ["a"]]
    sched = Scheduler(graph, list("abcde"))
    assert sched.advance(2).start == ["a", "b"]
    assert sched.advance(2).start == []
    sched.succeeded("b")
    assert sched.advance(2).start == ["c"]


def test_zero_slots_is_refused_not_read_as_unreachable():
    with pytest.raises(ValueError, match="slots must be at least 1"):
        Scheduler({"a": []}).advance(0)


def test_order_is_deterministic_and_members_outside_order_follow_sorted():
    graph = {"b": [], "a": [], "c": []}
    assert Scheduler(graph, ["c"]).advance().start == ["c", "a", "b"]
    assert Scheduler(graph).advance().start == ["a", "b", "c"]


def test_dependencies_outside_the_graph_are_satisfied():
    # --no-deps / --only: a member's dependencies that are not selected are already built on disk.
    sched = Scheduler({"app": ["lib"]}, ["app"])
    assert sched.advance().start == ["app"]


def test_done_members_count_as_succeeded_and_never_start():
    sched = Scheduler(DIAMOND, ["base", "left", "right", "app"], done=["base", "right"])
    assert drive(sched) == [["left"], ["app"]]
    assert sched.status("base") == "succeeded"


def test_stop_skips_everything_not_started_keeping_dependency_reasons():
    graph = {"a": [], "b": [], "c": ["a"], "d": ["b"], "e": []}
    sched = Scheduler(graph, ["a", "b", "c", "d", "e"])
    assert sched.advance(2).start == ["a", "b"]
    sched.failed("a")
    stopped = sched.stop("stopped after a failure (--fail-fast)")
    assert stopped == [("c", "dependency a failed"), ("d", "stopped after a failure (--fail-fast)"),
                       ("e", "stopped after a failure (--fail-fast)")]
    assert not sched.settled  # b still runs and is still reported
    sched.succeeded("b")
    assert sched.settled and sched.advance().start == []


def test_fail_fast_skips_a_dependent_of_a_stopped_member_as_dependency_skipped():
    graph = {"a": [], "b": [], "c": ["b"]}
    sched = Scheduler(graph, ["a", "b", "c"])
    drive(sched, fails={"a"}, slots=1, on_fail=lambda s: s.stop("stopped"))
    assert skipped(sched) == {"b": "stopped", "c": "dependency b was skipped"}


def test_cycle_is_unreachable_not_a_hang():
    # The workspace refuses cycles when it loads (test_workspace_graph.py::test_cycle_names_its_members);
    # the Buildbot graph step reads a plan from a property, so the scheduler must not hang on one either.
    sched = Scheduler({"a": ["b"], "b": ["a"], "c": [], "d": ["d"]}, ["c", "a", "b", "d"])
    assert drive(sched) == [["c"]]
    assert skipped(sched) == {"a": "unreachable", "b": "unreachable", "d": "unreachable"}


def test_outcomes_must_follow_a_start():
    sched = Scheduler(DIAMOND, ["base", "left", "right", "app"])
    with pytest.raises(ValueError, match="'left' is pending, not running"):
        sched.succeeded("left")
    with pytest.raises(ValueError, match="not in the graph"):
        sched.failed("nope")
    sched.advance()
    sched.succeeded("base")
    with pytest.raises(ValueError):
        sched.failed("base")


def test_empty_graph_is_settled():
    sched = Scheduler({})
    assert sched.settled and sched.advance().start == [] and drive(sched) == []
