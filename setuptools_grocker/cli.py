"""``grocker``: the command-line frontend. It maps options to a Config and calls the library.

Errors from the library are caught once, by frontend.handle_errors (shared with ``setup.py docker_image``):
one line on stderr, a distinct exit code.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from setuptools_grocker import __version__
from setuptools_grocker.frontend import emit_report, handle_errors, run_build
from setuptools_grocker.pipeline.stages import PLUGIN_PREFIX, STAGES, is_stage_name
from setuptools_grocker.progress import NORMAL, QUIET, VERBOSE, Progress

if TYPE_CHECKING:
    from setuptools_grocker.config import Config, RunOptions
    from setuptools_grocker.deploy.ship import Shipper
    from setuptools_grocker.plugin.manager import PluginManager


def add_build_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tag", "-t", help="final image reference NAME:TAG (default: IMAGE-NAME:VERSION)")
    parser.add_argument("--base-image", help="base image (overrides base-image)")
    parser.add_argument("--report", metavar="FILE", help="write the JSON build report to FILE")
    parser.add_argument("--no-cache", action="store_true",
                        help="a clean build: rebuild even when nothing changed, with an empty pip cache")
    parser.add_argument("--push", action="store_true", help="push the image to the configured registry")
    parser.add_argument("--upgrade", action="store_true",
                        help="resolve the dependencies again even when the project's metadata did not change")
    parser.add_argument("--cache-write", action="store_true",
                        help="push the root and compiler images this run builds to the shared cache (build-cache); "
                             "for the nightly or another trusted builder (also GROCKER_CACHE_WRITE=1)")


def _stage_name(text: str) -> str:
    if is_stage_name(text):
        return text
    raise argparse.ArgumentTypeError(f"unknown stage {text!r}: use {', '.join(STAGES)} or {PLUGIN_PREFIX}NAME")


def _tag(text: str) -> str:
    from setuptools_grocker.ref import TAG_PATTERN as _TAG

    if not _TAG.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid image tag: use letters, digits, '_', '.', '-' "
                                         "(at most 128, not starting with '.' or '-')")
    return text


def _size(text: str) -> int:
    from setuptools_grocker.errors import ConfigError
    from setuptools_grocker.image.gc import parse_size

    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.one_line()) from exc


def _release_name(text: str) -> str:
    from setuptools_grocker.errors import WorkspaceError
    from setuptools_grocker.registry.release import check_release_name

    try:
        check_release_name(_tag(text))
    except WorkspaceError as exc:
        raise argparse.ArgumentTypeError(exc.one_line()) from exc
    return text


def add_rollout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a healthy service")
    parser.add_argument("--health-interval", type=float, default=5.0, help="seconds between health checks")
    parser.add_argument("--health-retries", type=int, default=3, help="failed checks before a task is unhealthy")
    parser.add_argument("--start-period", type=float, default=10.0,
                        help="seconds a new task may take to start before failed checks count")
    parser.add_argument("--monitor", type=float, default=5.0,
                        help="seconds each new task is watched after becoming healthy")
    parser.add_argument("--edge-base", metavar="IMAGE", default=None,
                        help="base image of the --publish edge, HAProxy's image (default: the default base-image)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (the deploy record; ship's and watch's report, also after an "
                             "error)")


def _rollout(args: argparse.Namespace, name: str, image: str = "", **extra: Any) -> Any:
    from setuptools_grocker.deploy.deployer import DeployOptions

    return DeployOptions(name=name, image=image, timeout=args.timeout, health_interval=args.health_interval,
                         health_retries=args.health_retries, start_period=args.start_period, monitor=args.monitor,
                         **({"edge_base": args.edge_base} if args.edge_base else {}), **extra)


def _print_record(args: argparse.Namespace, record: Mapping[str, Any], progress: Progress) -> None:
    import json

    if args.json:
        print(json.dumps(record, indent=2))
    else:
        progress.write(f"{record['action']} {record.get('version') or ''} {record['pinned']}: {record['status']}"
                       + (f" in {record['seconds']}s" if record.get("seconds") is not None else ""))


def build_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys set on the command line (the top layer of the configuration)."""
    return {"base-image": args.base_image}


def run_options(args: argparse.Namespace) -> RunOptions:
    """What this invocation does with the image: not configuration, never part of a cache key."""
    from setuptools_grocker.config import RunOptions

    return RunOptions(tag=args.tag, no_cache=args.no_cache, push=args.push, report=args.report,
                      upgrade=args.upgrade, cache_write=args.cache_write)


def output_options() -> argparse.ArgumentParser:
    """``-q``/``-v``: accepted before the command and after it (every command's parser has them)."""
    common = argparse.ArgumentParser(add_help=False)
    levels = common.add_mutually_exclusive_group()
    # SUPPRESS: a subcommand's parser must not reset what was given before the subcommand.
    levels.add_argument("--quiet", "-q", dest="level", action="store_const", const=QUIET, default=argparse.SUPPRESS,
                        help="only warnings, errors and the final result")
    levels.add_argument("--verbose", "-v", dest="level", action="store_const", const=VERBOSE,
                        default=argparse.SUPPRESS,
                        help="stream everything: engine commands and container output (pip, apt)")
    return common


