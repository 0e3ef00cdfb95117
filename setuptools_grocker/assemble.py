"""Assembling the runtime image without a container: reproducible layers, one per internal library.

The root image (base + runtime packages + user) comes from the engine, unchanged. On top of
it, setuptools-grocker writes the Python part itself:

1. the wheels of the closure are installed on the host (the ``installer`` library: RECORD,
   console scripts with ``#!/opt/app/venv/bin/python``, data files) into staging trees laid
   out like the image's venv; no bytecode is written (the image sets
   ``PYTHONDONTWRITEBYTECODE``; Python compiles in memory);
2. each group becomes a *deterministic* layer: entries sorted, mtime ``SOURCE_DATE_EPOCH`` (or
   the commit time), owner 0:0 (volumes: the runtime user), modes 0644/0755, no extended
   headers, gzip with mtime 0. Groups: the venv skeleton and the third-party closure (the same
   third-party set gives the same bytes, hence the same layer, in every application), one layer
   per internal library wheel, and the application with its entrypoint. When the count would
   come near the engine's layer limit, internal libraries share layers;
3. the image config is written the same way (``created`` = the epoch), so the image ID is a
   function of the inputs only;
4. the image reaches the engine as a ``docker load`` archive holding only the new layers (the
   root's are there), and a registry through its HTTP API, blob by blob, uploading only what
   it does not have (``registry.push_image``).
"""
from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from setuptools_grocker.errors import ImageBuildError

#: Layers the engine accepts on one image (overlay2: 128 lower directories); keep room.
MAX_LAYERS = 100
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"


@dataclass
class Entry:
    """One file, directory or symlink of a layer, at an absolute path of the image."""

    path: str
    data: bytes | None = None  # None: a directory
    mode: int = 0o644
    link: str | None = None
    uid: int = 0


@dataclass
class Layer:
    comment: str
    entries: list[Entry] = field(default_factory=list)
    _tar: bytes | None = None

    @property
    def tar(self) -> bytes:
        if self._tar is None:
            self._tar = deterministic_tar(self.entries, self.epoch)
        return self._tar

    epoch: int = 0

    @property
    def diff_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.tar).hexdigest()


def deterministic_tar(entries: Iterable[Entry], epoch: int) -> bytes:
    """A tar whose bytes depend on the entries only: sorted, parents included, fixed times and owners."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        path = str(PurePosixPath(e.path.lstrip("/")))
        by_path[path] = e
        parent = PurePosixPath(path).parent
        while str(parent) not in (".", ""):
            by_path.setdefault(str(parent), Entry(str(parent)))
            parent = parent.parent
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(by_path):
            e = by_path[path]
            info = tarfile.TarInfo(path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, e.uid, e.uid, "", ""
            if e.link is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.link, 0o777
                tar.addfile(info)
            elif e.data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(e.data), e.mode
                tar.addfile(info, io.BytesIO(e.data))
    return out.getvalue()


def gzip_layer(tar: bytes) -> bytes:
    """The registry blob of a layer: gzip level 6, no name, mtime 0 (same bytes every time)."""
    return gzip.compress(tar, compresslevel=6, mtime=0)


def tree_entries(root: Path, prefix: str) -> list[Entry]:
    """Every file, directory and symlink under ``root``, placed at ``prefix`` in the image."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            target = str(PurePosixPath(prefix) / rel / name)
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(target, link=os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(target))
            else:
                out.append(Entry(target, full.read_bytes(), 0o755 if st.st_mode & 0o111 else 0o644))
    return out


# -- installing wheels on the host --------------------------------------------------------------

