"""The runtime image of one application: the root image, its wheels as layers, its config (see assemble.py)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from packaging.utils import canonicalize_name

from setuptools_grocker.config import Config
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.image import sbom
from setuptools_grocker.image.assemble import (
    MAX_LAYERS,
    Entry,
    Layer,
    Venv,
    image_config,
    install_wheel,
    load_archive,
    prepare_install,
    runtime_layers,
    tree_entries,
)
from setuptools_grocker.image.bytecode import BytecodeCache, add_bytecode
from setuptools_grocker.image.bytecode import identity as bytecode_identity
from setuptools_grocker.image.gc import BOOTSTRAP_LABEL
from setuptools_grocker.image.recipes import (
    APP_DIR,
    CONFIG_DIR,
    DATA_DIR,
    RESOURCES,
    USER_UID,
    VENV,
    BaseImages,
    healthcheck_config,
    runtime_labels,
    tool_identity,
)
from setuptools_grocker.image.sbom import SBOM_PATH, DebPackage, debian_packages, make_sbom, python_dists, remember
from setuptools_grocker.progress import Progress

if TYPE_CHECKING:
    from setuptools_grocker.pipeline.compile import Wheelhouse


def image_key(config: Config, *, root_key: str, wheels: Wheelhouse, plugins: str, revision: str | None,
              epoch: int, bytecode: bool, internal: Iterable[str] = ()) -> str:
    """What a runtime image is made of, as a key: its configuration, root, plugins (files included) and the
    *content* of its wheels (:meth:`Wheelhouse.content_digest`), not the source that produced them.

    A change in the source that leaves the wheels the same (a stray file in a project outside git) gives
    the same key: the pipelines then reuse the image they built before (the early cut-off).
    """
    data = {
        "tool": tool_identity(),
        "config": config.image_inputs(),
        "root": root_key,
        "wheels": wheels.content_digest(),
        "plugins": plugins,
        "revision": revision,
        "epoch": epoch,
        "internal": sorted(canonicalize_name(n) for n in internal),
        "bytecode": bytecode_identity(bytecode),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


#: The reason of a ``cached`` result whose compile ran but gave the same wheels (the early cut-off).
WHEELS_UNCHANGED = "wheels unchanged"


def cut_off(engine: Engine, previous: Mapping[str, Any], key: str, progress: Progress, *,
            no_cache: bool = False) -> str | None:
    """The early cut-off: the image ID of the previous build when its image key (``image_key`` in the state
    ``previous``) is ``key`` and that image is still in the engine (said on ``progress``); else None (make
    the image).

    Both pipelines call this after their compile, with the key of :func:`image_key`.
    """
    if no_cache or not key or previous.get("image_key") != key:
        return None
    image_id = previous.get("image_id")
    if not isinstance(image_id, str) or not image_id or engine.image_id(image_id) != image_id:
        return None
    progress.info(f"{WHEELS_UNCHANGED} (image key {key[:12]}): reusing image {image_id[7:19]}, "
                  "no new image and no smoke test")
    return image_id


def image_sbom(engine: Engine, config: Config, *, wheels: Wheelhouse, installed: Mapping[Path, Any],
               internal: Iterable[str], root_id: str, epoch: int, cache: Path | None,
               base_id: str | None = None) -> bytes:
    """The SBOM of the image (sbom.py): the wheels installed, the root's Debian packages, the base image.

    The root's package list is cached by root image ID in ``cache/sbom`` (``cache``: the cache home). The base
    is named by what its content says, never by ``base-image`` (:func:`base_name`).
    """
    debs, base_image, base_id = sbom_root(engine, config, root_id=root_id, cache=cache, base_id=base_id)
    return make_sbom(name=wheels.name, version=wheels.version, dists=python_dists(sorted(installed), internal),
                     debs=debs, base_image=base_image, base_id=base_id, root_id=root_id, epoch=epoch)


def sbom_root(engine: Engine, config: Config, *, root_id: str, cache: Path | None, base_id: str | None
              ) -> tuple[list[DebPackage], str, str | None]:
    """What an SBOM says of the root and the base: the root's Debian packages (cached by root image ID in
    ``cache/sbom``), the base's name (:func:`base_name`) and its ID."""
    base_id = base_id or engine.image_id(config.base_image)
    debs = debian_packages(engine, root_id, cache / "sbom" if cache is not None else None)
    return debs, base_name(engine.image_attrs(base_id) if base_id else None), base_id


