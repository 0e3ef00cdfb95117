"""The bytecode cache, host-side (no engine): keys, checks of what is read back, deterministic archives."""
from __future__ import annotations

import importlib.util
import io
import py_compile
import tarfile
from pathlib import Path

import pytest

from setuptools_grocker.image.assemble import Entry, Venv, install_wheel, runtime_layers
from setuptools_grocker.image.bytecode import (
    MANIFEST,
    UNCHECKED_HASH_FLAGS,
    BytecodeCache,
    file_sha256,
    identity,
    modules,
    pack,
    pyc_header_flags,
    source_of,
    unpack,
    wheel_key,
)
from setuptools_grocker.pipeline.caches import bytecode_cache_dir
from tests.unit.test_assemble import make_wheel

VENV = Venv("/opt/app/venv", "3.11.2")
SITE = "/opt/app/venv/lib/python3.11/site-packages"


def pyc(tmp_path: Path, source: str, mode: py_compile.PycInvalidationMode) -> bytes:
    """A real .pyc of ``source``, as the driver makes them (here with the host's interpreter)."""
    src = tmp_path / "m.py"
    src.write_text(source)
    out = tmp_path / "m.pyc"
    py_compile.compile(str(src), cfile=str(out), dfile=f"{SITE}/m.py", doraise=True, invalidation_mode=mode)
    return out.read_bytes()


