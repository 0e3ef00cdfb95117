"""uv in the compiler image: its wheel fetched from the user's index, checked against a pinned hash.

uv is a wheel on the package index like any other, so it comes from where the user's pip
configuration says packages come from (a private mirror, a ``file://`` index, a proxy). The wheel
is downloaded by ``pip download`` in a container of the compiler image without uv (the user's pip
options and credentials stay in that container's environment, never in an image layer or its
history), then checked on the host against the sha256 pinned here for the engine's architecture.
Only the ``uv`` executable of a checked wheel is copied into the image (a static binary).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

from setuptools_grocker.engine import Engine, Mount
from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.pipeline.pipconf import PipForward
from setuptools_grocker.progress import Progress, add_secret

UV_VERSION = "0.13.10"
#: sha256 of the manylinux wheel of UV_VERSION per machine architecture (``uname -m``).
UV_WHEEL_SHA256 = {
    "x86_64": "7cc9c41b43d583e34c781fd3446405b06e9c5fa2db468ce2a534d353db6429e5",
    "aarch64": "e89dd26ea831dde70639ba0a798fa04a4c7c0226fd2b241da86218bfa370e495",
}
# The download runs in the compiler image's build venv: the architecture is the container's.
_DOWNLOAD = (
    'arch=$(uname -m); echo "grocker-arch: $arch"; '
    '"$1" -m pip download --no-deps --only-binary :all: --no-cache-dir --disable-pip-version-check '
    '--platform "manylinux_2_17_$arch" --dest /out "uv==$2"'
)


def uv_identity() -> list[str]:
    """What the compiler image's key holds about uv: its version and the pinned hashes."""
    return [UV_VERSION, *(f"{arch}={digest}" for arch, digest in sorted(UV_WHEEL_SHA256.items()))]


def check_uv_wheel(path: Path, arch: str) -> None:
    """Raise ImageBuildError unless ``path`` is the pinned wheel of uv for ``arch``."""
    pinned = UV_WHEEL_SHA256.get(arch)
    if pinned is None:
        raise ImageBuildError(f"no pinned uv wheel for the architecture {arch!r} of the engine",
                              "set installer = \"pip\" (uv is pinned for x86_64 and aarch64 only)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != pinned:
        raise ImageBuildError(
            f"the uv {UV_VERSION} wheel from the package index ({path.name}) has sha256 {digest}, "
            f"not the pinned {pinned}",
            "the index serves another file under that name: check the index pip uses (index-url, "
            "PIP_INDEX_URL), or set installer = \"pip\"")


def extract_uv(wheel: Path, dest: Path) -> Path:
    """Write the ``uv`` executable of a checked wheel to ``dest/uv`` (mode 0755)."""
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.endswith(".data/scripts/uv")]
        if len(members) != 1:
            raise ImageBuildError(f"the uv wheel {wheel.name} holds no uv executable",
                                  "check the index pip uses, or set installer = \"pip\"")
        target = dest / "uv"
        with zf.open(members[0]) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out)
    target.chmod(0o755)
    return target


def fetch_uv(engine: Engine, image: str, build_python: str, pip: PipForward, work: Path,
             progress: Progress) -> Path:
    """Download the uv wheel for the engine's architecture in ``image`` into ``work`` (an empty directory the
    engine can mount); return it, checked.

    Runs only when a compiler image is built (its key holds the version and the hashes).
    """
    out = work
    # Pinned by version and hash: the user's constraints have nothing to say about the tool.
    env = {k: v for k, v in pip.env.items() if k != "PIP_CONSTRAINT"}
    env.update({"HOME": "/tmp", "PIP_NO_INPUT": "1", "PIP_PROGRESS_BAR": "off"})
    for name in pip.secret_env:
        add_secret(env[name])
    progress.info(f"fetching uv {UV_VERSION} from the package index")
    result = engine.run(image, ["sh", "-c", _DOWNLOAD, "sh", build_python, UV_VERSION],
                        mounts=[Mount(out, "/out", read_only=False), *pip.mounts], env=env,
                        user=f"{os.getuid()}:{os.getgid()}", secret_env=set(pip.env), stream=False)
    arch = next((ln.split(":", 1)[1].strip() for ln in result.output.splitlines()
                 if ln.startswith("grocker-arch:")), "")
    wheels = sorted(out.glob("uv-*.whl"))
    if result.exit_code != 0 or len(wheels) != 1:
        errors = [ln.strip() for ln in result.output.splitlines() if ln.strip().startswith("ERROR:")]
        raise ImageBuildError(
            f"cannot fetch uv {UV_VERSION} from the package index: "
            f"{errors[0] if errors else f'exit code {result.exit_code}'}",
            "the compile stage installs uv from the index pip uses: publish the uv wheel there, "
            "or set installer = \"pip\"", details=result.tail(20))
    check_uv_wheel(wheels[0], arch)
    return wheels[0]
