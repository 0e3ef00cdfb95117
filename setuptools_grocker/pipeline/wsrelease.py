"""A workspace's release: after a build with ``--push`` that succeeded, or by ``grocker workspace release``.

The registry side (the release document, moving the tags all or none) is registry/release.py; this
module names what to release from the workspace: each application's key tag and its convenience tags.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from packaging.utils import canonicalize_name

from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import GrockerError, WorkspaceError
from setuptools_grocker.image import records
from setuptools_grocker.pipeline.caches import cache_home
from setuptools_grocker.pipeline.wsplan import key_reference, reference
from setuptools_grocker.progress import Progress
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.release import lagging_error
from setuptools_grocker.report import ProjectResult, Report, write_json_atomic

if TYPE_CHECKING:
    from setuptools_grocker.pipeline.wsbuild import WorkspaceBuild


def release_after_build(build: WorkspaceBuild, results: Mapping[str, ProjectResult], report: Report) -> None:
    bad = [r.name for r in results.values() if r.status not in ("built", "cached")]
    if bad:
        why = f"{len(bad)} member(s) failed or were skipped ({', '.join(bad)})"
        build.progress.write(f"release not published: {why}; no release tag was moved")
        report.extra["release"] = {"published": False, "reason": why}
        return
    try:
        document = release(build, results, build.options.release)
    except GrockerError as exc:
        build.progress.write(f"release not published: {exc.one_line()}")
        report.extra["release"] = {"published": False, "reason": exc.one_line()}
        report.error = exc
        return
    report.extra["release"] = {"published": True, **document}
    build.progress.write(f"release {document['release']} published: {document['document']['image']}")
    # Published: the pointer names it. Lagging convenience tags still fail the run, so a re-run moves them.
    report.error = lagging_error(document)


def release(build: WorkspaceBuild, results: Mapping[str, ProjectResult] | None = None,
            name: str | None = None) -> dict[str, Any]:
    """Publish the release of every application (of ``--only``'s selection); see registry/release.py.

    Called after a build with ``--push`` that succeeded, and by ``grocker workspace release``
    (with no results: the key tags in the registry are the build's). Serialised with any
    other release of this workspace on this machine by ``.grocker/release.lock``. The
    returned document lists in ``lagging`` the convenience tags that could not be moved.
    """
    from setuptools_grocker import __version__
    from setuptools_grocker.pipeline.naming import extra_tags
    from setuptools_grocker.pipeline.project import git_revision
    from setuptools_grocker.registry.release import AppRelease, check_release_name, publish_release

    check_release_name(name)
    if not build.keys:
        with Engine(Progress(quiet=True)) as engine:
            build.compute_keys(engine)
    selected = build.ws.select(build.options.only) if build.options.only else set(build.ws.order)
    apps, libraries = [], {}
    for member_name in build.ws.order:
        m = build.ws.members[member_name]
        if member_name not in selected:
            continue
        if m.kind == "library":
            libraries[m.name] = m.version
            continue
        if not m.config.registry:
            raise WorkspaceError(f"application {m.name} has no registry to release to",
                                 "set registry in the workspace root or the member")
        ref = reference(m)
        refs = [ref, *extra_tags(m.config, ref, m.version, git_revision(m.path))]
        tags = [ImageRef.parse(r).tag or "latest" for r in refs] + ([name] if name else [])
        result = (results or {}).get(member_name)
        apps.append(AppRelease(m.name, m.version, key_reference(m, build.keys[member_name]["key"]),
                               result.digest if result else None, tags))
    first = next((build.ws.members[a.name] for a in apps), None)
    repo = build.ws.settings.release_image or f"{canonicalize_name(build.ws.root.name)}-release"
    registry = first.config.registry.rstrip("/") if first and first.config.registry else ""
    with build.progress.stage("release"):
        document = publish_release(apps, document_repo=f"{registry}/{repo}", release=name,
                                   libraries=libraries, workspace=build.ws.root.name, tool_version=__version__,
                                   lock_path=build.ws.state_dir / "release.lock",
                                   carried=sorted(set(build.ws.order) - selected), info=build.progress.info)
    releases = build.ws.state_dir / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    write_json_atomic(releases / f"{document['release']}.json", document)
    # The images it names by digest are kept by `grocker gc` (image/records.py, image/gc.py).
    records.mark_released(cache_home(build.environ), [app.digest for app in apps], str(document["release"]))
    for app in apps:
        if results and app.name in results:
            r = results[app.name]
            r.digest = app.digest
            repo_of = ImageRef.parse(app.key_ref)
            r.image = str(repo_of.with_tag(app.tags[0]))
            r.tags = [str(repo_of.with_tag(t)) for t in dict.fromkeys(app.tags)]
    return document
