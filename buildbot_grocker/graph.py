"""The graph step: one triggered build per workspace member, in dependency order.

It reads the plan (property ``grocker_plan``, set by :class:`~buildbot_grocker.steps.GrockerPlan`)
and triggers the member builder's Triggerable scheduler for every member that is not up
to date, as soon as all its internal dependencies succeeded, so independent members run
at the same time on whichever workers are free. When a member fails, its dependents are
reported skipped (with the failed dependency named) and never triggered; unrelated
members go on. The decisions are :class:`setuptools_grocker.pipeline.scheduler.Scheduler`'s, the
same as a local ``grocker workspace build``. The step's result is the worst of its children.

Run it on a builder of its own (``configure`` uses a LocalWorker): it waits for the
member builds, so sharing a worker slot with them could deadlock.
"""
from __future__ import annotations

from typing import Any

from buildbot import config
from buildbot.process import buildstep
from buildbot.process.properties import Properties
from buildbot.process.results import FAILURE, SUCCESS, WARNINGS, Results, worst_status
from twisted.internet import defer

from setuptools_grocker.pipeline.scheduler import Scheduler


class GrockerGraph(buildstep.BuildStep):
    """Trigger member builds in dependency order; skip the dependents of failures."""

    name = "members"
    renderables = ["scheduler", "extra_properties"]

    def __init__(self, scheduler: str = "grocker-member", plan_property: str = "grocker_plan",
                 extra_properties: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not scheduler:
            config.error("GrockerGraph: scheduler (a Triggerable scheduler's name) is required")
        self.scheduler = scheduler
        self.plan_property = plan_property
        self.extra_properties = extra_properties or {}
        self._wake: defer.Deferred[None] | None = None

    def _find_scheduler(self) -> Any:
        schedulers = self.master.scheduler_manager.namedServices
        if self.scheduler not in schedulers:
            raise ValueError(f"unknown Triggerable scheduler {self.scheduler!r}")
        return schedulers[self.scheduler]

    def _sourcestamps(self) -> list[dict[str, Any]]:
        got = self.getProperty("got_revision", {})
        if not isinstance(got, dict):
            got = {"": got}
        stamps = []
        for ss in self.build.getAllSourceStamps():
            data = ss.asDict()
            if ss.codebase in got and got[ss.codebase]:
                data["revision"] = got[ss.codebase]
            stamps.append(data)
        return stamps

    @defer.inlineCallbacks
    def run(self):
        plan = self.getProperty(self.plan_property)
        if not isinstance(plan, dict) or "members" not in plan:
            yield self.addCompleteLog("error", f"no plan in property {self.plan_property}; run GrockerPlan first")
            return FAILURE
        members = {m["name"]: m for m in plan["members"]}
        up_to_date = [name for name, m in members.items() if m["up_to_date"]]
        sched = Scheduler({name: m["depends_on"] for name, m in members.items()}, plan["order"], done=up_to_date)
        status: dict[str, str] = {name: "up to date" for name in up_to_date}
        reasons: dict[str, str] = {}
        running: dict[str, Any] = {}
        log = yield self.addLog("members")
        scheduler = self._find_scheduler()
        stamps = self._sourcestamps()
        yield log.addStdout(f"{len(members)} members, {len(members) - len(up_to_date)} to build, "
                            f"{len(up_to_date)} up to date\n")
        while not sched.settled:
            batch = sched.advance()
            for name, why in batch.skipped:
                status[name], reasons[name] = "skipped", why
                yield log.addStdout(f"{name}: skipped ({why})\n")
            for name in batch.start:
                running[name] = yield self._trigger(scheduler, stamps, members[name], plan)
                yield log.addStdout(f"{name}: started ({members[name]['reason']})\n")
            if not running:
                break
            self._wake = defer.Deferred()
            finished = [n for n, d in running.items() if d.called]
            if not finished:
                yield self._wake
                finished = [n for n, d in running.items() if d.called]
            for name in finished:
                results = running.pop(name).result
                status[name] = "built" if results in (SUCCESS, WARNINGS) else "failed"
                (sched.succeeded if status[name] == "built" else sched.failed)(name)
                yield log.addStdout(f"{name}: {status[name]} ({Results[results]})\n")
        self.setProperty("grocker_results", {"status": status, "reasons": reasons}, self.name)
        counts = {s: sum(1 for v in status.values() if v == s) for s in ("built", "up to date", "failed", "skipped")}
        self.descriptionDone = [", ".join(f"{v} {k}" for k, v in counts.items() if v)]
        result = SUCCESS
        for value in status.values():
            result = worst_status(result, FAILURE if value in ("failed", "skipped") else SUCCESS)
        return result

    @defer.inlineCallbacks
    def _trigger(self, scheduler: Any, stamps: list[dict[str, Any]], member: dict[str, Any],
                 plan: dict[str, Any]):
        props = Properties()
        props.update({
            "grocker_member": member["name"],
            "grocker_kind": member["kind"],
            "grocker_stages": member.get("stages", []),
            "grocker_reason": member["reason"],
            **dict(self.extra_properties),
        }, "GrockerGraph")
        props.setProperty("reason", f"grocker: {member['name']} ({member['reason']})", "GrockerGraph")
        ids, results = scheduler.trigger(waited_for=True, sourcestamps=stamps, set_props=props,
                                         parent_buildid=self.build.buildid, parent_relationship="grocker member")
        _, brids = yield ids
        for brid in brids.values():
            yield self.addURL(f"{member['name']} #{brid}", f"buildrequests/{brid}")
        done: defer.Deferred[int] = defer.Deferred()

        def finished(outcome: Any) -> None:
            value = outcome[0] if isinstance(outcome, tuple) else FAILURE
            done.callback(value)
            if self._wake is not None and not self._wake.called:
                self._wake.callback(None)

        results.addBoth(finished)
        return done


__all__ = ["GrockerGraph"]
