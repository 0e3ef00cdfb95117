"""The runtime image of one application: the root image, its wheels as layers, its config (see assemble.py)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from packaging.utils import canonicalize_name

from setuptools_grocker.config import Config
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.image.assemble import (
    MAX_LAYERS,
    Entry,
    Venv,
    image_config,
    load_archive,
    runtime_layers,
    tree_entries,
)
from setuptools_grocker.image.recipes import (
    APP_DIR,
    CONFIG_DIR,
    RESOURCES,
    USER_UID,
    VENV,
    BaseImages,
    healthcheck_config,
    runtime_labels,
)
from setuptools_grocker.progress import Progress

if TYPE_CHECKING:
    from setuptools_grocker.pipeline.compile import Wheelhouse


def build_runtime_image(engine: Engine, config: Config, *, images: BaseImages, wheels: Wheelhouse, key: str,
                        progress: Progress, files: Mapping[str, Path] | None = None,
                        epoch: int, revision: str | None, internal: Iterable[str] = ()) -> str:
    """Assemble the runtime image from the root image and the wheels; return its ID (see assemble.py)."""
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
    for volume in config.volumes:  # created and owned by the runtime user, so a fresh volume is writable
        app_entries.append(Entry(volume, uid=USER_UID))
    root = engine.image_attrs(images.root)
    if root is None:
        raise ImageBuildError(f"the root image {images.root} is gone", "build again")
    internal_names: set[str] = {canonicalize_name(n) for n in [*internal, *manifest.get("local", [])]}
    layers = runtime_layers(wheels=wheels.wheels, project_wheel=wheels.project_wheel, internal=internal_names,
                            venv=Venv(VENV, manifest["python"]["version"]), app_entries=app_entries,
                            app_comment=f"application {wheels.name} {wheels.version}",
                            room=MAX_LAYERS - len(root["RootFS"]["Layers"]), epoch=epoch)
    env = dict(item.split("=", 1) for item in (root.get("Config") or {}).get("Env") or [])
    env.update({"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "VIRTUAL_ENV": VENV, "GROCKER_APP_NAME": wheels.name, "GROCKER_APP_VERSION": wheels.version,
                "GROCKER_CONFIG_DIR": CONFIG_DIR})
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
    progress.info(f"{len(layers)} layers above the root: " + "; ".join(layer.comment for layer in layers))
    if engine.image_id(image_id) is None:
        engine.load(load_archive(blob, root["RootFS"]["Layers"], layers), f"image of {wheels.name}")
    if engine.image_id(image_id) is None:
        raise ImageBuildError(f"the engine did not keep the image of {wheels.name} ({image_id[:19]})",
                              "see the engine log")
    return image_id
