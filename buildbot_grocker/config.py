"""``configure(c, ...)``: one call in master.cfg adds the grocker builders and schedulers."""
from __future__ import annotations

from typing import Any, Sequence

from buildbot.plugins import schedulers, steps, util, worker

from buildbot_grocker.graph import GrockerGraph
from buildbot_grocker.steps import GrockerPlan, GrockerRelease, member_steps


def release_lock(workspace: str) -> util.MasterLock:
    """The master-wide lock of the releases of one workspace (its git URL or its path on the workers).

    The same name is the same lock, whatever the builder or the ``configure()`` call: two
    releases of one workspace (nightly and forced, or two prefixes) run one after the other,
    even on different workers, where the ``.grocker/release.lock`` file of each cannot see
    the other.
    """
    return util.MasterLock(f"grocker-release:{workspace}")


def configure(c: dict[str, Any], *, workers: Sequence[str], repourl: str | None = None, branch: str = "main",
              path: str | None = None, hour: int = 2, minute: int = 0, registry: str | None = None,
              wheel_index: str | None = None, push: bool = False, grocker: str | list[str] = "grocker",
              orchestrator_worker: str | None = None, env: dict[str, str] | None = None,
              prefix: str = "grocker", plugin_stages: Sequence[tuple[str, str, Sequence[str]]] = ()) -> dict[str, str]:
    """Add to ``c`` the builders and schedulers of a nightly full build of a workspace.

    The workspace comes from a git repository (``repourl`` and ``branch``; every worker
    gets its own checkout) or from a ``path`` present on every worker. ``workers`` build
    the members; the orchestrating build runs on ``orchestrator_worker`` (default: a
    LocalWorker added here), so it can never take a slot the member builds need.
    Wheels travel between workers through ``wheel_index``; images through ``registry``
    (set it in the workspace's ``[tool.grocker] registry`` too, and pass ``push=True``).

    Adds: builders ``PREFIX-nightly`` and ``PREFIX-member``; schedulers ``PREFIX-nightly``
    (Nightly at ``hour:minute``), ``PREFIX-force`` (Force) and ``PREFIX-member``
    (Triggerable). ``plugin_stages`` (``[(name, position, kinds)]``) makes plugin stages
    steps of their own in the member builds. Returns their names.
    """
    if (repourl is None) == (path is None):
        raise ValueError("configure(): give either repourl (a git repository) or path (a directory)")
    if not workers:
        raise ValueError("configure(): workers must name at least one worker")
    names = {"orchestrator": f"{prefix}-nightly", "member": f"{prefix}-member",
             "nightly": f"{prefix}-nightly", "force": f"{prefix}-force", "trigger": f"{prefix}-member"}
    c.setdefault("workers", [])
    c.setdefault("builders", [])
    c.setdefault("schedulers", [])
    if orchestrator_worker is None:
        orchestrator_worker = f"{prefix}-orchestrator"
        c["workers"].append(worker.LocalWorker(orchestrator_worker))
    root = path or "."
    common: dict[str, Any] = {"root": root, "grocker": grocker, "wheel_index": wheel_index, "env": dict(env or {}),
              "haltOnFailure": True}

    def checkout() -> list[Any]:
        if repourl is None:
            return []
        return [steps.Git(repourl=repourl, branch=branch, mode="full", method="clean", logEnviron=False,
                          haltOnFailure=True)]

    orchestrator = util.BuildFactory([
        *checkout(),
        GrockerPlan(**common),
        GrockerGraph(scheduler=names["trigger"], extra_properties={"grocker_push": push}, haltOnFailure=True),
        # The release moves only after every member build succeeded, one release of a workspace at a time.
        *([GrockerRelease(root=root, grocker=grocker, env=dict(env or {}), haltOnFailure=True,
                          locks=[release_lock(repourl or root).access("exclusive")])] if push else []),
    ])
    member = util.BuildFactory([*checkout(), *member_steps(plugin_stages=plugin_stages, **common)])
    c["builders"] += [
        util.BuilderConfig(name=names["orchestrator"], workernames=[orchestrator_worker], factory=orchestrator,
                           collapseRequests=False),
        util.BuilderConfig(name=names["member"], workernames=list(workers), factory=member,
                           collapseRequests=False),
    ]
    c["schedulers"] += [
        schedulers.Nightly(name=names["nightly"], builderNames=[names["orchestrator"]], hour=hour, minute=minute,
                           onlyIfChanged=False, **({"codebases": {"": {"repository": repourl, "branch": branch}}}
                                                   if repourl else {})),
        schedulers.ForceScheduler(name=names["force"], builderNames=[names["orchestrator"]],
                                  codebases=[util.CodebaseParameter("", branch=util.FixedParameter("branch", branch),
                                                                    repository=util.FixedParameter("repository",
                                                                                                   repourl or ""),
                                                                    revision=util.StringParameter("revision",
                                                                                                  default=""),
                                                                    project=util.FixedParameter("project", ""))]),
        schedulers.Triggerable(name=names["trigger"], builderNames=[names["member"]]),
    ]
    if registry:
        c.setdefault("properties", {})["grocker_registry"] = registry
    return names
