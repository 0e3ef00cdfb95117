"""``grocker bootstrap-base``: a minimal Debian base image made with debootstrap.

For machines that cannot pull from a public registry. The tree is made with
``debootstrap --variant=minbase`` (the recipe of Debian's own ``-slim`` images) from the
mirror that the host's apt sources name, trimmed of apt lists and caches, and imported
into the engine. By default it is tagged ``debian:<suite>-slim`` so the default
``base-image`` finds it; the image is labelled as bootstrapped so it can be told apart.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from setuptools_grocker.engine import OWNER_LABEL, Engine
from setuptools_grocker.errors import BootstrapError
from setuptools_grocker.progress import Progress

DEFAULT_SUITE = "bookworm"
# python3-venv is left out on purpose: it brings ensurepip's bundled .whl files, which would
# then sit in a layer of every runtime image. The compiler image adds it.
DEFAULT_INCLUDE = ("python3", "tini")


@dataclass(frozen=True)
class BootstrapOptions:
    suite: str = DEFAULT_SUITE
    mirror: str | None = None
    include: tuple[str, ...] = DEFAULT_INCLUDE
    tag: str | None = None
    force: bool = False

    @property
    def reference(self) -> str:
        return self.tag or f"debian:{self.suite}-slim"


def host_mirror(root: Path = Path("/")) -> str | None:
    """The Debian mirror named by the host's apt sources (deb822 first, then sources.list)."""
    candidates = sorted((root / "etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(r"^Enabled:\s*no", stanza, re.M | re.I):
                continue
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and not any(s.endswith("-security") for s in suites.group(1).split()):
                return uris.group(1)
    lists = [root / "etc/apt/sources.list", *sorted((root / "etc/apt/sources.list.d").glob("*.list"))]
    for path in lists:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if m and not m.group(2).endswith("-security"):
                return m.group(1)
    return None


def bootstrap_base(engine: Engine, options: BootstrapOptions, progress: Progress) -> str:
    """Create (or reuse) the base image; return its image ID."""
    ref = options.reference
    existing = engine.image_id(ref)
    if existing and not options.force:
        progress.info(f"{ref} is already in the engine ({existing[7:19]}); use --force to rebuild it")
        return existing
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise BootstrapError("debootstrap is not installed", "install it: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise BootstrapError("debootstrap needs root", "run grocker bootstrap-base as root (or with sudo)")
    mirror = options.mirror or host_mirror()
    if not mirror:
        raise BootstrapError("no Debian mirror given and none found in the host's apt sources",
                             "pass --mirror URL")
    with tempfile.TemporaryDirectory(prefix="grocker-bootstrap-") as tmp:
        tree = Path(tmp) / "rootfs"
        argv = [debootstrap, "--variant=minbase"]
        if options.include:
            argv.append("--include=" + ",".join(options.include))
        argv += [options.suite, str(tree), mirror]
        with progress.stage(f"debootstrap {options.suite}"):
            progress.command(argv)
            start = time.monotonic()
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise BootstrapError(
                    f"debootstrap of {options.suite} from {mirror} failed (exit code {proc.returncode})",
                    "check the suite name, the mirror and the package names given to --include",
                    details=tail,
                )
            progress.info(f"tree ready in {time.monotonic() - start:.0f}s")
        _trim(tree)
        tarball = Path(tmp) / "rootfs.tar"
        with progress.stage("import"):
            subprocess.run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(tarball), "."], check=True)
            changes = [
                'CMD ["bash"]',
                "ENV LANG=C.UTF-8",
                f"LABEL {OWNER_LABEL}=setuptools-grocker io.grocker.bootstrap={options.suite}",
            ]
            return engine.import_tarball(tarball, ref, changes)


def _trim(tree: Path) -> None:
    """Drop what a container image does not need (as Debian's slim images do)."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "var/log/*.log", "var/log/apt/*", "usr/share/doc/*", "usr/share/man/*",
                    "usr/share/info/*", "usr/share/locale/*"):
        for path in tree.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name != "lock" and path.name != "partial":
                try:
                    path.unlink()
                except OSError:
                    pass
