"""``grocker rebase IMAGE``: an application image on a refreshed root, its wheels not rebuilt.

1. the image's config is read (``docker save``) and split into its root's layers and its own
   (image/rebase.py: the history entries assemble.py writes);
2. the new root is ``--root``, else the current root of the image's root recipe (the last
   ``grocker refresh-root``: ``grocker/root:<recipe key>-current``);
3. the application must not depend on what the roots differ in: the interpreter of both (version up
   to the micro release, bytecode magic number and cache tag, SOABI, path, machine), the uid of the
   image's user, and no Debian package removed; else a one-line error, nothing is made;
4. the new config (new root layers, the same application layers, an SBOM layer with the new root's
   Debian packages) is ``docker load``ed with the application layers' tar blobs as they were;
5. the smoke test of the build runs (pipeline/smoke.py) before the image gets its tag.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from setuptools_grocker.config import Config, SmokeTest, load_config
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import ConfigError, ImageBuildError, ProjectError, RebaseError
from setuptools_grocker.fs import write_atomic
from setuptools_grocker.image import records
from setuptools_grocker.image.assemble import Entry, Layer, load_archive
from setuptools_grocker.image.rebase import (
    INTERPRETER_PROBE,
    incompatibilities,
    package_changes,
    rebased_config,
    rebased_sbom,
    sha256_id,
    split_layers,
)
from setuptools_grocker.image.recipes import CURRENT_SUFFIX, tool_identity
from setuptools_grocker.image.refresh import ROOT_RECIPE_LABEL
from setuptools_grocker.image.sbom import SBOM_PATH, debian_packages, remember
from setuptools_grocker.pipeline.smoke import smoke_test
from setuptools_grocker.progress import Progress

__all__ = ["RebaseResult", "rebase_image", "refresh_targets"]


def refresh_targets(directory: Path, *, environ: Mapping[str, str],
                    overrides: Mapping[str, Any] | None = None) -> list[Config]:
    """The configurations whose root images ``grocker refresh-root DIRECTORY`` refreshes: the project's; for a
    workspace root, the shared one (its compiler images' root) and each member's (its image's root), from the
    configuration files only (no member is built or prepared). Several may share a root recipe."""
    from setuptools_grocker.config import read_file_layer
    from setuptools_grocker.pipeline.workspace import _member_dirs, _merge, read_settings, shared_config

    table, _ = read_file_layer(directory.resolve())
    if not isinstance(table.get("workspace"), dict):
        return [load_config(directory, environ=environ, overrides=overrides)]
    settings, shared = read_settings(directory.resolve())
    configs = []
    for path in _member_dirs(directory.resolve(), settings):
        own, _ = read_file_layer(path)
        own = {k: v for k, v in own.items() if k != "workspace"}
        configs.append(load_config(path, environ=environ, overrides=overrides, file_table=_merge(shared, own)))
    return [shared_config(configs), *configs]


@dataclass
class RebaseResult:
    """What ``grocker rebase`` did (its ``--json``/``--report`` document)."""

    image: str
    image_id: str
    old_root: str | None
    new_root: str
    new_root_id: str
    rebased: bool
    new_image_id: str | None = None
    tag: str | None = None
    reason: str | None = None
    application_layers: list[str] = field(default_factory=list)
    sbom_layer: str | None = None
    python: dict[str, str | None] = field(default_factory=dict)
    packages_changed: list[dict[str, str | None]] = field(default_factory=list)
    smoke_test: str | None = None
    digest: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "image_id": self.image_id, "rebased": self.rebased, "reason": self.reason,
                "new_image_id": self.new_image_id, "tag": self.tag,
                "old_root": self.old_root, "new_root": {"tag": self.new_root, "id": self.new_root_id},
                "application_layers": self.application_layers, "sbom_layer": self.sbom_layer,
                "python": self.python, "packages_changed": self.packages_changed, "smoke_test": self.smoke_test,
                "digest": self.digest, "seconds": round(self.seconds, 2)}


def _new_root(engine: Engine, old_root_id: str | None, root: str | None) -> tuple[str, dict[str, Any]]:
    if root is not None:
        attrs = engine.image_attrs(root)
        if attrs is None:
            raise RebaseError(f"root image {root} is not in the engine", "give a root image the engine has")
        return root, attrs
    old = engine.image_attrs(old_root_id) if old_root_id else None
    if old is None:
        raise RebaseError("the image's root image is no longer in the engine, so its refreshed root is unknown",
                          "name the new root with --root grocker/root:KEY")
    labels = (old.get("Config") or {}).get("Labels") or {}
    recipe = labels.get(ROOT_RECIPE_LABEL) or next(
        (t.split(":", 1)[1] for t in old.get("RepoTags") or ()
         if t.startswith("grocker/root:") and not t.endswith(CURRENT_SUFFIX)), None)
    current = f"grocker/root:{recipe}{CURRENT_SUFFIX}"
    attrs = engine.image_attrs(current) if recipe else None
    if attrs is None:
        raise RebaseError("the image's root has never been refreshed",
                          "run `grocker refresh-root PROJECT` first, or name the new root with --root")
    tags = sorted(t for t in attrs.get("RepoTags") or () if t.startswith("grocker/root:") and t != current)
    return (tags[0] if tags else current), attrs


def _interpreter(engine: Engine, image: str, user: str) -> dict[str, Any]:
    result = engine.run(image, ["-I", "-c", INTERPRETER_PROBE, user], entrypoint=["python3"], user="root",
                        network="none", stream=False)
    try:
        found = json.loads(result.output.strip().splitlines()[-1]) if result.exit_code == 0 else None
    except (ValueError, IndexError):
        found = None
    if not isinstance(found, dict):
        return {"version": None, "error": result.tail(1)}
    return found


def smoke_config(image_id: str, labels: Mapping[str, str], project: Path | None, home: Path,
                 environ: Mapping[str, str]) -> Config:
    """The configuration the smoke test runs with: the project's (``project``, else the directory its build
    record names, when it still has its configuration), else what the image's labels say of its smoke test."""
    record = records.find(home, image_id)
    where = project or (Path(record.project) if record and record.project else None)
    if where is not None and where.is_dir():
        with contextlib.suppress(ConfigError):
            return load_config(where, environ=environ)
    elif project is not None:
        raise ProjectError(f"--project {project}: no such directory", "give the project's directory")
    try:
        smoke = json.loads(labels.get("io.grocker.smoke-test") or "{}")
    except ValueError:
        smoke = {}
    return Config(project_dir=Path.cwd(), smoke_test=SmokeTest(port=smoke.get("port"), path=smoke.get("path") or "/"))


def rebase_image(engine: Engine, image: str, *, root: str | None, tag: str | None, home: Path,
                 environ: Mapping[str, str], progress: Progress, project: Path | None = None,
                 push: bool = False) -> RebaseResult:
    """Put ``image`` on ``root`` (default: its refreshed root), smoke-test it, tag it ``tag`` (default: ``image``
    when it is a reference, else untagged), with ``push`` push it there; see the module's docstring."""
    start = time.monotonic()
    attrs = engine.image_attrs(image)
    if attrs is None:
        raise RebaseError(f"image {image} is not in the engine", "build it, or pull it first")
    image_id = str(attrs["Id"])
    with progress.stage("read the image"):
        raw, blobs = engine.save_image(image_id)
    app = json.loads(raw)
    layers = split_layers(app)
    new_root, root_attrs = _new_root(engine, layers.root_id, root)
    result = RebaseResult(image=image, image_id=image_id, old_root=layers.root_id, new_root=new_root,
                          new_root_id=str(root_attrs["Id"]), rebased=False, application_layers=layers.app)
    if result.new_root_id == layers.root_id:
        result.reason = f"already on root {new_root}"
        result.seconds = time.monotonic() - start
        return result
    user = str((app.get("config") or {}).get("User") or "root")
    cache = home / "sbom"
    old_root_attrs = engine.image_attrs(layers.root_id) if layers.root_id else None
    with progress.stage(f"compare the roots {(layers.root_id or '?')[7:19]} and {result.new_root_id[7:19]}"):
        old_python = _interpreter(engine, image_id, user)
        new_python = _interpreter(engine, result.new_root_id, user)
        # The application's layers do not touch dpkg's status: the image's is its root's.
        old_packages = debian_packages(engine, layers.root_id if layers.root_id and old_root_attrs else image_id,
                                       cache)
        new_packages = debian_packages(engine, result.new_root_id, cache)
    result.python = {"old": old_python.get("version"), "new": new_python.get("version")}
    reasons = incompatibilities(old_python, new_python, old_packages=old_packages, new_packages=new_packages)
    if reasons:
        raise RebaseError(f"cannot rebase {image} onto {new_root}: {'; '.join(reasons)}",
                          "rebuild the image on that root with `grocker build` instead")
    result.packages_changed = package_changes(old_packages, new_packages)
    created = str(app.get("created") or "")
    epoch = int(_epoch(created))
    extra: list[Layer] = []
    sbom = engine.image_file(image_id, SBOM_PATH)
    if sbom is None:
        progress.warn(f"{image} has no SBOM ({SBOM_PATH}): the rebased image has none either")
    else:
        sbom = rebased_sbom(sbom, debs=new_packages, root_id=result.new_root_id)
        extra.append(Layer(f"SBOM after a rebase onto {new_root}", [Entry(SBOM_PATH, sbom, 0o644)], epoch=epoch))
        result.sbom_layer = extra[0].diff_id
    blob = rebased_config(app, image_id=image_id, new_root=root_attrs,
                          old_root_env=((old_root_attrs or {}).get("Config") or {}).get("Env"),
                          sbom_diff_id=result.sbom_layer)
    new_id = sha256_id(blob)
    missing = [d for d in layers.app if d not in blobs]
    if missing:  # pragma: no cover - docker save gives every layer of the image
        raise ImageBuildError(f"docker save of {image} lacks layer {missing[0]}", "see the engine log")
    app_layers = [Layer(f"layer {d}", _tar=blobs[d]) for d in layers.app]
    with progress.stage(f"load the rebased image {new_id[7:19]}"):
        if engine.image_id(new_id) is None:
            engine.load(load_archive(blob, list(root_attrs["RootFS"]["Layers"]), app_layers + extra),
                        f"rebased image of {image}")
        if engine.image_id(new_id) is None:
            raise ImageBuildError(f"the engine did not keep the rebased image ({new_id[:19]})", "see the engine log")
    if sbom is not None:
        remember(new_id, sbom)
    result.new_image_id = new_id
    labels = (app.get("config") or {}).get("Labels") or {}
    config = smoke_config(image_id, labels, project, home, environ)
    with progress.stage(f"smoke test {new_id[7:19]}"):
        smoke_test(engine, config, new_id, progress)
    result.smoke_test = "passed"
    result.tag = tag or (image if not image.startswith("sha256:") and ":" in image.rsplit("/", 1)[-1] else None)
    if result.tag:
        engine.tag(new_id, result.tag)
    _record(engine, home, image_id, new_id, result)
    _provenance(home, image_id, new_id, result, diff_ids=json.loads(blob)["rootfs"]["diff_ids"], sbom=sbom)
    result.rebased = True
    if push:
        from setuptools_grocker.ref import ImageRef
        from setuptools_grocker.registry.push import push_runtime_image

        if not result.tag or ImageRef.parse(result.tag).host is None:
            raise RebaseError(f"--push needs a tag that names a registry (got {result.tag or 'none'})",
                              "give --tag REGISTRY/REPO:TAG")
        from setuptools_grocker.pipeline.plugins import plugin_manager

        plugins = plugin_manager(config.plugins, environ, progress.write)  # a signing plugin signs it, as a build's
        with progress.stage(f"push {result.tag}"):
            result.digest, _ = push_runtime_image(engine, new_id, [result.tag], home, progress,
                                                  sign=lambda request: plugins.grocker_sign(config, request))
    result.seconds = time.monotonic() - start
    return result


def _epoch(created: str) -> float:
    import datetime

    try:
        return datetime.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 315532800.0  # 1980-01-01, as assemble.py's default


def _record(engine: Engine, home: Path, image_id: str, new_id: str, result: RebaseResult) -> None:
    """A build record for the rebased image: its original's, with the new root, tag and time."""
    old = records.find(home, image_id)
    records.save(home, records.Record(
        image_id=new_id, when=records.now(), status="built", name=old.name if old else None,
        version=old.version if old else None, project=old.project if old else None,
        state_dir=old.state_dir if old else None, key=old.key if old else None,
        revision=old.revision if old else None, tags=[result.tag] if result.tag else [],
        base_image=old.base_image if old else None, root_image=result.new_root_id,
        compiler_image=old.compiler_image if old else None, workspace=old.workspace if old else None))


def _provenance(home: Path, image_id: str, new_id: str, result: RebaseResult, *, diff_ids: list[str],
                sbom: bytes | None) -> None:
    """The statement of the rebased image: its original's (the same build of the same wheels), with the new
    image ID as subject, the new root, the image it was rebased from, its layers and SBOM, and this run's
    time and tool. Nothing when the original has no record here."""
    old = records.find_provenance(home, image_id)
    if old is None:
        return
    doc = copy.deepcopy(old)
    doc["subject"] = [{"name": s.get("name"), "digest": {"sha256": new_id.split(":")[-1]},
                       "annotations": {"kind": "image config (image ID)"}} for s in doc.get("subject") or []
                      if (s.get("annotations") or {}).get("kind") == "image config (image ID)"]
    definition = doc["predicate"]["buildDefinition"]
    dependencies = [d for d in definition.get("resolvedDependencies") or []
                    if d.get("name") not in ("root-image", "rebased-from")]
    dependencies += [{"name": "root-image", "digest": {"sha256": result.new_root_id.split(":")[-1]}},
                     {"name": "rebased-from", "digest": {"sha256": image_id.split(":")[-1]},
                      "annotations": {"kind": "image config (image ID) this image was rebased from"}}]
    definition["resolvedDependencies"] = dependencies
    run = doc["predicate"]["runDetails"]
    run["builder"].setdefault("version", {})["setuptools-grocker"] = tool_identity()
    run["metadata"] = {**(run.get("metadata") or {}), "finishedOn": records.now()}
    run["byproducts"] = [{"name": f"layer-{i}", "digest": {"sha256": d.split(":")[-1]},
                          "annotations": {"kind": "layer diff ID"}} for i, d in enumerate(diff_ids)] + (
        [{"name": "sbom", "uri": f"file://{SBOM_PATH}", "digest": {"sha256": hashlib.sha256(sbom).hexdigest()},
          "mediaType": "application/vnd.cyclonedx+json"}] if sbom is not None else [])
    path = records.provenance_path(home, new_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
