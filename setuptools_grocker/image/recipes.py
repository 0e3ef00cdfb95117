"""The recipes of the root and compiler images, and what the runtime image is labelled with.

* root = base + Python + ``tini`` + ``system-packages.run`` + a non-root user;
* compiler = root + compilers + Python headers + ``system-packages.build`` + a build venv.

Both are built from small Dockerfiles, tagged by a hash of their inputs and reused while present.
The runtime image is not built here nor in any container: assemble.py writes its layers on top
of the root image's from the wheels (with the ``installer`` library) and ``docker load``s them;
this module only gives it its labels and HEALTHCHECK.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from setuptools_grocker import __version__
from setuptools_grocker.config import Config
from setuptools_grocker.engine import OWNER_LABEL, Engine
from setuptools_grocker.errors import BaseImageError, ImageBuildError
from setuptools_grocker.image.uvtool import extract_uv, fetch_uv, uv_identity
from setuptools_grocker.pipeline.pipconf import PipForward
from setuptools_grocker.progress import Progress
from setuptools_grocker.registry.sharedcache import KEY_LABEL

if TYPE_CHECKING:
    from setuptools_grocker.registry.sharedcache import SharedCache

# Every command of a RUN is its own statement so that `set -e` stops at the first failure
# (inside an `a && b` list it would not). Every value from the configuration goes through
# shlex.quote (config.py also restricts `user` and `python` to plain names).
# /config is root's: the app reads its env files there but cannot drop one that the entrypoint
# would load at the next start (mounted files and Swarm secrets stay readable).
# Bump when a recipe below changes, so cached root/compiler images are not reused.
RECIPE_VERSION = "4"
APP_DIR = "/opt/app"
VENV = f"{APP_DIR}/venv"
BUILD_VENV = "/opt/grocker/build-venv"
CONFIG_DIR = "/config"
#: A writable directory of the runtime user in every runtime image ($GROCKER_DATA_DIR): SQLite files, uploads.
DATA_DIR = "/data"
USER_UID = 10001
COMPILERS = ("gcc", "g++", "make", "libc6-dev", "pkg-config")
RESOURCES = Path(__file__).parent.parent / "resources"  # package data of setuptools_grocker


@functools.cache
def tool_identity() -> str:
    """The tool in every cache key: its version and a digest of the scripts it runs in containers or puts
    into images (``resources/``: the compile driver, the entrypoint, ...), so that a change to one of them
    rebuilds what it made, also between two installs of the same version (a development checkout)."""
    digest = hashlib.sha256()
    for path in sorted(RESOURCES.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return f"{__version__}+{digest.hexdigest()[:16]}"

ROOT_DOCKERFILE = """\
FROM {base}
RUN set -eu; \\
    export DEBIAN_FRONTEND=noninteractive; \\
    pkgs={run_packages}; \\
    if ! command -v {python} >/dev/null 2>&1; then pkgs="python3 $pkgs"; fi; \\
    if ! command -v tini >/dev/null 2>&1; then pkgs="tini $pkgs"; fi; \\
    if [ -n "$(echo $pkgs)" ]; then \\
        if ! command -v apt-get >/dev/null 2>&1; then \\
            echo "grocker-"no-python: the base image has no {python} and no apt-get >&2; exit 3; fi; \\
        apt-get update -q; \\
        apt-get install -y -q --no-install-recommends $pkgs; \\
        apt-get clean; \\
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \\
    fi; \\
    {python} -c 'import sys; print("python", sys.version.split()[0])'; \\
    groupadd --system --gid {uid} {user}; \\
    useradd --system --uid {uid} --gid {uid} --create-home --home-dir {home} --shell /bin/sh {user}; \\
    install -d -o root -g root -m 0755 {config_dir}
