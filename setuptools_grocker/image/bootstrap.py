"""``grocker bootstrap-base``: a minimal Debian base image, the same image from the same packages.

For machines that cannot pull from a public registry. The tree is made with ``mmdebstrap
--variant=minbase`` (the recipe of Debian's own ``-slim`` images) from the mirror that the
host's apt sources name, with ``SOURCE_DATE_EPOCH`` set to the date of the suite's Release
file; it is then normalised (rootfs.py: no per-run files, times clamped to that date, a sorted
tar with numeric owners), given a config written here (``created`` = that date) and loaded into
the engine with ``docker load``. Two bootstraps from the same mirror state therefore give the
same image ID, on any machine. The installed packages and their versions are in the label
``io.grocker.base.packages``.

The epoch is the suite's Release date because it is one value every machine reads the same from
the same mirror state, known before the packages are installed (maintainer scripts read it), and
it changes only when the suite does (a point release), which is also when the package set does.
The mirror itself moves, so the way to share a base between machines is to push it once and pull
it by digest (docs/reliability.md).

By default the image is tagged ``debian:<suite>-slim`` so the default ``base-image`` finds it;
the image is labelled as bootstrapped so it can be told apart.
"""
from __future__ import annotations

import email.utils
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from setuptools_grocker.engine import OWNER_LABEL, Engine
from setuptools_grocker.errors import BootstrapError
from setuptools_grocker.image.gc import BOOTSTRAP_LABEL
from setuptools_grocker.image.rootfs import (
    base_config,
    image_id,
    normalise_tree,
    write_load_archive,
    write_rootfs_tar,
)
from setuptools_grocker.progress import Progress
from setuptools_grocker.ref import ImageRef

DEFAULT_SUITE = "bookworm"
# python3-venv is left out on purpose: it brings ensurepip's bundled .whl files, which would
# then sit in a layer of every runtime image. The compiler image adds it.
DEFAULT_INCLUDE = ("python3", "tini")
PACKAGES_LABEL = "io.grocker.base.packages"
EPOCH_LABEL = "io.grocker.base.source-date-epoch"
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/maybe-merged-usr")


@dataclass(frozen=True)
class BootstrapOptions:
    suite: str = DEFAULT_SUITE
    mirror: str | None = None
    include: tuple[str, ...] = DEFAULT_INCLUDE
    tag: str | None = None
    force: bool = False
    #: A directory where downloaded .deb files are kept for the next bootstrap (apt checks them).
    apt_cache: Path | None = None

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


def release_epoch(text: str) -> int:
    """The ``Date:`` of a Release (or InRelease) file, in seconds since 1970."""
    m = re.search(r"^Date:\s*(.+)$", text, re.M)
    if not m:
        raise BootstrapError("the suite's Release file has no Date field", "check the mirror URL")
    try:
        return int(email.utils.parsedate_to_datetime(m.group(1).strip()).timestamp())
    except (TypeError, ValueError) as exc:
        raise BootstrapError(f"the suite's Release file has a bad Date: {m.group(1).strip()!r}",
                             "check the mirror URL") from exc