def prepare_image(engine: Engine, config: Config, *, images: BaseImages, previous: Mapping[str, Any],
                  bytecode: Path | None) -> threading.Thread:
    """The image stage's work that does not wait for the compile, in a thread while the compile container works:
    cyclonedx-python-lib imported, the SBOM's root part made (:func:`sbom.prepare`), and the wheels of the
    previous closure installed in memory (:func:`prepare_install`, taken by the :func:`install_wheel` of a wheel of
    the same bytes: a one-line change reuses its closure, the same files). The image stage waits for it
    (:func:`build_runtime_image`'s ``prepared``); whatever it did not do, or did for inputs that changed, the
    image stage does itself."""
    def run() -> None:
        with contextlib.suppress(Exception):
            root = engine.image_attrs(images.root)
            if root is not None:
                debs, base_image, base_id = sbom_root(engine, config, root_id=root["Id"],
                                                      cache=bytecode.parent if bytecode is not None else None,
                                                      base_id=images.id_of(engine, config.base_image))
                sbom.prepare(debs=debs, base_image=base_image, base_id=base_id)
            from setuptools_grocker.pipeline.compile import Wheelhouse

            project_wheel = previous.get("wheel")
            last = (Wheelhouse.load(Path(project_wheel).parent.parent)
                    if isinstance(project_wheel, str) and project_wheel else None)
            if last is not None and "python" in last.manifest:
                venv = Venv(VENV, last.manifest["python"]["version"])
                for wheel in last.wheels:
                    if wheel != last.project_wheel:
                        prepare_install(wheel, venv)

    thread = threading.Thread(target=run, name="grocker-prepare", daemon=True)
    thread.start()
    return thread


def base_name(attrs: Mapping[str, Any] | None) -> str:
    """The base image's name in an SBOM: ``debian:SUITE`` for a base of ``grocker bootstrap-base`` (its label),
    else ``base-image``. Not the ``base-image`` reference: the SBOM is a file of the image, and the same base
    goes by ``debian:bookworm-slim`` on one machine and ``REGISTRY/debian@sha256:...`` on another."""
    labels = ((attrs or {}).get("Config") or {}).get("Labels") or {}
    suite = labels.get(BOOTSTRAP_LABEL)
    return f"debian:{suite}" if suite else "base-image"


def layers_present(engine: Engine, previous: str | None, root_diff_ids: list[str], layers: list[Layer]) -> int:
    """How many of ``layers`` (above the root) the engine has, as the first layers above the root of the
    image ``previous``."""
    attrs = engine.image_attrs(previous) if previous else None
    theirs = list(((attrs or {}).get("RootFS") or {}).get("Layers") or [])
    ours = [*root_diff_ids, *(layer.diff_id for layer in layers)]
    same = 0
    for mine, other in zip(ours, theirs):
        if mine != other:
            break
        same += 1
    return max(0, same - len(root_diff_ids)) if same >= len(root_diff_ids) else 0