def _with_options(common: argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    """The parser class of every command (and of their own commands): with ``-q``/``-v``."""

    class CommandParser(argparse.ArgumentParser):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("parents", [common])
            super().__init__(**kwargs)

    return CommandParser


def make_parser() -> argparse.ArgumentParser:
    common = output_options()
    parser = argparse.ArgumentParser(
        prog="grocker",
        description="Build Docker images of Python applications from their wheels. By default each stage "
                    "prints one line and the full output goes to a log file named at the end.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"setuptools-grocker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_with_options(common))
    sub.required = True

    build = sub.add_parser("build", help="build the image of one project (any PEP 517 project)")
    build.add_argument("project", nargs="?", default=".", help="project directory (default: .)")
    add_build_options(build)
    build.set_defaults(func=cmd_build)

    lock = sub.add_parser("lock", help="resolve the application's dependencies (or a workspace's applications' "
                                       "shared set) into a PEP 751 lock (pylock.toml), hash-checked; builds then "
                                       "install exactly that")
    lock.add_argument("project", nargs="?", default=".", help="project directory or workspace root (default: .)")
    lock.add_argument("--base-image", help="base image (overrides base-image)")
    lock.set_defaults(func=cmd_lock)

    ws = sub.add_parser("workspace", help="plan or build a workspace of many projects")
    ws_sub = ws.add_subparsers(dest="ws_command", metavar="ACTION")
    ws_sub.required = True
    plan = ws_sub.add_parser("plan", help="the order, the levels, and what must be rebuilt and why")
    plan.add_argument("root", nargs="?", default=".", help="workspace root (default: .)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--wheel-index", metavar="URL", help="also count builds found on this wheel index "
                      "(no credentials here: GROCKER_WORKSPACE_INDEX_URL or ~/.netrc)")
    plan.set_defaults(func=cmd_ws_plan)
    wsb = ws_sub.add_parser("build", help="build the members in dependency order, incrementally")
    wsb.add_argument("root", nargs="?", default=".", help="workspace root (default: .)")
    wsb.add_argument("--jobs", "-j", type=int, default=1, help="members built at once (default: 1)")
    wsb.add_argument("--only", nargs="+", metavar="NAME", help="these members (and their dependencies) only")
    # Deprecated: going on after a failure is the default. Still accepted (scripts pass it), hidden from --help.
    wsb.add_argument("--keep-going", action="store_true", help=argparse.SUPPRESS)
    wsb.add_argument("--fail-fast", action="store_true", help="start nothing new after the first failure")
    wsb.add_argument("--push", action="store_true", help="push the application images")
    wsb.add_argument("--no-cache", action="store_true",
                     help="a clean build: rebuild every member (no wheel index, no registry), with an empty pip cache")
    wsb.add_argument("--upgrade", action="store_true",
                     help="the applications rebuilt resolve their dependencies again, even when no metadata changed")
    wsb.add_argument("--report", metavar="FILE", help="write the JSON build report to FILE")
    wsb.add_argument("--cache-write", action="store_true",
                     help="push the root and compiler images this run builds to the shared cache (build-cache); "
                          "for the nightly or another trusted builder (also GROCKER_CACHE_WRITE=1)")
    wsb.add_argument("--wheel-index", metavar="URL",
                     help="PyPI-compatible index to share wheels through (overrides workspace.index-url); "
                          "no credentials here: GROCKER_WORKSPACE_INDEX_URL or ~/.netrc")
    wsb.add_argument("--stage", action="append", type=_stage_name, metavar="STAGE",
                     help=f"run only this stage: {', '.join(STAGES)}, or {PLUGIN_PREFIX}NAME (repeatable; "
                          "default: all); what earlier stages made is reused")
    wsb.add_argument("--no-deps", action="store_true",
                     help="with --only: do not build dependencies; take their wheels from earlier builds or the index")
    wsb.add_argument("--release", metavar="TAG", type=_release_name,
                     help="with --push: also move TAG on every application image, and name the release document")
    wsb.set_defaults(func=cmd_ws_build)
    rel = ws_sub.add_parser("release", help="publish the release document, move the release pointer to it, "
                                            "then the applications' release tags")
    rel.add_argument("root", nargs="?", default=".", help="workspace root (default: .)")
    rel.add_argument("--release", metavar="TAG", type=_release_name,
                     help="name the release document, and move TAG on every application image")
    rel.add_argument("--only", nargs="+", metavar="NAME", help="release these applications only")
    rel.add_argument("--json", action="store_true", help="print the release document as JSON")
    rel.set_defaults(func=cmd_ws_release)

    diff = sub.add_parser("diff", help="distributions added, removed and changed between two images")
    diff.add_argument("image_a")
    diff.add_argument("image_b")
    diff.add_argument("--json", action="store_true", help="print the difference as JSON")
    diff.set_defaults(func=cmd_diff)

    sb = sub.add_parser("sbom", help="an image's SBOM (CycloneDX), or the images holding a package (--find)")
    sb.add_argument("images", nargs="*", metavar="IMAGE",
                    help="image reference (local, or REGISTRY/REPO:TAG); several with --find")
    sb.add_argument("--format", choices=("cyclonedx-json", "table"), default="cyclonedx-json",
                    help="the CycloneDX JSON as stored (default), or one line per component")
    sb.add_argument("--find", metavar="NAME[==VERSION]",
                    help="list the images holding this Python distribution or Debian package")
    sb.add_argument("--repository", action="append", default=[], metavar="REGISTRY/REPO",
                    help="with --find: every tagged image of this registry repository (repeatable)")
    sb.add_argument("--release", action="append", default=[], metavar="REGISTRY/REPO[:RELEASE]",
                    help="with --find: every application of this workspace release (its release document; "
                         "the current release without :RELEASE) (repeatable)")
    sb.add_argument("--from", dest="where", choices=("auto", "engine", "registry"), default="auto",
                    help="read from the engine or the registry (default: the registry when the reference "
                         "names a registry host)")
    sb.add_argument("--json", action="store_true", help="with --find: print the matches as JSON")
    sb.set_defaults(func=cmd_sbom)
    prov = sub.add_parser("provenance", help="an image's provenance (in-toto statement, SLSA provenance v1)")
    prov.add_argument("image", metavar="IMAGE", help="image reference (local, or REGISTRY/REPO:TAG)")
    prov.add_argument("--from", dest="where", choices=("auto", "engine", "registry"), default="auto",
                      help="the build records of this cache home (engine) or the registry (default: the registry "
                           "when the reference names a registry host)")
    prov.set_defaults(func=cmd_provenance)
    ver = sub.add_parser("verify", help="check an image in its registry against its signature, SBOM and provenance")
    ver.add_argument("image", metavar="IMAGE",
                     help="registry reference (REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...)")
    ver.add_argument("--allow-unsigned", action="store_true",
                     help="pass when the image is not signed or no installed plugin verifies signatures (the other "
                          "checks still run; a signature that fails still fails)")
    ver.add_argument("--project", default=".", metavar="DIR",
                     help="project whose plugins key to load, as `grocker plugins` does (default: .)")
    ver.add_argument("--report", metavar="FILE", help="write every check's verdict as JSON to FILE")
    ver.set_defaults(func=cmd_verify)

    dep = sub.add_parser("deploy", help="deploy an image as a Swarm service: health-checked rolling update, "
                                        "automatic rollback")
    dep.add_argument("image", help="image reference (pinned by digest when deployed)")
    dep.add_argument("--name", required=True, help="service name")
    dep.add_argument("--publish", "-p", action="append", default=[], metavar="[HOST:]PORT:TARGET",
                     help="publish TARGET on HOST:PORT (HOST defaults to 127.0.0.1); repeatable")
    dep.add_argument("--env-file", action="append", default=[], type=Path, metavar="FILE",
                     help="KEY=VALUE file, given to the app as a Swarm secret in /config; repeatable")
    dep.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE", help="environment variable")
    dep.add_argument("--replicas", type=int, default=1, help="number of tasks (default: 1)")
    dep.add_argument("--command", help="image command to run (default: the image's default command)")
    add_rollout_options(dep)
    dep.set_defaults(func=cmd_deploy)
    ship = sub.add_parser("ship", help="release an image: staging and functional tests, then a canary beside the "
                                       "service, promoted or rolled back on its errors and latency")
    ship.add_argument("image", help="image reference (pinned by digest)")
    ship.add_argument("--name", required=True, help="the production service (its edge: grocker deploy --publish)")
    ship.add_argument("--project", default=".", metavar="DIR",
                      help="project whose functional-tests and canary.* keys to read (default: .)")
    ship.add_argument("--publish", "-p", action="append", default=[], metavar="[HOST:]PORT:TARGET",
                      help="production routes (default: those of the service's current release)")
    ship.add_argument("--env-file", action="append", default=[], type=Path, metavar="FILE",
                      help="production KEY=VALUE file (a Swarm secret in /config); repeatable")
    ship.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE",
                      help="production environment variable")
    ship.add_argument("--staging-env", action="append", default=[], metavar="KEY=VALUE",
                      help="environment variable of the staging service")
    ship.add_argument("--replicas", type=int, help="number of tasks (default: as many as production runs now)")
    ship.add_argument("--command", help="image command to run (default: the image's default command)")
    ship.add_argument("--port", type=int, help="container port of GROCKER_TARGET_URL (default: the first route's)")
    ship.add_argument("--functional-tests", metavar="COMMAND", help="overrides the functional-tests key")
    ship.add_argument("--functional-tests-image", metavar="IMAGE", help="overrides the functional-tests-image key")
    ship.add_argument("--keep-staging", action="store_true", help="leave the staging service running")
    ship.add_argument("--pre-deploy", metavar="COMMAND",
                      help="overrides the pre-deploy key: run once from the new image before production moves")
    ship.add_argument("--service", action="append", default=[], metavar="SUFFIX=COMMAND[:REPLICAS]",
                      help="a companion service NAME-SUFFIX running COMMAND of the image, released with NAME; "
                           "repeatable; replaces the services key")
    ship.add_argument("--services-watch", type=float, metavar="SECONDS", help="overrides services-watch")
    ship.add_argument("--canary-steps", metavar="PERCENTS", help="overrides canary.steps (e.g. 5,25,50,100)")
    ship.add_argument("--canary-window", type=float, metavar="SECONDS", help="overrides canary.window")
    ship.add_argument("--min-requests", type=int, metavar="N", help="overrides canary.min-requests")
    ship.add_argument("--max-inconclusive", type=int, metavar="N", help="overrides canary.max-inconclusive")
    ship.add_argument("--drain", type=float, default=5.0, metavar="SECONDS",
                      help="seconds a pool at weight 0 keeps its tasks before they stop (default: 5)")
    ship.add_argument("--state-dir", type=Path, metavar="DIR",
                      help="where the release's state file is kept (default: the project's state directory)")
    ship.add_argument("--bake", type=float, metavar="SECONDS",
                      help="overrides watch.bake: seconds of drift watch after the promotion (0: none)")
    ship.add_argument("--irreversible", action="store_true", default=None,
                      help="the release cannot be undone (a migration): from its promotion on, drift alerts "
                           "instead of rolling back (overrides the irreversible key)")
    ship.add_argument("--report", metavar="FILE", help="write the JSON report of the release to FILE")
    add_rollout_options(ship)
    ship.set_defaults(func=cmd_ship)
    watch = sub.add_parser("watch", help="judge a deployed service's traffic against its baseline, window after "
                                         "window; roll back to the previous release (or alert) on drift")
    watch.add_argument("name", help="the production service (deployed with an edge: --publish)")
    watch.add_argument("--project", default=".", metavar="DIR", help="project whose watch.* keys to read (default: .)")
    watch.add_argument("--window", type=float, metavar="SECONDS", help="overrides watch.window")
    watch.add_argument("--min-requests", type=int, metavar="N", help="overrides watch.min-requests")
    watch.add_argument("--fail-windows", type=int, metavar="N", help="overrides watch.fail-windows")
    bound = watch.add_mutually_exclusive_group()
    bound.add_argument("--once", action="store_true", help="judge one window, then stop")
    bound.add_argument("--windows", type=int, metavar="N", help="judge N windows, then stop")
    bound.add_argument("--duration", type=float, metavar="SECONDS", help="watch for SECONDS, then stop")
    watch.add_argument("--drain", type=float, default=5.0, metavar="SECONDS",
                       help="seconds a pool at weight 0 keeps its tasks during a rollback (default: 5)")
    watch.add_argument("--state-dir", type=Path, metavar="DIR",
                       help="where the watch's state is kept (default: the project's state directory)")
    watch.add_argument("--report", metavar="FILE", help="write the JSON report of the watch to FILE")
    add_rollout_options(watch)
    watch.set_defaults(func=cmd_watch)
    rb = sub.add_parser("rollback", help="go back one release of a deployed service, by digest")
    rb.add_argument("name", help="service name")
    add_rollout_options(rb)
    rb.set_defaults(func=cmd_rollback)
    hist = sub.add_parser("history", help="what a deployed service ran, and when: deploys, rollbacks, each "
                                             "shipped release's verdicts and incident report")
    hist.add_argument("name", help="service name")
    hist.add_argument("--json", action="store_true", help="print the history as JSON")
    hist.set_defaults(func=cmd_history)
    stop = sub.add_parser("stop", help="remove a deployed service, its edge, network and secrets")
    stop.add_argument("name", help="service name")
    stop.set_defaults(func=cmd_stop)

    plug = sub.add_parser("plugins", help="list the loaded plugins, their hooks and where they come from")
    plug.add_argument("project", nargs="?", default=".", help="project whose plugins key to read (default: .)")
    plug.add_argument("--json", action="store_true", help="print the list as JSON")
    plug.set_defaults(func=cmd_plugins)

    imgs = sub.add_parser("images", help="the images grocker built: when, and from what (its build records)")
    imgs.add_argument("--json", action="store_true", help="print the records as JSON")
    imgs.set_defaults(func=cmd_images)
    gc = sub.add_parser("gc", help="remove superseded and failed images, unused root and compiler images, "
                                   "and caches beyond a size")
    gc.add_argument("--dry-run", "-n", action="store_true", help="print what would go and the bytes freed; "
                    "remove nothing")
    gc.add_argument("--max-cache-size", type=_size, metavar="SIZE",
                    help="also remove the oldest cache entries (pip caches, blobs, wheelhouses, bytecode) until "
                         "the caches hold at most SIZE (500M, 10G)")
    gc.add_argument("--base-images", action="store_true",
                    help="also remove base images made by `grocker bootstrap-base` that no kept image uses")
    gc.add_argument("--untracked", action="store_true",
                    help="also remove untagged grocker images this cache home has no build record of")
    gc.add_argument("--project", type=Path, metavar="DIR",
                    help="only the images and caches of the project (or workspace) in DIR")
    gc.add_argument("--json", action="store_true", help="print what was removed as JSON")
    gc.set_defaults(func=cmd_gc)

    rr = sub.add_parser("refresh-root", help="check the Debian mirror for newer packages of a project's root image; "
                                             "if there are, build the refreshed root that builds then use")
    rr.add_argument("project", nargs="?", default=".", type=Path,
                    help="project directory, or workspace root (every member's root and the shared one; default: .)")
    rr.add_argument("--base-image", help="base image (overrides base-image)")
    rr.add_argument("--check", action="store_true", help="only say what the mirror has newer; build nothing "
                    "(exit 1 when the root is out of date)")
    rr.add_argument("--json", action="store_true", help="print the result as JSON")
    rr.set_defaults(func=cmd_refresh_root)
    reb = sub.add_parser("rebase", help="put an application image on its refreshed root without rebuilding its "
                                        "wheels (smoke-tested before it is tagged)")
    reb.add_argument("image", metavar="IMAGE", help="the image to rebase (a local reference or ID)")
    reb.add_argument("--tag", "-t", help="reference of the rebased image (default: IMAGE's own tag moves to it)")
    reb.add_argument("--root", metavar="ROOT", help="the root image to put it on (default: the refreshed root of "
                     "the image's root, made by `grocker refresh-root`)")
    reb.add_argument("--project", type=Path, metavar="DIR", help="the project whose smoke test runs (default: the "
                     "directory of the image's build record, else the smoke test its labels describe)")
    reb.add_argument("--push", action="store_true", help="push the rebased image (its tag names the registry) "
                     "with its SBOM and provenance")
    reb.add_argument("--report", metavar="FILE", help="write the JSON report to FILE (- for stdout)")
    reb.add_argument("--json", action="store_true", help="print the JSON report")
    reb.set_defaults(func=cmd_rebase)

    boot = sub.add_parser("bootstrap-base", help="build a minimal Debian base image, reproducibly, with mmdebstrap")
    boot.add_argument("--suite", default="bookworm", help="Debian suite (default: bookworm)")
    boot.add_argument("--mirror", help="Debian mirror URL (default: the one in the host's apt sources)")
    boot.add_argument("--include", nargs="+", metavar="PKG", help="packages to include "
                      "(default: python3 tini)")
    boot.add_argument("--tag", help="image reference (default: debian:SUITE-slim)")
    boot.add_argument("--force", action="store_true", help="rebuild even when the image exists")
    boot.add_argument("--apt-cache", type=Path, metavar="DIR",
                      help="keep the downloaded .deb files in DIR and reuse them next time (apt checks them)")
    boot.add_argument("--push", metavar="REGISTRY/REPO[:TAG]",
                      help="then push the base image there and print the reference to pin in base-image "
                      "(REGISTRY/REPO@sha256:...)")
    boot.set_defaults(func=cmd_bootstrap)
    return parser


