"""The one DAG scheduler: which members may start, which are skipped, and why.

Used by the workspace build (a thread pool runs the members) and by the Buildbot graph step
(Twisted deferreds wait for triggered builds). The scheduler itself runs nothing and starts
no thread: the caller asks :meth:`Scheduler.advance` what to start, runs it however it likes,
and reports each outcome with :meth:`Scheduler.succeeded` or :meth:`Scheduler.failed`.

The rules, the same for both callers:

* a member starts once every dependency in the graph succeeded (dependencies outside the
  graph, e.g. members left out by ``--no-deps``, are taken as satisfied);
* a member whose dependency failed or was skipped is skipped, with the reason naming that
  dependency (the first in sorted order), so exactly the transitive dependents of a failure
  are skipped and independent branches go on;
* :meth:`Scheduler.stop` (``--fail-fast``) skips everything not yet started;
* a member that can never start (a cycle, which the workspace refuses earlier, or a plan
  that names a dependency wrongly) is skipped as ``unreachable`` instead of waited for forever;
* everything is in the order given (the workspace's topological order), so runs are repeatable.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "pending", "running", "succeeded", "failed", "skipped"


@dataclass
class Batch:
    """What one :meth:`Scheduler.advance` decided: members to start, members skipped (with the reason)."""

    start: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Scheduler:
    """Dependency-ordered scheduling of a graph ``{member: dependencies}``."""

    def __init__(self, graph: Mapping[str, Iterable[str]], order: Sequence[str] = (), *,
                 done: Iterable[str] = ()) -> None:
        """``order``: the order to consider members in (others follow, sorted); ``done``: members already
        satisfied (up to date), never started."""
        self._deps = {name: sorted(set(deps) & set(graph) - {name}) for name, deps in graph.items()}
        self._self_loops = {name for name, deps in graph.items() if name in set(deps)}
        seen = [n for n in dict.fromkeys(order) if n in graph]
        self._order = seen + sorted(set(graph) - set(seen))
        self._status = {name: PENDING for name in self._order}
        self._reasons: dict[str, str] = {}
        for name in done:
            self._set(name, PENDING, SUCCEEDED)

    # -- queries ------------------------------------------------------------------------------------------
    def status(self, name: str) -> str:
        return self._status[name]

    def reason(self, name: str) -> str | None:
        """Why ``name`` was skipped (``None`` if it was not)."""
        return self._reasons.get(name)

    @property
    def running(self) -> list[str]:
        return [n for n in self._order if self._status[n] == RUNNING]

    @property
    def pending(self) -> list[str]:
        return [n for n in self._order if self._status[n] == PENDING]

    @property
    def settled(self) -> bool:
        """Nothing pending and nothing running: every member succeeded, failed or was skipped."""
        return all(s not in (PENDING, RUNNING) for s in self._status.values())

    def outcomes(self) -> dict[str, str]:
        return {n: self._status[n] for n in self._order}

    # -- decisions ----------------------------------------------------------------------------------------
    def advance(self, slots: int | None = None) -> Batch:
        """Skip the dependents of failures, then start up to ``slots`` more running members (``None``: all
        that are ready). The members returned in ``start`` are running from now on."""
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be at least 1 (not {slots}): nothing could ever start")
        batch = Batch(skipped=self._skip_blocked())
        free = None if slots is None else slots - len(self.running)
        for name in self.pending:
            if free is not None and free <= 0:
                break
            if name not in self._self_loops and all(self._status[d] == SUCCEEDED for d in self._deps[name]):
                self._status[name] = RUNNING
                batch.start.append(name)
                if free is not None:
                    free -= 1
        if not batch.start and not self.running:
            for name in self.pending:  # cannot happen with a valid graph; never wait forever
                self._skip(name, "unreachable")
                batch.skipped.append((name, "unreachable"))
        return batch

    def succeeded(self, name: str) -> None:
        self._set(name, RUNNING, SUCCEEDED)

    def failed(self, name: str) -> None:
        self._set(name, RUNNING, FAILED)

    def stop(self, reason: str) -> list[tuple[str, str]]:
        """Skip every member not yet started: dependents of a failure keep that reason, the others get ``reason``.
        Running members finish and are still reported."""
        skipped = self._skip_blocked()
        for name in self.pending:
            bad = self._first_bad(name)
            why = self._dependency_reason(bad) if bad else reason
            self._skip(name, why)
            skipped.append((name, why))
        return skipped

    # -- internals ----------------------------------------------------------------------------------------
    def _set(self, name: str, expected: str, status: str) -> None:
        if self._status.get(name) != expected:
            raise ValueError(f"member {name!r} is {self._status.get(name, 'not in the graph')}, not {expected}")
        self._status[name] = status

    def _skip(self, name: str, reason: str) -> None:
        self._status[name] = SKIPPED
        self._reasons[name] = reason

    def _first_bad(self, name: str) -> str | None:
        return next((d for d in self._deps[name] if self._status[d] in (FAILED, SKIPPED)), None)

    def _dependency_reason(self, dep: str) -> str:
        return f"dependency {dep} {'failed' if self._status[dep] == FAILED else 'was skipped'}"

    def _skip_blocked(self) -> list[tuple[str, str]]:
        # Repeated to a fixed point, so a skip reaches every transitive dependent whatever the order.
        skipped: list[tuple[str, str]] = []
        changed = True
        while changed:
            changed = False
            for name in self.pending:
                bad = self._first_bad(name)
                if bad:
                    why = self._dependency_reason(bad)
                    self._skip(name, why)
                    skipped.append((name, why))
                    changed = True
        return skipped


__all__ = ["Batch", "Scheduler"]
