"""``configure(c, ...)``: one call in master.cfg adds the grocker builders and schedulers."""
from __future__ import annotations

from typing import Any, Sequence

from buildbot.plugins import schedulers, steps, util, worker
from buildbot.process.results import SKIPPED

from buildbot_grocker.graph import GrockerGraph
from buildbot_grocker.steps import (
    GrockerPlan,
    GrockerRebase,
    GrockerRefreshReport,
    GrockerRefreshRoot,
    GrockerRelease,
    GrockerShip,
    member_steps,
    refreshed_root_current,
)
from setuptools_grocker.ref import ImageRef


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
              prefix: str = "grocker", plugin_stages: Sequence[tuple[str, str, Sequence[str]]] = (),
              refresh: bool = False, refresh_hour: int | None = None, rebase: Sequence[str] = (),
              refresh_worker: str | None = None, ship: bool = False, ship_applications: Sequence[str] | None = None,
              ship_services: dict[str, str] | None = None, ship_args: Sequence[str] = (),
              ship_app_args: dict[str, Sequence[str]] | None = None) -> dict[str, str]:
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

    ``refresh=True`` adds the security refresh (off by default: it changes what deployed images run): a
    builder ``PREFIX-refresh`` on ``refresh_worker`` (default: the orchestrator's, the engine that holds the
    images), scheduled at ``refresh_hour`` (default: an hour before the nightly build, whose plan then builds on
    the refreshed root) and forced by ``PREFIX-refresh-force``: ``grocker refresh-root`` (a new root only when
    the mirror has newer packages), then ``grocker rebase`` of each image of ``rebase`` (pushed, signed, when the
    reference names a registry) once a refreshed root is current, then a report of what changed.

    ``ship=True`` (needs ``push=True``) ends the nightly with ``GrockerShip``: ``grocker ship`` of each
    application of the release just made (``ship_applications``, default all), to the production service
    ``ship_services[app]`` (default: its name), with ``ship_args`` and ``ship_app_args[app]``.
    """
    if (repourl is None) == (path is None):
        raise ValueError("configure(): give either repourl (a git repository) or path (a directory)")
    if not workers:
        raise ValueError("configure(): workers must name at least one worker")
    if ship and not push:
        raise ValueError("configure(): ship=True ships the release the nightly makes; it needs push=True")
    if rebase and not refresh:
        raise ValueError("configure(): rebase lists the images the security refresh rebases; it needs refresh=True")
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

    def codebases() -> list[Any]:
        return [util.CodebaseParameter("", branch=util.FixedParameter("branch", branch),
                                       repository=util.FixedParameter("repository", repourl or ""),
                                       revision=util.StringParameter("revision", default=""),
                                       project=util.FixedParameter("project", ""))]

    orchestrator = util.BuildFactory([
        *checkout(),
        GrockerPlan(**common),
        GrockerGraph(scheduler=names["trigger"], extra_properties={"grocker_push": push}, haltOnFailure=True),
        # The release moves only after every member build succeeded, one release of a workspace at a time.
        *([GrockerRelease(root=root, grocker=grocker, env=dict(env or {}), haltOnFailure=True,
                          locks=[release_lock(repourl or root).access("exclusive")])] if push else []),
        *([GrockerShip(root=root, grocker=grocker, env=dict(env or {}), applications=ship_applications,
                       services=dict(ship_services or {}), extra_args=list(ship_args),
                       app_args={k: list(v) for k, v in (ship_app_args or {}).items()}, haltOnFailure=True)]
          if ship else []),
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
        schedulers.ForceScheduler(name=names["force"], builderNames=[names["orchestrator"]], codebases=codebases()),
        schedulers.Triggerable(name=names["trigger"], builderNames=[names["member"]]),
    ]
    if refresh:
        names.update(refresh=f"{prefix}-refresh", refresh_force=f"{prefix}-refresh-force")
        steps_env = {"root": root, "grocker": grocker, "env": dict(env or {})}
        factory = util.BuildFactory([
            *checkout(),
            GrockerRefreshRoot(**steps_env, haltOnFailure=True),
            # One step per image, so that each has its log and verdict; a refused rebase fails its step and the
            # next image is still tried.
            *[GrockerRebase(**steps_env, image=ref, name=f"rebase {ref.rsplit('/', 1)[-1]}"[:50],
                            doStepIf=refreshed_root_current,
                            hideStepIf=lambda results, step: results == SKIPPED,
                            extra_args=["--push"] if ImageRef.parse(ref).host else [], flunkOnFailure=True)
              for ref in rebase],
            GrockerRefreshReport(),
        ])
        c["builders"].append(util.BuilderConfig(name=names["refresh"], factory=factory, collapseRequests=True,
                                                workernames=[refresh_worker or orchestrator_worker]))
        c["schedulers"] += [
            schedulers.Nightly(name=names["refresh"], builderNames=[names["refresh"]],
                               hour=(hour - 1) % 24 if refresh_hour is None else refresh_hour, minute=minute,
                               onlyIfChanged=False, **({"codebases": {"": {"repository": repourl, "branch": branch}}}
                                                       if repourl else {})),
            schedulers.ForceScheduler(name=names["refresh_force"], builderNames=[names["refresh"]],
                                      codebases=codebases()),
        ]
    if registry:
        c.setdefault("properties", {})["grocker_registry"] = registry
    return names