def cmd_build(args: argparse.Namespace, progress: Progress) -> int:
    return run_build(Path(args.project), build_overrides(args), run_options(args), environ=os.environ,
                     progress=progress)


def cmd_lock(args: argparse.Namespace, progress: Progress) -> int:
    from setuptools_grocker.config import load_config, read_file_layer
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.pipeline.build import lock_project
    from setuptools_grocker.pipeline.project import check_python_project

    project = Path(args.project)
    if "workspace" in read_file_layer(project.resolve())[0]:
        return _lock_workspace(project, args, progress)
    check_python_project(project.resolve())
    config = load_config(project, environ=os.environ, overrides={"base-image": args.base_image}, warn=progress.warn)
    log = progress.open_log(config.state_dir / "logs")
    with Engine(progress) as engine:
        lock = lock_project(config, environ=os.environ, progress=progress, engine=engine)
    progress.write(f"{lock.path}: {len(lock.packages)} packages locked (sha256 {lock.digest[:12]}); commit it: "
                   "builds install exactly these files")
    progress.info(f"full log: {log}")
    return 0


def _lock_workspace(root: Path, args: argparse.Namespace, progress: Progress) -> int:
    from setuptools_grocker.errors import ConfigError
    from setuptools_grocker.pipeline.wsbuild import lock_workspace

    if args.base_image:
        raise ConfigError("--base-image is for one application: a workspace's base image is its members' setting",
                          "set base-image in the workspace's configuration, or leave the option out")
    log = progress.open_log(root.resolve() / ".grocker" / "logs")  # the workspace's state directory
    lock = lock_workspace(root, environ=os.environ, progress=progress)
    apps = ", ".join(sorted(lock.applications))
    progress.write(f"{lock.path}: {len(lock.packages)} packages locked for {len(lock.applications)} applications "
                   f"({apps}; sha256 {lock.digest[:12]}); commit it: workspace builds install exactly these files")
    progress.info(f"full log: {log}")
    return 0


