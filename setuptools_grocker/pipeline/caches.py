"""Where grocker keeps its caches: the cache home, one pip cache per trust scope, the bytecode cache."""
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


def bytecode_cache_dir(environ: Mapping[str, str]) -> Path | None:
    """The bytecode cache shared by every build (keyed by wheel content), or None when
    ``GROCKER_NO_BYTECODE=1`` asks for images without bytecode (for comparisons).

    Shared across trust scopes, unlike the pip cache: no build code writes there, only
    setuptools-grocker, from what the image's interpreter compiled with the network off.
    """
    if environ.get("GROCKER_NO_BYTECODE") == "1":
        return None
    return cache_home(environ) / "bytecode"


def uv_dir(environ: Mapping[str, str], scope: Path) -> Path:
    """uv's directory of one trust scope, beside its pip cache (the same scoping, for the same reason).

    Mounted whole at ``/uv`` in the compile container: ``cache/`` (uv's cache, kept between runs) and one
    ``tmp-<id>/`` per run where its environments are made, removed after the run. One mount, one
    filesystem: uv's renames from its scratch space into the cache stay within it (two bind mounts of
    the same host filesystem are two filesystems to the kernel: EXDEV).
    """
    return pip_cache_dir(environ, scope).parent.parent / "uv" / pip_cache_dir(environ, scope).name
