"""The security refresh of a root image: a new root when the Debian mirror has newer packages for it.

A root image is frozen by its key (recipes.py: the base image, Python, the run packages, the user):
without a refresh a Debian security update reaches no image. ``grocker refresh-root`` is the one
operation that asks the network:

1. **the check** (cheap when nothing changed): one short container of the root builds use now runs
   ``apt-get update`` (the base's own sources and apt configuration, fresh lists) and
   ``apt-get --simulate full-upgrade``; no line ``Inst``/``Remv``: the root is current, nothing is built;
2. **the refresh** otherwise: the recipe's root plus one layer, ``apt-get full-upgrade`` (always from the
   recipe's root, so refreshes do not stack layers); its key is a hash of the recipe's key and of the
   Debian packages it holds *with their versions* (dpkg's status), so a security update gives a new key;
3. it is tagged ``grocker/root:<key>`` and ``grocker/root:<recipe key>-current``: builds read that tag
   (recipes.current_root_key), never the network, and keep using it until the next refresh.

The nightly runs the refresh, then ``grocker rebase`` for each image (pipeline/rebase.py).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setuptools_grocker.config import Config
from setuptools_grocker.engine import OWNER_LABEL, Engine
from setuptools_grocker.errors import RebaseError
from setuptools_grocker.image.rebase import package_changes
from setuptools_grocker.image.recipes import (
    CURRENT_SUFFIX,
    RECIPE_VERSION,
    current_root_key,
    ensure_base_images,
    root_key,
)
from setuptools_grocker.image.sbom import DebPackage, debian_packages
from setuptools_grocker.progress import Progress

__all__ = ["ROOT_RECIPE_LABEL", "RefreshResult", "parse_simulation", "refresh_root", "refreshed_key"]

#: The label of a refreshed root: the key of the recipe it refreshes.
ROOT_RECIPE_LABEL = "io.grocker.root-recipe"

CHECK = ("set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null; "
         "apt-get --simulate -y -q --no-install-recommends -o Debug::NoLocking=1 full-upgrade")

REFRESH_DOCKERFILE = """\
FROM {root}
RUN : refresh {stamp}; \\
    set -eu; \\
    export DEBIAN_FRONTEND=noninteractive; \\
    apt-get update -q; \\
    apt-get full-upgrade -y -q --no-install-recommends; \\
    apt-get clean; \\
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
"""


@dataclass
class RefreshResult:
    """What ``grocker refresh-root`` found and did (its ``--json`` report)."""

    recipe_key: str
    previous: str
    previous_id: str
    root: str
    root_id: str
    refreshed: bool
    #: What the mirror offers over the previous root (``apt-get --simulate``): name, old, new.
    pending: list[dict[str, str | None]] = field(default_factory=list)
    #: The Debian packages that differ between the previous and the new root (dpkg's status).
    changed: list[dict[str, str | None]] = field(default_factory=list)
    check_seconds: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"recipe_key": self.recipe_key, "previous_root": {"tag": self.previous, "id": self.previous_id},
                "root": {"tag": self.root, "id": self.root_id}, "refreshed": self.refreshed,
                "pending": self.pending, "packages_changed": self.changed,
                "check_seconds": round(self.check_seconds, 2), "seconds": round(self.seconds, 2)}


def parse_simulation(text: str) -> list[dict[str, str | None]]:
    """The packages ``apt-get --simulate`` would install, upgrade or remove, sorted by name.

    ``Inst NAME [OLD] (NEW SUITE [ARCH])``, ``Inst NAME (NEW ...)`` (new), ``Remv NAME [OLD]``.
    """
    found: dict[str, dict[str, str | None]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] not in ("Inst", "Remv"):
            continue
        old = words[2][1:-1] if len(words) > 2 and words[2].startswith("[") else None
        new = None
        if words[0] == "Inst":
            rest = line.split("(", 1)
            new = rest[1].split()[0] if len(rest) == 2 and rest[1].split() else None
        found[words[1]] = {"name": words[1], "old": old, "new": new}
    return [found[name] for name in sorted(found)]


def refreshed_key(recipe_key: str, packages: list[DebPackage]) -> str:
    """The key of a refreshed root: its recipe's key and every Debian package with its version."""
    listed = sorted((p.name, p.architecture, p.version) for p in packages)
    return hashlib.sha256(json.dumps(["root-refresh", RECIPE_VERSION, recipe_key, listed]).encode()).hexdigest()[:16]


def refresh_root(engine: Engine, config: Config, progress: Progress, *, check_only: bool = False) -> RefreshResult:
    """Check the mirror for newer packages of the root ``config`` builds on; with some (and not
    ``check_only``), build the refreshed root and make it the one builds use."""
    start = time.monotonic()
    base = engine.ensure_image(config.base_image)
    recipe = root_key(config, base["Id"])
    previous = f"grocker/root:{current_root_key(engine, config, base['Id'])}"
    if not engine.image_id(previous):
        previous = ensure_base_images(engine, config, progress, need_compiler=False).root
    previous_id = str(engine.image_id(previous))
    with progress.stage(f"check the mirror for {previous}"):
        answer = engine.run(previous, ["sh", "-c", CHECK], user="root", stream=False)
    if answer.exit_code != 0:
        raise RebaseError(f"checking the Debian mirror from {previous} failed (exit code {answer.exit_code}): "
                          f"{answer.tail(1)}", "check the network and the base image's apt sources",
                          details=answer.tail())
    pending = parse_simulation(answer.output)
    result = RefreshResult(recipe_key=recipe, previous=previous, previous_id=previous_id, root=previous,
                           root_id=previous_id, refreshed=False, pending=pending,
                           check_seconds=time.monotonic() - start)
    if not pending or check_only:
        result.seconds = time.monotonic() - start
        return result
    recipe_root = ensure_base_images(engine, config, progress, need_compiler=False).root \
        if not engine.image_id(f"grocker/root:{recipe}") else f"grocker/root:{recipe}"
    stamp = hashlib.sha256(json.dumps([previous_id, pending]).encode()).hexdigest()[:16]
    with progress.stage(f"refresh the root image {recipe}"), tempfile.TemporaryDirectory(prefix="grocker-ctx-") as tmp:
        (Path(tmp) / "Dockerfile").write_text(REFRESH_DOCKERFILE.format(root=recipe_root, stamp=stamp))
        built = engine.build(Path(tmp), labels={OWNER_LABEL: "setuptools-grocker", ROOT_RECIPE_LABEL: recipe},
                             what="refreshed root image")
    packages = debian_packages(engine, built, None)
    key = refreshed_key(recipe, packages)
    root = f"grocker/root:{key}"
    existing = engine.image_id(root)
    if existing and existing != built:
        # The same packages as a root already there (the mirror changed nothing that stays installed):
        # keep that one, so the images built on it stay on it.
        engine.remove_image(built)
        built = existing
    else:
        engine.tag(built, root)
    engine.tag(built, f"grocker/root:{recipe}{CURRENT_SUFFIX}")
    result.root, result.root_id = root, built
    result.refreshed = built != previous_id
    result.changed = package_changes(debian_packages(engine, previous_id, None), packages)
    result.seconds = time.monotonic() - start
    return result