def cmd_ws_plan(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.pipeline.workspace import load_workspace
    from setuptools_grocker.pipeline.wsbuild import WorkspaceBuild, WorkspaceOptions, print_plan

    ws = load_workspace(Path(args.root), environ=os.environ, progress=progress)
    # Before the engine: a bad --wheel-index is bad input, whether or not the engine answers.
    options = WorkspaceOptions(index_url=args.wheel_index)
    build = WorkspaceBuild(ws, environ=os.environ, progress=progress, options=options)
    with Engine(Progress(quiet=True)) as engine:
        entries = build.plan(engine)
    if args.json:
        from setuptools_grocker.report import GENERATOR, GENERATOR_KEY

        print(json.dumps({GENERATOR_KEY: GENERATOR, "root": str(ws.root), "order": ws.order, "levels": ws.levels,
                          "members": [e.to_json() for e in entries]}, indent=2))
    else:
        print_plan(entries, print)
    return 0


def cmd_ws_build(args: argparse.Namespace, progress: Progress) -> int:
    from setuptools_grocker.errors import WorkspaceError
    from setuptools_grocker.pipeline.workspace import load_workspace
    from setuptools_grocker.pipeline.wsbuild import WorkspaceBuild, WorkspaceOptions
    from setuptools_grocker.report import summary_table

    if args.keep_going:
        progress.warn("--keep-going is deprecated and does nothing (going on after a failure is the default); "
                      "drop it")
    if args.jobs < 1:
        raise WorkspaceError(f"--jobs {args.jobs} is not a positive number", "use --jobs 1 or more")
    if args.no_deps and not args.only:
        raise WorkspaceError("--no-deps needs --only NAME", "name the members to build")
    if args.keep_going and args.fail_fast:
        raise WorkspaceError("--keep-going and --fail-fast contradict each other", "give one of them")
    ws = load_workspace(Path(args.root), environ=os.environ, progress=progress)
    log = progress.open_log(ws.state_dir / "logs")
    options = WorkspaceOptions(jobs=args.jobs, only=tuple(args.only or ()), fail_fast=args.fail_fast,
                               push=args.push or "push" in (args.stage or ()), no_cache=args.no_cache,
                               upgrade=args.upgrade,
                               index_url=args.wheel_index, stages=tuple(args.stage or ()), no_deps=args.no_deps,
                               release=args.release, cache_write=args.cache_write)
    if args.release and not options.push:
        raise WorkspaceError("--release needs --push", "add --push")
    report = WorkspaceBuild(ws, environ=os.environ, progress=progress, options=options).run()
    emit_report(report, args.report)
    progress.write(summary_table(report))
    progress.info(f"full log: {log}")
    if report.ok:
        return 0
    if report.error is not None:
        sys.stderr.write(f"grocker: error: {report.error.one_line()}\n")
        return report.error.exit_code
    failed = [p for p in report.projects if p.status == "failed"]
    skipped = [p for p in report.projects if p.status == "skipped"]
    names = ", ".join(f"{p.name} {p.version}" if p.version else p.name for p in failed)
    sys.stderr.write(f"grocker: error: {len(failed)} member(s) failed ({names}), "
                     f"{len(skipped)} skipped; see the errors above and the full log {log}\n")
    return WorkspaceError.exit_code


def cmd_ws_release(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.pipeline.workspace import load_workspace
    from setuptools_grocker.pipeline.wsbuild import WorkspaceBuild, WorkspaceOptions
    from setuptools_grocker.registry.release import lagging_error

    ws = load_workspace(Path(args.root), environ=os.environ, progress=progress)
    options = WorkspaceOptions(only=tuple(args.only or ()), push=True, release=args.release)
    document = WorkspaceBuild(ws, environ=os.environ, progress=progress, options=options).release(name=args.release)
    if args.json:
        print(json.dumps(document, indent=2), flush=True)
    else:
        progress.write(f"release {document['release']} published: {document['document']['image']}")
        for name, app in document["applications"].items():
            progress.write(f"  {name} {app['version']}  {app['image']}@{app['digest']}")
    lagging = lagging_error(document)
    if lagging is not None:
        # The release is current (its JSON is printed above); the tags that lag fail the command.
        raise lagging
    return 0


def cmd_diff(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.diff import diff_images

    with Engine(Progress(quiet=True)) as engine:
        result = diff_images(engine, args.image_a, args.image_b)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print("\n".join(result.lines()))
    return 0


def cmd_sbom(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.errors import SupplyChainError
    from setuptools_grocker.image.supplychain import (
        find,
        from_registry,
        parse_query,
        read_sbom,
        read_sbom_bytes,
        release_images,
        repository_images,
        table,
    )

    if args.find is None:
        if len(args.images) != 1 or args.repository or args.release:
            raise SupplyChainError("grocker sbom reads one IMAGE (several, --repository or --release only with "
                                   "--find)", "give one image, or add --find NAME[==VERSION]")
    elif not args.images and not args.repository and not args.release:
        raise SupplyChainError("--find needs images to search",
                               "name images, or --repository REGISTRY/REPO, or --release REGISTRY/REPO[:RELEASE]")
    query = parse_query(args.find) if args.find is not None else None
    images = list(dict.fromkeys([*args.images, *(i for r in args.repository for i in repository_images(r)),
                                 *(i for r in args.release for i in release_images(r))]))
    local = not all(from_registry(i, args.where) for i in images)
    with Engine(Progress(quiet=True)) if local else contextlib.nullcontext() as engine:
        if query is None:
            if args.format == "table":
                print("\n".join(table(read_sbom(engine, images[0], args.where))))
            else:  # the bytes as stored: the same as `docker run IMAGE cat ...` and the registry's blob
                sys.stdout.buffer.write(read_sbom_bytes(engine, images[0], args.where))
                sys.stdout.flush()
            return 0
        matches = find(engine, query, images, args.where)
    found = [m for m in matches if m.error is None]
    failed = [m for m in matches if m.error is not None]
    if args.json:
        print(json.dumps([m.to_json() for m in matches], indent=2))
    else:
        for m in found:
            for c in m.found:
                print(f"{m.image}  {c.kind}  {c.name}  {c.version}")
        for m in failed:
            progress.warn(f"{m.image}: {m.error}")
        progress.write(f"{len(found)} of {len(images)} image(s) hold {args.find}"
                       + (f"; {len(failed)} could not be read" if failed else ""))
    if failed:
        raise SupplyChainError(f"{len(failed)} image(s) could not be searched: " + ", ".join(m.image for m in failed),
                               "rebuild or push them again with this grocker, or leave them out")
    return 0 if found else 1


def cmd_provenance(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.supplychain import from_registry, read_provenance
    from setuptools_grocker.pipeline.caches import cache_home

    local = not from_registry(args.image, args.where)
    with Engine(Progress(quiet=True)) if local else contextlib.nullcontext() as engine:
        statement = read_provenance(engine, cache_home(os.environ), args.image, args.where)
    print(json.dumps(statement, indent=2, sort_keys=True))
    return 0


def cmd_verify(args: argparse.Namespace, progress: Progress) -> int:
    from setuptools_grocker.image.verify import verify
    from setuptools_grocker.report import write_json_atomic

    result = verify(args.image, _plugins_of(Path(args.project), progress), allow_unsigned=args.allow_unsigned)
    marks = {True: "ok  ", False: "FAIL", None: "--  "}
    for check in result.checks:
        print(f"{marks[check.ok]}  {check.name:13}  {check.detail}")
    if args.report:
        write_json_atomic(Path(args.report), result.to_json())
    if not result.ok:
        raise result.error()
    progress.write(f"{args.image}@{result.digest} verified")
    return 0


def _plugins_of(project: Path, progress: Progress) -> PluginManager:
    """The plugins `grocker plugins` lists for ``project``: built-ins, entry points, its plugins key."""
    from setuptools_grocker.config import load_config
    from setuptools_grocker.pipeline.plugins import plugin_manager

    extra: tuple[str, ...] = ()
    if (project / "pyproject.toml").is_file() or (project / "grocker.toml").is_file():
        extra = load_config(project, environ=os.environ, warn=progress.warn).plugins
    return plugin_manager(extra, os.environ, progress.write)


def cmd_deploy(args: argparse.Namespace, progress: Progress) -> int:
    from setuptools_grocker.deploy.deployer import Deployer, Publish
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.errors import DeployError

    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise DeployError(f"--env {item!r} is not KEY=VALUE", "write --env NAME=VALUE")
        env[key] = value
    options = _rollout(args, args.name, args.image, publish=tuple(Publish.parse(p) for p in args.publish),
                       env_files=tuple(args.env_file), env=env, replicas=args.replicas, command=args.command)
    with Engine(progress) as engine:
        record = Deployer(engine, progress).deploy(options)
    _print_record(args, record, progress)
    return 0


def _env_pairs(items: Sequence[str], option: str) -> dict[str, str]:
    from setuptools_grocker.errors import DeployError

    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise DeployError(f"{option} {item!r} is not KEY=VALUE", f"write {option} NAME=VALUE")
        env[key] = value
    return env


def _release_project(args: argparse.Namespace, progress: Progress) -> tuple[Path, Config]:
    """``ship``'s and ``watch``'s ``--project``: its directory and configuration (defaults without one)."""
    from setuptools_grocker.config import Config, load_config

    project = Path(args.project).resolve()
    config = Config(project_dir=project)
    if (project / "pyproject.toml").is_file() or (project / "grocker.toml").is_file():
        config = load_config(project, environ=os.environ, warn=progress.warn)
    return project, config


def _run_release(args: argparse.Namespace, progress: Progress, project: Path,
                 run: Callable[[Shipper], dict[str, Any]]) -> dict[str, Any]:
    """Run ``ship`` or ``watch`` with the project's plugins (``grocker_incident``, ``grocker_release_metrics``):
    the report written (``--report``, even after an error) and printed (``--json``); a report with an ``error``
    (stopped, rolled back, alerted) raised as the one-line DeployError."""
    import json

    from setuptools_grocker.deploy.ship import Shipper
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.errors import DeployError, GrockerError
    from setuptools_grocker.report import write_json_atomic

    shipper = Shipper(Engine(progress), progress, _plugins_of(project, progress))
    try:
        with shipper.engine:
            report = run(shipper)
    except GrockerError as exc:  # a plugin's error too (grocker_release_metrics): the report says it
        shipper.report.update(status="error", error={"message": exc.message, "hint": exc.hint})
        if args.json and shipper.report.get("name"):  # machines (the Buildbot step) read a report in every case
            print(json.dumps(shipper.report, indent=2))
        raise
    finally:
        if args.report and shipper.report:
            write_json_atomic(Path(args.report).resolve(), shipper.report)
    if args.json:
        print(json.dumps(report, indent=2))
    error = report.get("error")
    if error:
        raise DeployError(error["message"], error["hint"])
    return report


def cmd_ship(args: argparse.Namespace, progress: Progress) -> int:
    import dataclasses

    from setuptools_grocker.deploy.companions import Companion
    from setuptools_grocker.deploy.deployer import Publish
    from setuptools_grocker.deploy.ship import ShipOptions
    from setuptools_grocker.errors import ConfigError, DeployError
    from setuptools_grocker.pipeline.caches import cache_home

    project, config = _release_project(args, progress)
    canary = config.canary
    if args.canary_steps:
        try:
            steps = tuple(int(p) for p in args.canary_steps.replace(",", " ").split())
        except ValueError:
            steps = ()
        from setuptools_grocker.keys import KEYS

        validate = KEYS["canary.steps"].validate
        if validate is not None:
            try:
                validate(steps, "--canary-steps")
            except ConfigError as exc:
                raise DeployError(exc.message, "write e.g. --canary-steps 5,25,50,100") from exc
        canary = dataclasses.replace(canary, steps=steps)
    for option, attr in (("canary_window", "window"), ("min_requests", "min_requests"),
                         ("max_inconclusive", "max_inconclusive")):
        value = getattr(args, option)
        if value is not None:
            if value <= 0:
                raise DeployError(f"--{option.replace('_', '-')} {value} is not positive", "give a number above 0")
            canary = dataclasses.replace(canary, **{attr: value})
    deploy = _rollout(args, args.name, args.image, publish=tuple(Publish.parse(p) for p in args.publish),
                      env_files=tuple(args.env_file), env=_env_pairs(args.env, "--env"),
                      replicas=args.replicas or 1, command=args.command)
    if args.replicas is not None and args.replicas <= 0:
        raise DeployError(f"--replicas {args.replicas} is not positive", "give a number above 0")
    watch = config.watch
    if args.bake is not None:
        if args.bake < 0:
            raise DeployError(f"--bake {args.bake} is negative", "give 0 (no bake window) or a number of seconds")
        watch = dataclasses.replace(watch, bake=args.bake)
    options = ShipOptions(deploy=deploy, functional_tests=args.functional_tests or config.functional_tests,
                          functional_tests_image=args.functional_tests_image or config.functional_tests_image,
                          port=args.port, staging_env=_env_pairs(args.staging_env, "--staging-env"),
                          keep_staging=args.keep_staging, canary=canary, drain=args.drain,
                          state_dir=args.state_dir or config.state_dir, cache_home=cache_home(os.environ), watch=watch,
                          irreversible=config.irreversible if args.irreversible is None else args.irreversible,
                          pre_deploy=args.pre_deploy or config.pre_deploy,
                          services=tuple(Companion.parse(s) for s in args.service) if args.service
                          else Companion.from_config(config.services),
                          services_watch=config.services_watch if args.services_watch is None else args.services_watch,
                          replicas_given=args.replicas is not None)
    if options.services_watch <= 0:
        raise DeployError(f"--services-watch {options.services_watch} is not positive", "give a number above 0")
    report = _run_release(args, progress, project, lambda shipper: shipper.ship(options))
    progress.write(f"ship {report.get('pinned') or args.image} as {args.name}: {report['status']}")
    return 0


def cmd_watch(args: argparse.Namespace, progress: Progress) -> int:
    import dataclasses

    from setuptools_grocker.deploy.watch import WatchOptions
    from setuptools_grocker.errors import DeployError

    project, config = _release_project(args, progress)
    settings = config.watch
    for option, attr in (("window", "window"), ("min_requests", "min_requests"), ("fail_windows", "fail_windows"),
                         ("windows", None), ("duration", None)):
        value = getattr(args, option)
        if value is not None and value <= 0:
            raise DeployError(f"--{option.replace('_', '-')} {value} is not positive", "give a number above 0")
        if value is not None and attr:
            settings = dataclasses.replace(settings, **{attr: value})
    options = WatchOptions(name=args.name, settings=settings, deploy=_rollout(args, args.name), drain=args.drain,
                           state_dir=args.state_dir or config.state_dir,
                           windows=1 if args.once else args.windows, duration=args.duration)
    report = _run_release(args, progress, project, lambda shipper: shipper.watch(options))
    progress.write(f"watch {args.name}: no drift in {len(report['windows'])} window(s) against the baseline "
                   f"({report['pinned']})")
    return 0


def cmd_rollback(args: argparse.Namespace, progress: Progress) -> int:
    from setuptools_grocker.deploy.deployer import Deployer
    from setuptools_grocker.engine import Engine

    with Engine(progress) as engine:
        record = Deployer(engine, progress).rollback(args.name, _rollout(args, args.name))
    _print_record(args, record, progress)
    return 0


def cmd_history(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.deploy.deployer import history
    from setuptools_grocker.engine import Engine

    with Engine(Progress(quiet=True)) as engine:
        records = history(engine, args.name)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"{'WHEN':25} {'ACTION':9} {'VERSION':12} {'STATUS':12} {'VERDICTS':20} IMAGE")
    for r in records:
        status = "rolled back" if r.get("undone") else r.get("status", "")
        verdicts = " ".join(f"{share}%:{verdict or '-'}" for share, verdict in r.get("steps") or []) or "-"
        print(f"{r.get('at', ''):25} {r.get('action', ''):9} {str(r.get('version') or ''):12} {status:12} "
              f"{verdicts:20} {r.get('pinned', '')}")
        if r.get("reason") and r.get("status") != "promoted":
            print(f"{'':25} reason: {r['reason']}")
        if r.get("incident"):
            print(f"{'':25} incident: {r['incident']}")
    return 0


def cmd_stop(args: argparse.Namespace, progress: Progress) -> int:
    from setuptools_grocker.deploy.deployer import Deployer
    from setuptools_grocker.engine import Engine

    with Engine(progress) as engine:
        Deployer(engine, progress).stop(args.name)
    progress.write(f"{args.name} stopped and removed")
    return 0


def cmd_plugins(args: argparse.Namespace, progress: Progress) -> int:
    import json

    manager = _plugins_of(Path(args.project), progress)
    if args.json:
        print(json.dumps([{"name": p.name, "origin": p.origin, "hooks": list(p.hooks)} for p in manager.loaded],
                         indent=2))
    else:
        for p in manager.loaded:
            print(f"{p.name}  ({p.origin})")
            for hook in p.hooks:
                print(f"    {hook}")
    return 0


def cmd_images(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.gc import human, listing
    from setuptools_grocker.pipeline.caches import cache_home

    with Engine(Progress(quiet=True)) as engine:
        rows = listing(engine, cache_home(os.environ))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'IMAGE ID':12}  {'BUILT (UTC)':19}  {'STATUS':10}  {'SIZE':>9}  {'PROJECT':28}  {'REVISION':12}  TAGS")
    for r in rows:
        status = r["status"] if r["present"] else "gone"
        if status == "built" and not r["current_tags"]:
            status = "superseded"  # its tags moved to a later build
        project = f"{r['name'] or '?'} {r['version'] or ''}".strip()
        tags = ", ".join(r["current_tags"]) or "<untagged>"
        size = human(r["size"]) if r["size"] else "-"
        print(f"{r['image_id'].split(':')[-1][:12]:12}  {r['when'][:19].replace('T', ' '):19}  {status:10}  "
              f"{size:>9}  {project[:28]:28}  {(r['revision'] or '-')[:12]:12}  {tags}")
    return 0


def cmd_gc(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.errors import ProjectError
    from setuptools_grocker.image.gc import GcOptions, collect, human, remove, remove_warm_containers
    from setuptools_grocker.pipeline.caches import cache_home

    if args.project is not None and not args.project.is_dir():
        raise ProjectError(f"--project {args.project}: no such directory", "give the project's directory")
    options = GcOptions(max_cache_size=args.max_cache_size, base_images=args.base_images, untracked=args.untracked,
                        project=args.project)
    with Engine(Progress(quiet=True) if args.json else progress) as engine:
        warm = remove_warm_containers(engine, args.project, dry_run=args.dry_run)
        result = remove(engine, collect(engine, cache_home(os.environ), options), dry_run=args.dry_run)
    if args.json:
        print(json.dumps({**result.to_json(), "warm_containers": warm}, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    if warm:
        progress.write(f"  {verb} {len(warm)} warm compile container(s): {', '.join(warm)}")
    failed = {id(r): why for r, why in result.failed}
    for r in result.removals:
        what = r.target.split(":")[-1][:12] if r.kind.endswith("image") else r.target
        line = f"{r.kind} {what}" + (f" ({r.name})" if r.name else "") + f": {r.reason}, {human(r.size)}"
        progress.write(f"  not removed: {line}: {failed[id(r)]}" if id(r) in failed else f"  {verb} {line}")
    progress.write(f"{verb} {len(result.removals) - len(result.failed)} item(s), {human(result.freed)} freed"
                   if not args.dry_run else f"{verb} {len(result.removals)} item(s), {human(result.freed)}")
    return 0


def cmd_refresh_root(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.recipes import root_key
    from setuptools_grocker.image.refresh import refresh_root
    from setuptools_grocker.pipeline.rebase import refresh_targets

    configs = refresh_targets(args.project, environ=os.environ, overrides={"base-image": args.base_image})
    shown = Progress(quiet=True) if args.json else progress
    results = []
    with Engine(shown) as engine:
        seen = set()
        for config in configs:  # a workspace: one check per root recipe
            recipe = root_key(config, engine.ensure_image(config.base_image)["Id"])
            if recipe not in seen:
                seen.add(recipe)
                results.append(refresh_root(engine, config, shown, check_only=args.check))
    if args.json:
        documents = [r.to_json() for r in results]
        print(json.dumps(documents[0] if len(configs) == 1 else {
            "roots": documents, "refreshed": any(r.refreshed for r in results),
            "packages_changed": [p for r in results for p in r.changed]}, indent=2))
    for result in [] if args.json else results:
        for p in result.changed or result.pending:
            progress.write(f"  {p['name']}  {p['old'] or '-'} -> {p['new'] or '-'}")
        if result.refreshed:
            progress.write(f"root refreshed: {result.root} ({len(result.changed)} Debian package(s) changed); "
                           "builds use it from now on, `grocker rebase IMAGE` moves images onto it")
        elif result.pending:
            progress.write(f"{result.previous} is out of date: {len(result.pending)} package(s) newer on the mirror")
        else:
            progress.write(f"{result.previous} is current (checked in {result.check_seconds:.1f}s)")
    return 1 if args.check and any(r.pending for r in results) else 0


def cmd_rebase(args: argparse.Namespace, progress: Progress) -> int:
    import json

    from setuptools_grocker.engine import Engine
    from setuptools_grocker.pipeline.caches import cache_home
    from setuptools_grocker.pipeline.rebase import rebase_image
    from setuptools_grocker.report import write_json_atomic

    quiet = args.json or args.report == "-"
    if args.tag is not None:
        from setuptools_grocker.config import validate_reference

        validate_reference(args.tag)
    with Engine(Progress(quiet=True) if quiet else progress) as engine:
        result = rebase_image(engine, args.image, root=args.root, tag=args.tag, home=cache_home(os.environ),
                              environ=os.environ, progress=Progress(quiet=True) if quiet else progress,
                              project=args.project, push=args.push)
    if args.report and args.report != "-":
        write_json_atomic(Path(args.report).resolve(), result.to_json())
    if quiet:
        print(json.dumps(result.to_json(), indent=2))
    elif result.rebased:
        for p in result.packages_changed:
            progress.write(f"  {p['name']}  {p['old'] or '-'} -> {p['new'] or '-'}")
        progress.write(f"rebased {args.image} onto {result.new_root}: {result.new_image_id}"
                       + (f", tagged {result.tag}" if result.tag else "") + f", {len(result.application_layers)} "
                       "application layer(s) kept, smoke test passed")
    else:
        progress.write(f"{args.image}: not rebased, {result.reason}")
    return 0


def cmd_bootstrap(args: argparse.Namespace, progress: Progress) -> int:
    from setuptools_grocker.config import validate_reference
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.bootstrap import DEFAULT_INCLUDE, BootstrapOptions, bootstrap_base, push_base
    from setuptools_grocker.pipeline.caches import cache_home

    options = BootstrapOptions(suite=args.suite, mirror=args.mirror,
                               include=tuple(args.include) if args.include else DEFAULT_INCLUDE,
                               tag=args.tag, force=args.force, apt_cache=args.apt_cache)
    validate_reference(options.reference)
    with Engine(progress) as engine:
        image_id = bootstrap_base(engine, options, progress, os.environ)
        progress.write(f"base image {options.reference} ready: {image_id}")
        if args.push:
            pinned = push_base(engine, options.reference, args.push, cache_home(os.environ), progress)
            progress.write(f"pin it on every machine: base-image = \"{pinned}\"")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    progress = Progress(level=getattr(args, "level", NORMAL), environ=os.environ)
    try:
        return handle_errors("grocker", lambda: args.func(args, progress))
    finally:
        progress.close()