@dataclass(frozen=True)
class Venv:
    path: str  # in the image, e.g. /opt/app/venv
    python: str  # "3.11.2"
    interpreter: str = "/usr/bin/python3"

    @property
    def short(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def site_packages(self) -> str:
        return f"lib/python{self.short}/site-packages"

    def skeleton(self) -> list[Entry]:
        """What ``python -m venv --without-pip`` makes, for the image's Python."""
        v = self.path
        cfg = (f"home = {os.path.dirname(self.interpreter)}\ninclude-system-site-packages = false\n"
               f"version = {self.python}\nexecutable = {self.interpreter}\n"
               f"command = {self.interpreter} -m venv --without-pip {v}\n")
        return [
            Entry(f"{v}/pyvenv.cfg", cfg.encode()),
            Entry(f"{v}/bin/python", link=self.interpreter),
            Entry(f"{v}/bin/python3", link="python"),
            Entry(f"{v}/bin/python{self.short}", link="python"),
            Entry(f"{v}/lib64", link="lib"),
            Entry(f"{v}/include"),
            Entry(f"{v}/{self.site_packages}"),
        ]


def install_wheel(wheel: Path, venv: Venv) -> list[Entry]:
    """The files that installing ``wheel`` into ``venv`` creates (no bytecode)."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    with tempfile.TemporaryDirectory(prefix="grocker-install-") as tmp:
        stage = Path(tmp)
        scheme = {
            "purelib": f"{venv.path}/{venv.site_packages}",
            "platlib": f"{venv.path}/{venv.site_packages}",
            "headers": f"{venv.path}/include/site/python{venv.short}",
            "scripts": f"{venv.path}/bin",
            "data": venv.path,
        }
        destination = SchemeDictionaryDestination(scheme, interpreter=f"{venv.path}/bin/python",
                                                  script_kind="posix", bytecode_optimization_levels=(),
                                                  destdir=str(stage))
        try:
            with WheelFile.open(wheel) as source:
                install(source, destination, additional_metadata={"INSTALLER": b"setuptools-grocker\n"})
        except Exception as exc:  # installer raises plain exceptions for broken wheels
            raise ImageBuildError(f"installing {wheel.name} failed: {exc}",
                                  "the wheel is broken; build again with --no-cache") from exc
        return [e for e in tree_entries(stage, "/") if e.data is not None or e.link is not None]


# -- the image config and the archive -------------------------------------------------------------

def iso(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_config(root: Mapping[str, Any], layers: list[Layer], *, settings: Mapping[str, Any],
                 epoch: int) -> bytes:
    """The image config (root's, plus ours), serialised the same way every time."""
    base_config = dict(root.get("Config") or {})
    config = {k: v for k, v in base_config.items() if v not in (None, "", [], {})}
    config.update({k: v for k, v in settings.items() if v not in (None, [], {})})
    history = [{"created": iso(epoch), "created_by": f"setuptools-grocker: {layer.comment}"} for layer in layers]
    data = {
        "architecture": root.get("Architecture", "amd64"),
        "os": root.get("Os", "linux"),
        "created": iso(epoch),
        "config": config,
        "rootfs": {"type": "layers",
                   "diff_ids": [*root["RootFS"]["Layers"], *(layer.diff_id for layer in layers)]},
        # One entry per layer (the engine pairs them): the root's, then ours.
        "history": [*({"created": iso(epoch), "created_by": f"root image {root['Id']} layer {i + 1}"}
                      for i in range(len(root["RootFS"]["Layers"]))), *history],
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def load_archive(config: bytes, root_diff_ids: list[str], layers: list[Layer]) -> bytes:
    """A ``docker load`` archive holding the config and the new layers (the root's are in the engine)."""
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{d.split(':', 1)[1]}/layer.tar" for d in root_diff_ids] + \
            [f"{layer.diff_id.split(':', 1)[1]}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": None, "Layers": names}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        add(config_name, config)
        seen = set()
        for layer in layers:
            name = f"{layer.diff_id.split(':', 1)[1]}/layer.tar"
            if name not in seen:
                seen.add(name)
                add(name, layer.tar)
        add("manifest.json", json.dumps(manifest).encode())
    return out.getvalue()


def group_layers(groups: list[tuple[str, list[Entry]]], room: int) -> list[tuple[str, list[Entry]]]:
    """Merge neighbouring groups so that there are at most ``room`` of them (first and last stay alone)."""
    if len(groups) <= room:
        return groups
    first, middle, last = groups[0], groups[1:-1], groups[-1]
    per = -(-len(middle) // max(1, room - 2))
    merged = []
    for i in range(0, len(middle), per):
        chunk = middle[i:i + per]
        merged.append((" + ".join(name for name, _ in chunk), [e for _, entries in chunk for e in entries]))
    return [first, *merged, last]


# -- the whole runtime image ------------------------------------------------------------------------

def wheel_name(wheel: Path) -> str:
    import re

    return re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()


def runtime_layers(*, wheels: list[Path], project_wheel: Path, internal: set[str], venv: Venv,
                   app_entries: list[Entry], app_comment: str, room: int, epoch: int) -> list[Layer]:
    """The layers above the root: venv + third-party, one per internal library, the application."""
    third = sorted((w for w in wheels if w != project_wheel and wheel_name(w) not in internal), key=lambda w: w.name)
    libs = sorted((w for w in wheels if w != project_wheel and wheel_name(w) in internal), key=lambda w: w.name)
    third_entries = venv.skeleton() + [e for w in third for e in install_wheel(w, venv)]
    names = ", ".join(f"{wheel_name(w)} {w.name.split('-')[1]}" for w in third) or "no third-party distribution"
    groups = [(f"venv and third-party: {names}", third_entries)]
    groups += [(f"internal library {wheel_name(w)} {w.name.split('-')[1]}", install_wheel(w, venv)) for w in libs]
    groups.append((app_comment, install_wheel(project_wheel, venv) + app_entries))
    return [Layer(comment, entries, epoch=epoch) for comment, entries in group_layers(groups, room)]