def build_runtime_image(engine: Engine, config: Config, *, images: BaseImages, wheels: Wheelhouse, key: str,
                        progress: Progress, files: Mapping[str, Path] | None = None,
                        epoch: int, revision: str | None, internal: Iterable[str] = (),
                        bytecode: Path | None = None, no_cache: bool = False, previous: str | None = None,
                        prepared: threading.Thread | None = None) -> str:
    """Assemble the runtime image from the root image and the wheels; return its ID (see assemble.py).

    ``bytecode``: the bytecode cache directory (see bytecode.py); None ships no bytecode.
    ``no_cache``: compile all the bytecode again instead of taking it from that cache.
    ``previous``: the image the build before made (a one-line change: the same layers but the
    application's): the layers it starts with are not sent to the engine again.
    ``prepared``: the thread of :func:`prepare_image`, waited for first.
    """
    if prepared is not None:
        prepared.join()
    manifest = wheels.manifest
    if "python" not in manifest:
        raise ImageBuildError(f"the wheelhouse of {wheels.name} predates this version of setuptools-grocker",
                              "build again with --no-cache")
    app = {
        "name": wheels.name,
        "version": wheels.version,
        "commands": dict(config.commands),
        "default_command": config.effective_default_command,
        "env": dict(config.env),
        "modules": manifest.get("modules", []),
        "scripts": manifest.get("scripts", []),
        # `check` skips the modules and scripts that need an extra that is not installed.
        "extras": sorted(config.extras),
        "venv": VENV,
        "config_dir": CONFIG_DIR,
        "app_dir": APP_DIR,
        "health": ({"port": config.smoke_test.port, "path": config.smoke_test.path}
                   if config.smoke_test.port is not None else None),
    }
    labels = runtime_labels(config, name=wheels.name, version=wheels.version,
                            revision=revision, distributions=wheels.distributions(),
                            key=key)
    app_entries = [
        Entry(f"{APP_DIR}/grocker/entrypoint.py", (RESOURCES / "entrypoint.py").read_bytes()),
        Entry(f"{APP_DIR}/grocker/app.json", (json.dumps(app, indent=2, sort_keys=True) + "\n").encode()),
    ]
    for dest, src in sorted((files or {}).items()):
        # Files contributed by plugins, owned by root: readable, not writable, by the app user.
        if src.is_dir():
            app_entries += [Entry(e.path, e.data, 0o755 if e.data is None else 0o644, e.link)
                            for e in tree_entries(src, dest)]
        else:
            app_entries.append(Entry(dest, src.read_bytes(), 0o644))
    # Created and owned by the runtime user, so a fresh volume is writable; the data directory always is.
    for volume in sorted({DATA_DIR, *config.volumes}):
        app_entries.append(Entry(volume, uid=USER_UID))
    root = engine.image_attrs(images.root)
    if root is None:
        raise ImageBuildError(f"the root image {images.root} is gone", "build again")
    internal_names: set[str] = {canonicalize_name(n) for n in [*internal, *manifest.get("local", [])]}
    venv = Venv(VENV, manifest["python"]["version"])
    installed = {w: install_wheel(w, venv) for w in sorted({*wheels.wheels, wheels.project_wheel})}
    sbom = image_sbom(engine, config, wheels=wheels, installed=installed, internal={*internal_names, wheels.name},
                      root_id=root["Id"], epoch=epoch, cache=bytecode.parent if bytecode is not None else None,
                      base_id=images.id_of(engine, config.base_image))
    app_entries.append(Entry(SBOM_PATH, sbom, 0o644))
    if bytecode is not None:
        installed = add_bytecode(engine, root=root, root_image=images.root, venv=venv, installed=installed,
                                 cache=BytecodeCache(bytecode), progress=progress, reuse=not no_cache,
                                 precompiled={wheels.project_wheel: wheels.path / "bytecode"})
    layers = runtime_layers(wheels=wheels.wheels, project_wheel=wheels.project_wheel, internal=internal_names,
                            venv=venv, app_entries=app_entries, installed=installed,
                            app_comment=f"application {wheels.name} {wheels.version}",
                            room=MAX_LAYERS - len(root["RootFS"]["Layers"]), epoch=epoch)
    env = dict(item.split("=", 1) for item in (root.get("Config") or {}).get("Env") or [])
    env.update({"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "VIRTUAL_ENV": VENV, "GROCKER_APP_NAME": wheels.name, "GROCKER_APP_VERSION": wheels.version,
                "GROCKER_CONFIG_DIR": CONFIG_DIR, "GROCKER_DATA_DIR": DATA_DIR})
    settings: dict[str, Any] = {
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Entrypoint": ["/usr/bin/tini", "-g", "--", f"{VENV}/bin/python", f"{APP_DIR}/grocker/entrypoint.py"],
        "Cmd": [config.effective_default_command],
        "User": config.user,
        "WorkingDir": f"/home/{config.user}",
        "Labels": {**((root.get("Config") or {}).get("Labels") or {}), **labels},
        "ExposedPorts": {f"{p}/tcp": {} for p in config.ports},
        "Volumes": {v: {} for v in config.volumes},
        "Healthcheck": healthcheck_config(config),
    }
    blob = image_config(root, layers, settings=settings, epoch=epoch)
    image_id = "sha256:" + hashlib.sha256(blob).hexdigest()
    remember(image_id, sbom)
    progress.detail(f"{len(layers)} layers above the root: " + "; ".join(layer.comment for layer in layers))
    if engine.image_id(image_id) is None:
        present = layers_present(engine, previous, root["RootFS"]["Layers"], layers)
        if present:
            progress.detail(f"{present} of the {len(layers)} layers already in the engine (image {previous}): "
                            "not sent")
        try:
            engine.load(load_archive(blob, root["RootFS"]["Layers"], layers, present), f"image of {wheels.name}")
        except ImageBuildError:
            if not present:
                raise
            # The previous image (and its layers) went away meanwhile: send every layer.
            engine.load(load_archive(blob, root["RootFS"]["Layers"], layers), f"image of {wheels.name}")
    if engine.image_id(image_id) is None:
        raise ImageBuildError(f"the engine did not keep the image of {wheels.name} ({image_id[:19]})",
                              "see the engine log")
    return image_id
