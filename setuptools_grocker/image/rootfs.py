"""A root filesystem tree made into an image the engine loads, the same bytes from the same inputs.

Used by ``grocker bootstrap-base`` (bootstrap.py) on the tree mmdebstrap made:

1. :func:`normalise_tree` removes what one run leaves and the next would write differently
   (apt lists and caches, the contents of logs, backup files, ``/tmp``, ``/run``, the host's ``/etc/hostname``
   and ``/etc/resolv.conf``, machine IDs, the ldconfig auxiliary cache) and rewrites the
   day-of-last-password-change of ``/etc/shadow`` to the epoch's day;
2. :func:`write_rootfs_tar` writes the layer: entries sorted by path, numeric owners without
   names, modification times clamped to the epoch, hard links as links to the first path in
   sorted order, ``/dev``, ``/proc`` and ``/sys`` empty (the engine mounts its own), no
   extended attributes;
3. :func:`base_config` writes the image config with ``created`` = the epoch, so the image ID
   (the hash of the config) is a function of the layer and the labels only;
4. :func:`write_load_archive` makes the ``docker load`` archive; ``docker import`` is not used
   because it stamps ``created`` with the current time.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Mapping

from setuptools_grocker.image.assemble import iso

#: Removed from the tree (globs relative to its root): per-run files and caches.
PER_RUN = (
    "var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
    "var/cache/ldconfig/aux-cache", "var/lib/dbus/machine-id", "etc/hostname", "etc/resolv.conf",
    "etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/subuid-", "etc/subgid-",
    "root/.bash_history", "tmp/*", "var/tmp/*", "run/*",
)
#: Removed as Debian's ``-slim`` images do: documentation a container does not need.
SLIM = ("usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*")
#: Kept, but empty: the engine mounts its own file systems there.
EMPTY_DIRS = ("dev", "proc", "sys")
#: Debian architecture names to the OCI ones.
OCI_ARCH = {"amd64": "amd64", "arm64": "arm64", "armhf": "arm", "armel": "arm", "i386": "386",
            "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64el": "mips64le"}
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def normalise_tree(tree: Path, epoch: int) -> list[str]:
    """Remove (or empty) the per-run files of ``tree``, fix ``/etc/shadow``'s dates; return what was touched."""
    removed = []
    for pattern in (*PER_RUN, *SLIM):
        for path in sorted(tree.glob(pattern)):
            # apt's lock files and partial directories are part of an empty apt state.
            if path.name in ("lock", "partial") and "apt" in path.parts:
                continue
            removed.append(str(path.relative_to(tree)))
            _remove(path)
    # Logs are emptied, not removed: login records (wtmp, btmp, lastlog) are made by packages with
    # their own owners and modes.
    log = tree / "var/log"
    if log.is_dir():
        for dirpath, _dirs, files in os.walk(log):
            for name in sorted(files):
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink() and path.stat().st_size:
                    removed.append(str(path.relative_to(tree)))
                    path.write_bytes(b"")
    machine_id = tree / "etc/machine-id"
    if machine_id.is_file() and not machine_id.is_symlink():
        machine_id.write_bytes(b"")
    shadow = tree / "etc/shadow"
    if shadow.is_file():
        shadow.write_text(fix_shadow_dates(shadow.read_text(), epoch))
    return sorted(removed)


def fix_shadow_dates(text: str, epoch: int) -> str:
    """Set the "last password change" field (days since 1970) of every entry that has one to the epoch's day."""
    day = str(epoch // 86400)
    lines = []
    for line in text.splitlines():
        fields = line.split(":")
        # Empty (no aging) and 0 (change at next login) keep their meaning.
        if len(fields) >= 3 and fields[2] not in ("", "0"):
            fields[2] = day
        lines.append(":".join(fields))
    return "".join(line + "\n" for line in lines)


def _walk(tree: Path) -> list[str]:
    """Every path under ``tree``, relative, sorted as strings (the order of the tar)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = os.path.relpath(dirpath, tree)
        if rel in EMPTY_DIRS:
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            out.append(name if rel == "." else f"{rel}/{name}")
    return sorted(out)


def write_rootfs_tar(tree: Path, out: Path, epoch: int) -> str:
    """Write ``tree`` as a deterministic layer tar to ``out``; return its diff ID."""
    first_of_inode: dict[tuple[int, int], str] = {}
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in _walk(tree):
            full = tree / rel
            st = full.lstat()
            info = tarfile.TarInfo(rel)
            info.mtime = min(int(st.st_mtime), epoch)
            info.uid, info.gid, info.uname, info.gname = st.st_uid, st.st_gid, "", ""
            info.mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    first = first_of_inode.setdefault((st.st_dev, st.st_ino), rel)
                    if first != rel:
                        info.type, info.linkname = tarfile.LNKTYPE, first
                        tar.addfile(info)
                        continue
                info.size = st.st_size
                with full.open("rb") as f:
                    tar.addfile(info, f)
            # Sockets, pipes and device nodes outside /dev are not part of an image.
    digest = hashlib.sha256()
    with out.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def base_config(*, diff_id: str, epoch: int, architecture: str, labels: Mapping[str, str],
                created_by: str) -> bytes:
    """The image config of a one-layer base image, serialised the same way every time."""
    data = {
        "architecture": OCI_ARCH.get(architecture, architecture),
        "os": "linux",
        "created": iso(epoch),
        "config": {"Cmd": ["bash"], "Env": [DEFAULT_PATH, "LANG=C.UTF-8"], "Labels": dict(sorted(labels.items()))},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": iso(epoch), "created_by": created_by}],
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def image_id(config: bytes) -> str:
    """The ID the engine gives an image: the hash of its config."""
    return "sha256:" + hashlib.sha256(config).hexdigest()


def write_load_archive(out: Path, *, config: bytes, layer: Path, diff_id: str, ref: str) -> None:
    """A ``docker load`` archive of a one-layer image tagged ``ref``."""
    config_name = image_id(config).split(":", 1)[1] + ".json"
    layer_name = diff_id.split(":", 1)[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]
    with tarfile.open(out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        add(config_name, config)
        info = tarfile.TarInfo(layer_name)
        info.size, info.mode = layer.stat().st_size, 0o644
        with layer.open("rb") as f:
            tar.addfile(info, f)
        add("manifest.json", json.dumps(manifest).encode())