ENV LANG=C.UTF-8 LC_ALL=C.UTF-8 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
"""

COMPILER_DOCKERFILE = """\
FROM {root}
RUN set -eu; \\
    export DEBIAN_FRONTEND=noninteractive; \\
    apt-get update -q; \\
    apt-get install -y -q --no-install-recommends python3-venv {packages}; \\
    apt-get clean; \\
    rm -rf /var/lib/apt/lists/*; \\
    {python} -m venv {build_venv}; \\
    {build_venv}/bin/python -m pip --version
"""

# uv on top of the compiler image: the executable of a wheel checked against its pinned hash (uvtool.py).
UV_LAYER_DOCKERFILE = """\
FROM {base}
COPY uv {build_venv}/bin/uv
RUN {build_venv}/bin/uv --version
"""

def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# What a root or compiler image is made of besides its configured values: grocker's version and the recipes'
# own text (a changed recipe changes the key by itself). Keys hold nothing of the machine (no local image ID
# of an image built here, no path, user, host name or engine version): the shared cache finds them by key.
_ROOT_RECIPE = [__version__, RECIPE_VERSION, ROOT_DOCKERFILE, USER_UID, CONFIG_DIR, KEY_LABEL]
_COMPILER_RECIPE = [__version__, RECIPE_VERSION, COMPILER_DOCKERFILE, list(COMPILERS), BUILD_VENV, KEY_LABEL]


@dataclass(frozen=True)
class BaseImages:
    root: str
    compiler: str
    root_key: str
    #: Where each came from: ``local`` (already in the engine), ``pulled`` (shared cache) or ``built``.
    origins: Mapping[str, str] = field(default_factory=dict)
    #: (name, image ID) of the base, root and compiler images when the build looked them up.
    ids: tuple[tuple[str, str], ...] = ()

    def id_of(self, engine: Engine, ref: str) -> str | None:
        """The image ID of ``ref`` as the build found it, else as the engine says now."""
        return dict(self.ids).get(ref) or engine.image_id(ref)


def root_key(config: Config, base_id: str) -> str:
    """The root image's key: the base image's ID (content-addressed: the same base has the same ID on every
    machine), the interpreter, the run packages, the user and the recipe."""
    return _hash("root", _ROOT_RECIPE, base_id, config.python, sorted(config.run_packages), config.user)


def compiler_key(rkey: str, build_packages: tuple[str, ...], installer: str) -> tuple[str, str]:
    """The keys of the compiler image with pip only and of the one the compile uses (with uv, or the same)."""
    pip_key = _hash("compiler", _COMPILER_RECIPE, rkey, sorted(build_packages))
    if installer != "uv":
        return pip_key, pip_key
    return pip_key, _hash("compiler+uv", pip_key, uv_identity(), UV_LAYER_DOCKERFILE)


#: The tag suffix of the refreshed root of a recipe: ``grocker/root:<recipe key>-current`` (refresh.py).
CURRENT_SUFFIX = "-current"


def current_root_key(engine: Engine, config: Config, base_id: str) -> str:
    """The key of the root builds use: the last refresh's (``grocker refresh-root``, whose key covers the
    Debian packages with their versions) when there was one, else the recipe's (:func:`root_key`).

    Read from the engine only (the ``-current`` tag): no network, the recorded root until refreshed.
    """
    recipe = root_key(config, base_id)
    attrs = engine.image_attrs(f"grocker/root:{recipe}{CURRENT_SUFFIX}")
    if attrs is None:
        return recipe
    keys = sorted(t.split(":", 1)[1] for t in attrs.get("RepoTags") or ()
                  if t.startswith("grocker/root:") and not t.endswith(CURRENT_SUFFIX))
    return keys[0] if keys else recipe


def root_recipe(config: Config) -> str:
    """The root image's Dockerfile; every configured value quoted for the shell."""
    return ROOT_DOCKERFILE.format(
        base=config.base_image,
        python=shlex.quote(config.python),
        run_packages=shlex.quote(" ".join(sorted(config.run_packages))),
        uid=USER_UID,
        user=shlex.quote(config.user),
        home=shlex.quote(f"/home/{config.user}"),
        config_dir=CONFIG_DIR,
    )


def compiler_recipe(config: Config, root: str, build_packages: tuple[str, ...]) -> str:
    """The compiler image's Dockerfile: the root plus compilers, the Python headers and a build venv."""
    python_dev = Path(config.python).name + "-dev"
    packages = " ".join(shlex.quote(p) for p in COMPILERS + (python_dev,) + build_packages)
    return COMPILER_DOCKERFILE.format(root=root, packages=packages, python=shlex.quote(config.python),
                                      build_venv=BUILD_VENV)


def ensure_base_images(engine: Engine, config: Config, progress: Progress, *, need_compiler: bool = True,
                       extra_build_packages: tuple[str, ...] = (), pip: PipForward | None = None,
                       work: Path | None = None, shared: SharedCache | None = None) -> BaseImages:
    """Make sure the root and compiler images exist: in the engine, else from the shared cache, else built.

    With ``installer = "uv"`` the compiler image is the pip one plus uv, whose wheel comes from the
    index of ``pip`` (the user's forwarded configuration), downloaded in a scratch directory under ``work``.
    ``shared`` (the ``build-cache`` key) is asked for what the engine lacks, and given what was built
    when its writing is on (registry/sharedcache.py).
    """
    base = engine.ensure_image(config.base_image)
    rkey = current_root_key(engine, config, base["Id"])
    root = f"grocker/root:{rkey}"
    if not engine.image_id(root) and rkey != root_key(config, base["Id"]):
        rkey = root_key(config, base["Id"])  # a refreshed root's tag removed by hand: the recipe's root
        root = f"grocker/root:{rkey}"
    origins = {"root": _obtain(engine, shared, "root", rkey, root, base, progress,
                               lambda: _build_small(engine, root_recipe(config), root, "root image", progress,
                                                    key=f"root-{rkey}"))}
    build_packages = tuple(sorted(set(config.build_packages) | set(extra_build_packages)))
    pip_key, ckey = compiler_key(rkey, build_packages, config.installer)
    pip_compiler = f"grocker/compiler:{pip_key}"
    compiler = f"grocker/compiler:{ckey}"

    def build_compiler() -> None:
        if not engine.image_id(pip_compiler):
            _build_small(engine, compiler_recipe(config, root, build_packages), pip_compiler, "compiler image",
                         progress, key=f"compiler-{pip_key}")
        if compiler != pip_compiler:
            _add_uv(engine, pip_compiler, compiler, f"compiler-{ckey}", pip or PipForward(), work, progress)

    if need_compiler:
        root_attrs = engine.image_attrs(root) or {}
        origins["compiler"] = _obtain(engine, shared, "compiler", ckey, compiler, root_attrs, progress,
                                      build_compiler)
    root_id = engine.image_id(root)
    compiler_id = engine.image_id(compiler) if need_compiler else None
    ids = [(config.base_image, str(base["Id"])), (root, root_id), (compiler, compiler_id)]
    return BaseImages(root=root, compiler=compiler, root_key=rkey, origins=origins,
                      ids=tuple((ref, image_id) for ref, image_id in ids if image_id))


def _obtain(engine: Engine, shared: SharedCache | None, kind: str, key: str, tag: str, parent: Mapping[str, Any],
            progress: Progress, build: Callable[[], None]) -> str:
    """``tag`` from the engine (``local``), the shared cache (``pulled``) or ``build`` (``built``, then shared)."""
    if engine.image_id(tag):
        return "local"
    if shared is not None and parent and shared.fetch(engine, kind=kind, key=key, parent=parent, tag=tag,
                                                      progress=progress):
        return "pulled"
    build()
    if shared is not None:
        shared.publish(engine, kind=kind, key=key, tag=tag, progress=progress)
    return "built"


def _add_uv(engine: Engine, base: str, tag: str, key: str, pip: PipForward, work: Path | None,
            progress: Progress) -> None:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="grocker-uv-", dir=work) as tmp:
        download, context = Path(tmp) / "download", Path(tmp) / "context"
        download.mkdir()
        context.mkdir()
        wheel = fetch_uv(engine, base, f"{BUILD_VENV}/bin/python", pip, download, progress)
        extract_uv(wheel, context)
        _build_small(engine, UV_LAYER_DOCKERFILE.format(base=base, build_venv=BUILD_VENV), tag,
                     "compiler image (uv)", progress, context=context, key=key)


def _build_small(engine: Engine, dockerfile: str, tag: str, what: str, progress: Progress,
                 context: Path | None = None, *, key: str) -> None:
    with progress.stage(f"{what} {tag}"), tempfile.TemporaryDirectory(prefix="grocker-ctx-") as tmp:
        where = context or Path(tmp)
        (where / "Dockerfile").write_text(dockerfile)
        try:
            engine.build(where, tag=tag, labels={OWNER_LABEL: "setuptools-grocker", KEY_LABEL: key}, what=what)
        except ImageBuildError as exc:
            # The marker is split in the recipe, so only the echo's output matches here.
            if "grocker-no-python" in (exc.details or ""):
                raise BaseImageError(
                    "the base image has no Python and no apt-get to install it",
                    "use a Debian-based base image, or build one with `grocker bootstrap-base`",
                    details=exc.details,
                ) from exc
            if "Unable to locate package" in (exc.details or ""):
                plain = re.sub(r"\x1b\[[0-9;]*m", "", exc.details or "")  # apt colours its errors on a tty
                missing = [ln.split("Unable to locate package", 1)[1].strip()
                           for ln in plain.splitlines() if "Unable to locate package" in ln]
                raise ImageBuildError(
                    f"system package {', '.join(missing)} does not exist in the base image's Debian suite",
                    "fix system-packages.run / system-packages.build (check the name with `apt-cache search`)",
                    details=exc.details,
                ) from exc
            raise


def runtime_labels(config: Config, *, name: str, version: str, revision: str | None,
                   distributions: list[str], key: str) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "io.grocker.distributions": json.dumps(distributions),
        "io.grocker.key": key,
        "io.grocker.commands": json.dumps(sorted(config.commands)),
        "io.grocker.default-command": config.effective_default_command,
        "io.grocker.smoke-test": json.dumps({"port": config.smoke_test.port, "path": config.smoke_test.path}),
        "io.grocker.tool-version": __version__,
        OWNER_LABEL: "setuptools-grocker",
    }
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    labels.update(config.labels)
    return labels


def healthcheck_config(config: Config) -> dict[str, Any] | None:
    """The image's health check: the smoke-test HTTP probe, when there is one (``docker ps`` shows it)."""
    if config.smoke_test.port is None:
        return None
    start = max(1, int(config.smoke_test.timeout))
    return {"Test": ["CMD", f"{VENV}/bin/python", f"{APP_DIR}/grocker/entrypoint.py", "health"],
            "Interval": 10_000_000_000, "Timeout": 3_000_000_000, "StartPeriod": start * 1_000_000_000,
            "Retries": 3}