@pytest.fixture()
def compiled(tmp_path: Path) -> dict[str, bytes]:
    tag = importlib.util.cache_from_source("/x/m.py").rsplit(".", 2)[-2]
    data = pyc(tmp_path, "VALUE = 1\n", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return {f"{SITE}/pkg/__pycache__/__init__.{tag}.pyc": data, f"{SITE}/pkg/__pycache__/a.b.{tag}.pyc": data}


SOURCES = {f"{SITE}/pkg/__init__.py", f"{SITE}/pkg/a.b.py"}


def test_the_key_changes_with_the_wheel_the_root_image_and_the_venv() -> None:
    key = wheel_key("a" * 64, "sha256:root", VENV)
    assert key == wheel_key("a" * 64, "sha256:root", VENV)
    others = {wheel_key("b" * 64, "sha256:root", VENV), wheel_key("a" * 64, "sha256:other", VENV),
              wheel_key("a" * 64, "sha256:root", Venv("/srv/venv", "3.11.2")),
              wheel_key("a" * 64, "sha256:root", Venv("/opt/app/venv", "3.12.1"))}
    assert key not in others and len(others) == 4


def test_turning_bytecode_off_or_a_new_version_changes_the_image_key() -> None:
    from setuptools_grocker.pipeline.build import cache_key

    assert identity(True) != identity(False)
    assert bytecode_cache_dir({"GROCKER_CACHE_HOME": "/c"}) == Path("/c/bytecode")
    assert bytecode_cache_dir({"GROCKER_CACHE_HOME": "/c", "GROCKER_NO_BYTECODE": "1"}) is None
    from setuptools_grocker.config import load_config

    config = load_config(Path(__file__).parent, environ={})
    source = type("S", (), {"digest": "d"})()
    on, off = (cache_key(config, rkey="r", source=source, local_sources=[], pip_env={},  # type: ignore[arg-type]
                         bytecode=flag) for flag in (True, False))
    assert on != off


def test_the_modules_are_the_py_files_below_site_packages_and_sources_match_their_pycs(tmp_path: Path) -> None:
    entries = install_wheel(make_wheel(tmp_path, "tool", "1.0", script=True), VENV)
    assert [e.path for e in modules(entries, VENV)] == [f"{SITE}/tool/__init__.py"]
    assert source_of(importlib.util.cache_from_source(f"{SITE}/tool/__init__.py")) == f"{SITE}/tool/__init__.py"
    assert source_of(f"{SITE}/__pycache__/a.b.cpython-311.pyc") == f"{SITE}/a.b.py"
    for wrong in (f"{SITE}/tool/__init__.pyc", f"{SITE}/__pycache__/m.pyc", f"{SITE}/__pycache__/m.cpython-311.py"):
        assert source_of(wrong) is None


def test_header_flags_tell_unchecked_hash_from_timestamp_and_checked(tmp_path: Path) -> None:
    modes = py_compile.PycInvalidationMode
    assert pyc_header_flags(pyc(tmp_path, "x = 1\n", modes.UNCHECKED_HASH)) == UNCHECKED_HASH_FLAGS
    assert pyc_header_flags(pyc(tmp_path, "x = 1\n", modes.CHECKED_HASH)) == 0b11
    assert pyc_header_flags(pyc(tmp_path, "x = 1\n", modes.TIMESTAMP)) == 0
    # Unchecked hash: no time in the file, the same source gives the same bytes.
    assert pyc(tmp_path, "x = 1\n", modes.UNCHECKED_HASH) == pyc(tmp_path, "x = 1\n", modes.UNCHECKED_HASH)


def test_archives_are_deterministic_and_read_back(compiled: dict[str, bytes]) -> None:
    one = pack("k", compiled, ["/skipped.py"])
    assert one == pack("k", dict(reversed(list(compiled.items()))), ["/skipped.py"])
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        infos = [i for i in tar.getmembers() if i.isfile()]
    assert {i.mtime for i in infos} == {0} and {i.uid for i in infos} == {0}
    assert MANIFEST in [i.name for i in infos]
    assert unpack(one, "k", SOURCES) == compiled


def test_a_damaged_or_foreign_archive_is_refused(tmp_path: Path, compiled: dict[str, bytes]) -> None:
    good = pack("k", compiled, [])
    with pytest.raises(ValueError, match="readable|manifest"):
        unpack(good[: len(good) // 2], "k", SOURCES)
    with pytest.raises(ValueError, match="another key"):
        unpack(good, "other", SOURCES)
    with pytest.raises(ValueError, match="not the bytecode of a module"):
        unpack(good, "k", {f"{SITE}/pkg/__init__.py"})
    timestamped = dict(compiled)
    path = next(iter(timestamped))
    timestamped[path] = pyc(tmp_path, "VALUE = 1\n", py_compile.PycInvalidationMode.TIMESTAMP)
    with pytest.raises(ValueError, match="unchecked-hash"):
        unpack(pack("k", timestamped, []), "k", SOURCES)
    # A member changed after the manifest was written (same length, other bytes).
    flipped = bytearray(good)
    at = flipped.index(compiled[path][-8:])
    flipped[at] ^= 0xFF
    with pytest.raises(ValueError, match="SHA-256"):
        unpack(bytes(flipped), "k", SOURCES)


def test_the_cache_rebuilds_a_damaged_archive_and_writes_atomically(tmp_path: Path,
                                                                   compiled: dict[str, bytes]) -> None:
    cache = BytecodeCache(tmp_path / "bytecode")
    assert cache.load("k", SOURCES) is None
    cache.store("k", compiled, [])
    assert [p.name for p in cache.root.iterdir()] == ["k.tar"]  # no temporary file left
    assert cache.load("k", SOURCES) == compiled
    data = cache.path("k").read_bytes()
    cache.path("k").write_bytes(data[:1000])
    assert cache.load("k", SOURCES) is None
    assert not cache.path("k").exists()  # removed: the next build compiles and stores it again


def test_pycs_go_into_the_layer_of_their_wheel(tmp_path: Path) -> None:
    six, core, app = (make_wheel(tmp_path, n, "1.0") for n in ("six", "core", "shop"))
    installed = {w: install_wheel(w, VENV) for w in (six, core, app)}
    extra = Entry(f"{SITE}/core/__pycache__/__init__.cpython-311.pyc", b"pyc")
    installed[core] = installed[core] + [extra]
    layers = runtime_layers(wheels=[six, core, app], project_wheel=app, internal={"core"}, venv=VENV,
                            app_entries=[], app_comment="application shop", room=50, epoch=1,
                            installed=installed)
    assert [extra in layer.entries for layer in layers] == [False, True, False]
    assert file_sha256(core) == file_sha256(core) != file_sha256(six)