def fetch_release_epoch(mirror: str, suite: str) -> int:
    """The Release date of ``suite`` on ``mirror`` (InRelease first, then Release)."""
    errors = []
    for name in ("InRelease", "Release"):
        url = f"{mirror.rstrip('/')}/dists/{suite}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 (the mirror is http(s) or file)
                return release_epoch(answer.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{name}: {exc}")
    raise BootstrapError(f"could not read the Release file of {suite} from {mirror} ({'; '.join(errors)})",
                         "check the suite name and the mirror (--mirror URL)")


def installed_packages(tree: Path) -> tuple[list[str], str]:
    """``name=version`` of every package installed in ``tree`` (sorted), and dpkg's architecture."""
    status = (tree / "var/lib/dpkg/status").read_text()
    packages, arch = [], ""
    for stanza in re.split(r"\n\s*\n", status):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append(f"{fields['Package']}={fields.get('Version', '')}")
            if fields["Package"] == "dpkg":
                arch = fields.get("Architecture", "")
    return sorted(packages), arch


def _used_release_epoch(tree: Path, suite: str) -> int | None:
    """The Release date apt actually used in the bootstrap (from its lists, before they are removed)."""
    lists = tree / "var/lib/apt/lists"
    for pattern in (f"*_dists_{suite}_InRelease", f"*_dists_{suite}_Release"):
        for path in sorted(lists.glob(pattern)):
            return release_epoch(path.read_text(errors="replace"))
    return None


def mmdebstrap_argv(mmdebstrap: str, options: BootstrapOptions, tree: Path, mirror: str) -> list[str]:
    argv = [mmdebstrap, "--variant=minbase", "--mode=root", "--format=directory",
            # The lists are read to check the Release date, then removed by the normalisation.
            "--skip=cleanup/apt/lists"]
    # Merged /usr made by the hook (usr-is-merged) as debootstrap does, rather than by the usrmerge
    # package, which would bring perl into the base.
    if MERGED_USR_HOOK.is_dir():
        argv.append(f"--hook-dir={MERGED_USR_HOOK}")
    if options.include:
        argv.append("--include=" + ",".join(options.include))
    if options.apt_cache is not None:
        cache = str(options.apt_cache.resolve())
        argv += ["--skip=essential/unlink",
                 '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
                 f"--setup-hook=sync-in {cache} /var/cache/apt/archives/",
                 f"--customize-hook=sync-out /var/cache/apt/archives {cache}"]
    return argv + [options.suite, str(tree), mirror]


def bootstrap_base(engine: Engine, options: BootstrapOptions, progress: Progress,
                   environ: Mapping[str, str]) -> str:
    """Create (or reuse) the base image; return its image ID. ``environ``: mmdebstrap's environment."""
    ref = options.reference
    existing = engine.image_id(ref)
    if existing and not options.force:
        progress.info(f"{ref} is already in the engine ({existing[7:19]}); use --force to rebuild it")
        return existing
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise BootstrapError("mmdebstrap is not installed", "install it: apt-get install mmdebstrap")
    if os.geteuid() != 0:
        raise BootstrapError("mmdebstrap needs root here", "run grocker bootstrap-base as root (or with sudo)")
    mirror = options.mirror or host_mirror()
    if not mirror:
        raise BootstrapError("no Debian mirror given and none found in the host's apt sources",
                             "pass --mirror URL")
    epoch = fetch_release_epoch(mirror, options.suite)
    if options.apt_cache is not None:
        options.apt_cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="grocker-bootstrap-") as tmp:
        tree = Path(tmp) / "rootfs"
        argv = mmdebstrap_argv(mmdebstrap, options, tree, mirror)
        with progress.stage(f"mmdebstrap {options.suite}"):
            progress.command(["SOURCE_DATE_EPOCH=" + str(epoch), *argv])
            start = time.monotonic()
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  env={**environ, "SOURCE_DATE_EPOCH": str(epoch)})
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                raise BootstrapError(
                    f"mmdebstrap of {options.suite} from {mirror} failed (exit code {proc.returncode})",
                    "check the suite name, the mirror and the package names given to --include",
                    details=tail,
                )
            progress.info(f"tree ready in {time.monotonic() - start:.0f}s")
        used = _used_release_epoch(tree, options.suite)
        if used is not None and used != epoch:
            raise BootstrapError(f"the mirror published a new {options.suite} release during the bootstrap",
                                 "run grocker bootstrap-base again")
        packages, arch = installed_packages(tree)
        normalise_tree(tree, epoch)
        layer = Path(tmp) / "layer.tar"
        with progress.stage("layer"):
            diff_id = write_rootfs_tar(tree, layer, epoch)
        shutil.rmtree(tree)
        labels = {OWNER_LABEL: "setuptools-grocker", BOOTSTRAP_LABEL: options.suite,
                  PACKAGES_LABEL: json.dumps(packages), EPOCH_LABEL: str(epoch)}
        created_by = (f"grocker bootstrap-base: mmdebstrap --variant=minbase {options.suite}"
                      + (f" --include={','.join(options.include)}" if options.include else ""))
        config = base_config(diff_id=diff_id, epoch=epoch, architecture=arch or "amd64", labels=labels,
                             created_by=created_by)
        parsed = ImageRef.parse(ref)
        archive = Path(tmp) / "image.tar"
        write_load_archive(archive, config=config, layer=layer, diff_id=diff_id,
                           ref=f"{parsed.repository}:{parsed.tag or 'latest'}")
        layer.unlink()
        with progress.stage("load"):
            engine.load_file(archive, "base image")
        loaded = engine.image_id(ref)
        if loaded != image_id(config):
            raise BootstrapError(f"the engine did not tag {ref} with the loaded base image "
                                 f"({loaded} instead of {image_id(config)})", "see the engine log")
        progress.info(f"{len(packages)} packages, {options.suite} of {time.strftime('%Y-%m-%d', time.gmtime(epoch))}; "
                      f"versions in the label {PACKAGES_LABEL}")
        return loaded


def push_base(engine: Engine, ref: str, target: str, cache: Path, progress: Progress) -> str:
    """Push the base image ``ref`` to ``target`` (``REGISTRY/REPO[:TAG]``, the tag defaulting to ``ref``'s)
    through the registry API; return the reference to pin in ``base-image``: ``REGISTRY/REPO@sha256:...``.

    The layers are gzipped deterministically (registry/blobcache.py), so every machine that pushes the same
    base pushes the same manifest; the other machines then pull it by that digest (docs/buildbot.md).
    """
    from setuptools_grocker.registry.blobcache import image_blobs
    from setuptools_grocker.registry.client import push_image

    attrs = engine.image_attrs(ref)
    if attrs is None:
        raise BootstrapError(f"base image '{ref}' is not in the engine", "run grocker bootstrap-base without --push")
    parsed, source = ImageRef.parse(target), ImageRef.parse(ref)
    if parsed.digest is not None or parsed.host is None:
        raise BootstrapError(f"--push {target}: not a registry repository",
                             "give REGISTRY/REPO[:TAG], e.g. registry.example:5000/debian:bookworm-slim")
    tagged = str(parsed.with_tag(parsed.tag or source.tag or "latest"))
    config, layers = image_blobs(cache, attrs["Id"], list(attrs["RootFS"]["Layers"]),
                                 lambda: engine.save_image(attrs["Id"]), progress.info)
    digest, uploaded = push_image(tagged, [], config, layers)
    progress.info(f"pushed {tagged}@{digest}: {uploaded} bytes uploaded, {len(layers)} layers")
    return f"{parsed.repository}@{digest}"
