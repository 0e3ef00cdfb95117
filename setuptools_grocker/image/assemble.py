"""Assembling the runtime image without a container: reproducible layers, one per internal library.

The root image (base + runtime packages + user) comes from the engine, unchanged. On top of
it, setuptools-grocker writes the Python part itself:

1. the wheels of the closure are installed in memory (the ``installer`` library, into a
   destination that makes layer entries: RECORD, console scripts with
   ``#!/opt/app/venv/bin/python``, data files), laid out like the image's venv; nothing is
   written to the host, and a member that would land outside its scheme's directory fails
   the build; the bytecode of each wheel's modules (compiled by the image's own interpreter,
   reproducibly, see bytecode.py) joins its files;
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

import base64
import datetime
import gzip
import hashlib
import io
import json
import os
import posixpath
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Iterable, Mapping

from installer import install
from installer.destinations import WheelDestination
from installer.records import Hash, RecordEntry
from installer.scripts import Script
from installer.sources import WheelFile
from installer.utils import Scheme, construct_record_file, fix_shebang
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from setuptools_grocker.engine.images import load_archive as engine_load_archive
from setuptools_grocker.errors import ImageBuildError

if TYPE_CHECKING:
    from installer.scripts import ScriptSection

#: Layers the engine accepts on one image (overlay2: 128 lower directories); keep room.
MAX_LAYERS = 100


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


# -- installing wheels, in memory -----------------------------------------------------------------

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

    @property
    def schemes(self) -> dict[str, str]:
        """Where each scheme of a wheel goes in the image (what ``sysconfig`` gives for a venv)."""
        return {
            "purelib": f"{self.path}/{self.site_packages}",
            "platlib": f"{self.path}/{self.site_packages}",
            "headers": f"{self.path}/include/site/python{self.short}",
            "scripts": f"{self.path}/bin",
            "data": self.path,
        }

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


def unsafe_path(path: str) -> bool:
    """Whether a relative path could leave the directory it is joined to, or mean different things.

    Refused: empty or absolute paths, empty, ``.`` or ``..`` components, backslashes (a
    separator elsewhere), NUL and other control characters.
    """
    return (not path or path.startswith("/") or "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path)
            or any(part in ("", ".", "..") for part in path.split("/")))


class LayerDestination(WheelDestination):
    """An ``installer`` destination that produces layer entries instead of writing files.

    Same RECORD, console scripts and ``#!python`` rewriting as installer's
    ``SchemeDictionaryDestination``, but nothing reaches the host's file system, and every
    (scheme, path) is checked before it becomes an :class:`Entry`: a known scheme, a path that
    stays below that scheme's directory, and nothing that replaces or goes through the venv
    skeleton (the interpreter symlinks, ``lib64``, ``pyvenv.cfg``).
    """

    def __init__(self, wheel: str, venv: Venv) -> None:
        self.wheel = wheel
        self.schemes = venv.schemes
        self.interpreter = f"{venv.path}/bin/python"
        self.reserved = [e.path for e in venv.skeleton() if e.data is not None or e.link is not None]
        self.entries: dict[str, Entry] = {}

    def refuse(self, what: str) -> ImageBuildError:
        return ImageBuildError(f"wheel {self.wheel} would write outside its place in the venv: {what}",
                               "the wheel is hostile or broken; remove it from the closure (pin another version)")

    def target(self, scheme: str, path: str, shown: str) -> str:
        """Where (scheme, path) lands in the image; ImageBuildError naming ``shown`` when it may not."""
        if scheme not in self.schemes or unsafe_path(path):
            raise self.refuse(shown)
        target = f"{self.schemes[scheme]}/{path}"
        for reserved in self.reserved:
            if target == reserved or target.startswith(reserved + "/"):
                raise self.refuse(f"{shown} (it would replace {reserved})")
        return target

    def _add(self, scheme: str, path: str, data: bytes, is_executable: bool) -> RecordEntry:
        target = self.target(scheme, path, f"{path!r} in scheme {scheme}")
        if target in self.entries:
            raise ImageBuildError(f"wheel {self.wheel} holds {path!r} twice", "the wheel is broken; rebuild it")
        self.entries[target] = Entry(target, data, 0o755 if is_executable else 0o644)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode("ascii").rstrip("=")
        return RecordEntry(path, Hash("sha256", digest), len(data))

    def write_file(self, scheme: Scheme, path: str | os.PathLike[str], stream: BinaryIO,
                   is_executable: bool) -> RecordEntry:
        path = os.fspath(path)
        if scheme == "scripts":
            with fix_shebang(stream, self.interpreter) as fixed:
                return self._add(scheme, path, fixed.read(), is_executable)
        return self._add(scheme, path, stream.read(), is_executable)

    def write_script(self, name: str, module: str, attr: str, section: ScriptSection) -> RecordEntry:
        script_name, data = Script(name, module, attr, section).generate(self.interpreter, "posix")
        return self._add("scripts", script_name, data, True)

    def finalize_installation(self, scheme: Scheme, record_file_path: str,
                              records: Iterable[tuple[Scheme, RecordEntry]]) -> None:
        def prefix(file_scheme: Scheme) -> str | None:  # RECORD paths are relative to the root scheme's
            if file_scheme == scheme:
                return None
            return posixpath.relpath(self.schemes[file_scheme], self.schemes[scheme]) + "/"

        with construct_record_file(list(records), prefix) as stream:
            self._add(scheme, record_file_path, stream.read(), False)


#: Wheels installed ahead (:func:`prepare_install`), by the wheel's content and the venv, until an
#: :func:`install_wheel` of the same bytes takes them (once: nothing stays in memory after its image).
_PREPARED: dict[tuple[str, Venv], list[Entry]] = {}


def prepare_install(wheel: Path, venv: Venv) -> None:
    """Install ``wheel`` ahead, for an :func:`install_wheel` of a wheel with the same bytes to come (the image
    stage's work done while the compile container works: :func:`setuptools_grocker.image.runtime.prepare_image`)."""
    data = wheel.read_bytes()
    _PREPARED[(hashlib.sha256(data).hexdigest(), venv)] = _install(wheel.name, data, venv)


def install_wheel(wheel: Path, venv: Venv) -> list[Entry]:
    """The files that installing ``wheel`` into ``venv`` creates (no bytecode), as layer entries (those
    :func:`prepare_install` made for a wheel of the same bytes, when it did)."""
    data = wheel.read_bytes()
    prepared = _PREPARED.pop((hashlib.sha256(data).hexdigest(), venv), None)
    return prepared if prepared is not None else _install(wheel.name, data, venv)


def _install(filename: str, data: bytes, venv: Venv) -> list[Entry]:
    """The files that installing the wheel ``filename`` (its bytes: ``data``) into ``venv`` creates.

    Wheels come from indexes and find-links and are not trusted. Every member name is checked
    before anything is installed (and the destination checks every path again): a wheel that
    would write outside its scheme's directory fails the build with one line naming it and the
    path. Nothing is written to the host.
    """
    destination = LayerDestination(filename, venv)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            archive.filename = filename  # installer takes the distribution's name and version from it
            source = WheelFile(archive)
            for name in archive.namelist():
                if name.endswith("/"):  # a directory: installer skips it, but not a hostile name
                    if unsafe_path(name[:-1]):
                        raise destination.refuse(repr(name))
                    continue
                # The member's scheme and path as installer will see them (purelib and platlib are
                # the same directory in a venv), checked before anything is read.
                parts = name.split("/")
                if parts[0] == source.data_dir:
                    scheme, path = (parts[1], "/".join(parts[2:])) if len(parts) > 2 else ("", "")
                else:
                    scheme, path = "purelib", name
                destination.target(scheme, path, repr(name))
            install(source, destination, additional_metadata={"INSTALLER": b"setuptools-grocker\n"})
    except ImageBuildError:
        raise
    except Exception as exc:  # installer raises plain exceptions for broken wheels
        raise ImageBuildError(f"installing {filename} failed: {exc}",
                              "the wheel is broken; build again with --no-cache") from exc
    return [destination.entries[path] for path in sorted(destination.entries)]


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


def load_archive(config: bytes, root_diff_ids: list[str], layers: list[Layer], present: int = 0) -> bytes:
    """A ``docker load`` archive holding the config and the new layers: the root's are in the engine, and so
    are the first ``present`` of ``layers`` (an image of the engine starts with the same layers)."""
    below = [*root_diff_ids, *(layer.diff_id for layer in layers[:present])]
    return engine_load_archive(config, below, [(layer.diff_id, layer.tar) for layer in layers[present:]])


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
    """The normalised project name of a wheel, from its file name."""
    try:
        return parse_wheel_filename(wheel.name)[0]
    except InvalidWheelFilename:
        # pip accepted it (it installed it); packaging is stricter (a legacy version, say): the
        # name field is still the first.
        return canonicalize_name(wheel.name.split("-", 1)[0])


def runtime_layers(*, wheels: list[Path], project_wheel: Path, internal: set[str], venv: Venv,
                   app_entries: list[Entry], app_comment: str, room: int, epoch: int,
                   installed: Mapping[Path, list[Entry]] | None = None) -> list[Layer]:
    """The layers above the root: venv + third-party, one per internal library, the application.

    ``installed`` gives the entries of each wheel (with their bytecode, see bytecode.py); the
    wheels missing from it are installed here.
    """
    done = dict(installed or {})

    def entries_of(wheel: Path) -> list[Entry]:
        return done[wheel] if wheel in done else install_wheel(wheel, venv)

    third = sorted((w for w in wheels if w != project_wheel and wheel_name(w) not in internal), key=lambda w: w.name)
    libs = sorted((w for w in wheels if w != project_wheel and wheel_name(w) in internal), key=lambda w: w.name)
    third_entries = venv.skeleton() + [e for w in third for e in entries_of(w)]
    names = ", ".join(f"{wheel_name(w)} {w.name.split('-')[1]}" for w in third) or "no third-party distribution"
    groups = [(f"venv and third-party: {names}", third_entries)]
    groups += [(f"internal library {wheel_name(w)} {w.name.split('-')[1]}", entries_of(w)) for w in libs]
    groups.append((app_comment, entries_of(project_wheel) + app_entries))
    return [Layer(comment, entries, epoch=epoch) for comment, entries in group_layers(groups, room)]
