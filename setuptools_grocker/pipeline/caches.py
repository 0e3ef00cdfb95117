"""Where grocker keeps its caches: the cache home, and one pip cache per trust scope."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping


def cache_home(environ: Mapping[str, str]) -> Path:
    explicit = environ.get("GROCKER_CACHE_HOME")
    if explicit:
        return Path(explicit)
    xdg = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", str(Path.home()))) / ".cache")
    return Path(xdg) / "setuptools-grocker"


def pip_cache_dir(environ: Mapping[str, str], scope: Path) -> Path:
    """The pip cache of one trust scope (a workspace root, or the directory of a single project).

    The compile container mounts its pip cache writable, so any build backend it runs can
    rewrite the cached wheels: a cache shared by every build would let one project's build
    code plant wheels in another's image. Projects of one scope trust each other; a scope
    never sees another's cache.
    """
    digest = hashlib.sha256(str(scope.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return cache_home(environ) / "pip" / digest
