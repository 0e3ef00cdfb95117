"""load_precompiled: the compile container's bytecode of the project wheel is used only when exactly right."""
from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import sys
from pathlib import Path

import pytest

from setuptools_grocker.image.bytecode import load_precompiled

SITE = "/opt/app/venv/lib/python3.11/site-packages"
SOURCES = {f"{SITE}/app/__init__.py": b"VALUE = 1\n", f"{SITE}/app/other.py": b"X = 2\n",
           f"{SITE}/app/old.py": b"print 'py2'\n"}
INTERPRETER = {"version": sys.version, "magic": importlib.util.MAGIC_NUMBER.hex(),
               "tag": sys.implementation.cache_tag}


def compiled_dir(root: Path) -> Path:
    """What bytecode_driver.py --one writes for SOURCES, made with this interpreter."""
    out, compiled, skipped = root / "bytecode", [], []
    for path, data in SOURCES.items():
        source = root / "src" / path.lstrip("/")
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(data)
        cfile = importlib.util.cache_from_source(path)
        try:
            py_compile.compile(str(source), cfile=str(out / "0" / cfile.lstrip("/")), dfile=path, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except py_compile.PyCompileError:
            skipped.append(path)
            continue
        compiled.append(cfile)
    (out / "0.json").write_text(json.dumps({"compiled": compiled, "skipped": skipped, "interpreter": INTERPRETER}))
    return out


def test_the_bytecode_of_exactly_the_wheels_modules_is_used(tmp_path: Path) -> None:
    found = load_precompiled(compiled_dir(tmp_path), SOURCES, INTERPRETER)
    assert found is not None
    assert sorted(Path(p).name for p in found) == [f"__init__.{INTERPRETER['tag']}.pyc",
                                                   f"other.{INTERPRETER['tag']}.pyc"]


def test_without_a_record_of_the_roots_interpreter_or_with_another_nothing_is_used(tmp_path: Path) -> None:
    out = compiled_dir(tmp_path)
    assert load_precompiled(out, SOURCES, None) is None
    assert load_precompiled(out, SOURCES, {**INTERPRETER, "version": "3.11.0 (another build)"}) is None


def pyc(out: Path, name: str) -> Path:
    return next(out.rglob(f"{name}.*.pyc"))


@pytest.mark.parametrize("damage", ["source-hash", "checked", "extra-file", "missing", "symlink", "other-source",
                                    "foreign-path"])
def test_bytecode_that_is_not_exactly_the_wheels_is_refused(tmp_path: Path, damage: str) -> None:
    out = compiled_dir(tmp_path)
    listing = json.loads((out / "0.json").read_text())
    sources = dict(SOURCES)
    if damage == "source-hash":
        data = bytearray(pyc(out, "other").read_bytes())
        data[9] ^= 1
        pyc(out, "other").write_bytes(bytes(data))
    elif damage == "checked":  # a checked-hash header (flags 0b11)
        data = bytearray(pyc(out, "other").read_bytes())
        data[4] = 0b11
        pyc(out, "other").write_bytes(bytes(data))
    elif damage == "extra-file":  # bytecode of a module the wheel does not have
        extra = importlib.util.cache_from_source(f"{SITE}/other_project/__init__.py")
        (out / "0" / extra.lstrip("/")).parent.mkdir(parents=True)
        (out / "0" / extra.lstrip("/")).write_bytes(pyc(out, "other").read_bytes())
        listing["compiled"].append(extra)
    elif damage == "missing":  # a module neither compiled nor said not to compile
        listing["skipped"] = []
    elif damage == "symlink":  # a link to a file of the host
        target = pyc(out, "other")
        target.unlink()
        os.symlink(tmp_path / "src" / SITE.lstrip("/") / "app" / "other.py", target)
    elif damage == "other-source":  # the wheel's module is not what was compiled
        sources[f"{SITE}/app/other.py"] = b"X = 3\n"
    elif damage == "foreign-path":
        listing["compiled"] = [p.replace(SITE, "/usr/lib/python3/dist-packages") for p in listing["compiled"]]
    (out / "0.json").write_text(json.dumps(listing))
    assert load_precompiled(out, sources, INTERPRETER) is None


def test_no_directory_is_nothing(tmp_path: Path) -> None:
    assert load_precompiled(tmp_path / "absent", SOURCES, INTERPRETER) is None
