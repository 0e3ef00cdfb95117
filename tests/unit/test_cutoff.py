"""The early cut-off's key: the content of the wheels (their RECORD), not the archives' bytes."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from setuptools_grocker.config import load_config
from setuptools_grocker.image.runtime import WHEELS_UNCHANGED, image_key
from setuptools_grocker.pipeline.compile import Wheelhouse, record_digest
from setuptools_grocker.report import ProjectResult, Report, summary_table

MANIFEST = {"name": "demo", "version": "1.0", "wheel": "demo-1.0-py3-none-any.whl", "closure": [],
            "python": {"version": "3.11.2"}, "modules": ["demo"], "scripts": [], "local": []}


def make_wheel(path: Path, code: str, *, date: tuple[int, int, int, int, int, int], level: int = 6) -> Path:
    import base64
    import hashlib

    digest = base64.urlsafe_b64encode(hashlib.sha256(code.encode()).digest()).rstrip(b"=").decode()
    record = f"demo/__init__.py,sha256={digest},{len(code)}\ndemo-1.0.dist-info/RECORD,,\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in (("demo/__init__.py", code), ("demo-1.0.dist-info/RECORD", record)):
            zf.writestr(zipfile.ZipInfo(name, date_time=date), data)
    return path


def wheelhouse(root: Path, code: str, date: tuple[int, int, int, int, int, int], level: int = 6) -> Wheelhouse:
    make_wheel(root / "wheels" / MANIFEST["wheel"], code, date=date, level=level)
    (root / "manifest.json").write_text(json.dumps(MANIFEST))
    loaded = Wheelhouse.load(root)
    assert loaded is not None
    return loaded


def test_record_digest_ignores_timestamps_and_compression(tmp_path: Path) -> None:
    a = make_wheel(tmp_path / "a" / "demo-1.0-py3-none-any.whl", "x = 1\n", date=(2020, 1, 1, 0, 0, 0))
    b = make_wheel(tmp_path / "b" / "demo-1.0-py3-none-any.whl", "x = 1\n", date=(2026, 12, 7, 10, 0, 0), level=9)
    c = make_wheel(tmp_path / "c" / "demo-1.0-py3-none-any.whl", "x = 2\n", date=(2020, 1, 1, 0, 0, 0))
    assert a.read_bytes() != b.read_bytes()
    assert record_digest(a) == record_digest(b) != record_digest(c)


def test_not_a_zip_is_hashed_by_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "x.whl").write_bytes(b"not a zip")
    (tmp_path / "y.whl").write_bytes(b"not a zip either")
    assert record_digest(tmp_path / "x.whl") != record_digest(tmp_path / "y.whl")


def test_same_wheels_same_image_key(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pyproject.toml").write_text('[project]\nname = "demo"\nversion = "1.0"\n')
    config = load_config(tmp_path / "p", environ={})
    first = wheelhouse(tmp_path / "k1", "x = 1\n", (2020, 1, 1, 0, 0, 0))
    again = wheelhouse(tmp_path / "k2", "x = 1\n", (2026, 12, 7, 10, 0, 0))
    changed = wheelhouse(tmp_path / "k3", "x = 2\n", (2020, 1, 1, 0, 0, 0))
    assert first.content_digest() == again.content_digest() != changed.content_digest()

    def key(w: Wheelhouse, **kw: object) -> str:
        args: dict = {"root_key": "r", "plugins": "", "revision": None, "epoch": 315532800, "bytecode": True, **kw}
        return image_key(config, wheels=w, **args)

    assert key(first) == key(again)
    assert key(first) != key(changed)
    # What else shapes the image counts too: the root, the revision label, the epoch, bytecode,
    # the configuration.
    assert len({key(first), key(first, root_key="other"), key(first, revision="abc-dirty"),
                key(first, epoch=1), key(first, bytecode=False)}) == 5
    other = load_config(tmp_path / "p", environ={}, overrides={"env": {"A": "1"}})
    assert image_key(other, wheels=first, root_key="r", plugins="", revision=None, epoch=315532800,
                     bytecode=True) != key(first)


def test_the_summary_shows_why_a_build_is_cached() -> None:
    report = Report(projects=[ProjectResult(name="demo", version="1.0", status="cached", reason=WHEELS_UNCHANGED,
                                            image="demo:1.0")])
    assert "cached (wheels unchanged)" in summary_table(report)
    assert report.to_json()["projects"][0]["reason"] == WHEELS_UNCHANGED
