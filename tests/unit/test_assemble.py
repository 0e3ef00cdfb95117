"""Reproducible layers, host-side (no engine): the same inputs give the same bytes."""
from __future__ import annotations

import io
import json
import tarfile
import tempfile
import uuid
import zipfile
from pathlib import Path

import pytest

from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.image import assemble
from setuptools_grocker.image.assemble import (
    Entry,
    Layer,
    Venv,
    deterministic_tar,
    group_layers,
    gzip_layer,
    image_config,
    install_wheel,
    load_archive,
    prepare_install,
    runtime_layers,
    wheel_name,
)

VENV = Venv("/opt/app/venv", "3.11.2")


def make_wheel(path: Path, name: str, version: str, *, script: bool = False) -> Path:
    dist = f"{name}-{version}"
    wheel = path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{name}/__init__.py", f"VALUE = {version!r}\n")
        zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n")
        if script:
            zf.writestr(f"{dist}.dist-info/entry_points.txt", f"[console_scripts]\n{name}-run = {name}:main\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return wheel


def members(tar: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.getmembers()


def test_tar_is_sorted_with_parents_fixed_times_and_owners() -> None:
    entries = [Entry("/opt/b/x.py", b"x"), Entry("/opt/a/y.py", b"y", 0o755), Entry("/data", uid=10001)]
    one = deterministic_tar(entries, 1000)
    assert one == deterministic_tar(list(reversed(entries)), 1000)
    infos = members(one)
    assert [i.name for i in infos] == ["data", "opt", "opt/a", "opt/a/y.py", "opt/b", "opt/b/x.py"]
    assert {i.mtime for i in infos} == {1000}
    assert {(i.uid, i.uname) for i in infos if i.name != "data"} == {(0, "")}
    assert next(i for i in infos if i.name == "data").uid == 10001
    assert deterministic_tar(entries, 1001) != one
    assert gzip_layer(one) == gzip_layer(one)


def test_a_wheel_installed_ahead_is_taken_by_its_bytes_not_its_name(tmp_path: Path) -> None:
    """What the image stage prepared for the previous closure serves a wheel of the same bytes, once; a wheel of
    the same name with other bytes is installed afresh."""
    for sub in "abc":
        (tmp_path / sub).mkdir()
    wheel = make_wheel(tmp_path / "a", "same", "1.0")
    first = install_wheel(wheel, VENV)
    prepare_install(wheel, VENV)
    copy = tmp_path / "b" / wheel.name
    copy.write_bytes(wheel.read_bytes())
    assert install_wheel(copy, VENV) == first  # same bytes, other path: the prepared entries
    assert not assemble._PREPARED  # taken: nothing stays in memory
    other = tmp_path / "c" / "same-1.0-py3-none-any.whl"
    other.write_bytes(wheel.read_bytes())
    with zipfile.ZipFile(other, "a") as zf:
        zf.writestr("same/extra.py", "X = 1\n")
    prepare_install(wheel, VENV)
    paths = {e.path for e in install_wheel(other, VENV)}
    assert "/opt/app/venv/lib/python3.11/site-packages/same/extra.py" in paths
    assert paths != {e.path for e in first}


def test_install_wheel_writes_scripts_for_the_venv_and_no_bytecode(tmp_path: Path) -> None:
    entries = install_wheel(make_wheel(tmp_path, "tool", "1.0", script=True), VENV)
    paths = {e.path: e for e in entries}
    script = paths["/opt/app/venv/bin/tool-run"]
    assert script.data.startswith(b"#!/opt/app/venv/bin/python") and script.mode == 0o755
    assert "/opt/app/venv/lib/python3.11/site-packages/tool/__init__.py" in paths
    assert not [p for p in paths if p.endswith(".pyc")]
    record = paths["/opt/app/venv/lib/python3.11/site-packages/tool-1.0.dist-info/RECORD"].data.decode()
    assert "tool/__init__.py" in record
    assert entries == install_wheel(make_wheel(tmp_path, "tool", "1.0", script=True), VENV)


def test_one_layer_per_internal_library_and_a_shared_third_party_layer(tmp_path: Path) -> None:
    third = [make_wheel(tmp_path, "six", "1.16.0")]
    libs = [make_wheel(tmp_path, "core", "1.0"), make_wheel(tmp_path, "pricing", "2.0")]

    def layers_of(app: str) -> list[Layer]:
        project = make_wheel(tmp_path, app, "3.0")
        return runtime_layers(wheels=[*third, *libs, project], project_wheel=project, internal={"core", "pricing"},
                              venv=VENV, app_entries=[Entry("/opt/app/grocker/app.json", app.encode())],
                              app_comment=f"application {app}", room=50, epoch=1)

    shop, till = layers_of("shop"), layers_of("till")
    assert [layer.comment for layer in shop] == ["venv and third-party: six 1.16.0", "internal library core 1.0",
                                                 "internal library pricing 2.0", "application shop"]
    # Same third-party set, same internal wheels: the same layers, byte for byte.
    assert [x.diff_id for x in shop[:3]] == [x.diff_id for x in till[:3]]
    assert shop[3].diff_id != till[3].diff_id


def test_groups_are_merged_near_the_layer_limit() -> None:
    groups = [(f"g{i}", [Entry(f"/x/{i}", b"")]) for i in range(30)]
    merged = group_layers(groups, 10)
    assert len(merged) <= 10 and merged[0][0] == "g0" and merged[-1][0] == "g29"
    assert sorted(e.path for _, es in merged for e in es) == sorted(f"/x/{i}" for i in range(30))
    assert group_layers(groups, 40) == groups


def test_image_config_depends_on_its_inputs_only() -> None:
    root = {"Id": "sha256:" + "0" * 64, "Architecture": "amd64", "Os": "linux",
            "Config": {"Env": ["PATH=/usr/bin"], "Labels": None}, "RootFS": {"Layers": ["sha256:" + "1" * 64]}}
    layer = Layer("app", [Entry("/opt/app/x", b"x")], epoch=5)
    settings = {"Cmd": ["server"], "Labels": {"a": "b"}, "Volumes": {}}
    one = image_config(root, [layer], settings=settings, epoch=5)
    assert one == image_config(root, [Layer("app", [Entry("/opt/app/x", b"x")], epoch=5)], settings=settings,
                               epoch=5)
    data = json.loads(one)
    assert data["created"] == "1970-01-01T00:00:05Z"
    assert data["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64, layer.diff_id]
    assert data["config"]["Cmd"] == ["server"] and "Volumes" not in data["config"]


def test_the_venv_skeleton_points_at_the_image_python() -> None:
    paths = {e.path: e for e in VENV.skeleton()}
    assert paths["/opt/app/venv/bin/python"].link == "/usr/bin/python3"
    assert b"version = 3.11.2" in paths["/opt/app/venv/pyvenv.cfg"].data


def test_data_schemes_scripts_and_record_match_installers_own_destination(tmp_path: Path) -> None:
    """The in-memory destination gives what installer's SchemeDictionaryDestination writes, byte for byte."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    wheel = tmp_path / "datapkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for directory in ("datapkg/", "datapkg-1.0.data/", "datapkg-1.0.data/scripts/"):  # some builders list them
            zf.writestr(directory, "")
        zf.writestr("datapkg/__init__.py", "def main():\n    pass\n")
        zf.writestr("datapkg-1.0.data/scripts/tool", "#!python\nprint('hi')\n")
        info = zipfile.ZipInfo("datapkg-1.0.data/scripts/shtool")
        info.external_attr = 0o100755 << 16
        zf.writestr(info, "#!/bin/sh\necho x\n")
        zf.writestr("datapkg-1.0.data/data/share/datapkg/a.txt", "x\n")
        zf.writestr("datapkg-1.0.data/headers/x.h", "#define X 1\n")
        zf.writestr("datapkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: datapkg\nVersion: 1.0\n")
        zf.writestr("datapkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("datapkg-1.0.dist-info/entry_points.txt", "[console_scripts]\ndp = datapkg:main\n")
        zf.writestr("datapkg-1.0.dist-info/RECORD", "")
    stage = tmp_path / "stage"
    reference = SchemeDictionaryDestination(VENV.schemes, interpreter="/opt/app/venv/bin/python", script_kind="posix",
                                            destdir=str(stage))
    with WheelFile.open(wheel) as source:
        install(source, reference, additional_metadata={"INSTALLER": b"setuptools-grocker\n"})
    expected = {"/" + str(p.relative_to(stage)): (p.read_bytes(), 0o755 if p.stat().st_mode & 0o111 else 0o644)
                for p in stage.rglob("*") if p.is_file()}
    entries = install_wheel(wheel, VENV)
    assert {e.path: (e.data, e.mode) for e in entries} == expected
    record = expected["/opt/app/venv/lib/python3.11/site-packages/datapkg-1.0.dist-info/RECORD"][0].decode()
    assert "../../../bin/tool," in record and "../../../include/site/python3.11/x.h," in record
    assert expected["/opt/app/venv/bin/tool"][0].startswith(b"#!/opt/app/venv/bin/python\n")


def hostile_wheel(path: Path, member: str) -> Path:
    """A wheel whose only payload is ``member`` (RECORD, METADATA and WHEEL otherwise fine)."""
    wheel = path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("evil/__init__.py", "")
        zf.writestr(member, "pwned\n")
        zf.writestr("evil-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
        zf.writestr("evil-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("evil-1.0.dist-info/RECORD", f"evil/__init__.py,,\n{member},,\nevil-1.0.dist-info/RECORD,,\n")
    return wheel


# Enough ".." to climb from any staging directory to "/", then down into the temporary directory.
UP = "../" * 16 + tempfile.gettempdir().strip("/")


@pytest.mark.parametrize("member", [
    f"{UP}/pwned-{{id}}",
    "{tmp}/pwned-{id}",  # absolute
    f"evil-1.0.data/scripts/{UP}/pwned-{{id}}",
    f"evil-1.0.data/data/{UP}/pwned-{{id}}",
    "evil-1.0.data/evil/pwned-{id}",  # a scheme the wheel format does not have
    "evil-1.0.data/data/bin/python",  # would replace the venv's interpreter
    "evil-1.0.data/data/lib64/pwned-{id}",  # through the venv's lib64 symlink
    "evil\\..\\..\\pwned-{id}",
])
def test_a_hostile_wheel_fails_with_one_line_and_writes_nothing(tmp_path: Path, member: str) -> None:
    name = member.format(id=uuid.uuid4().hex, tmp=tmp_path)
    target = Path(tempfile.gettempdir()) / name.rsplit("/", 1)[-1]
    wheel = hostile_wheel(tmp_path, name)
    try:
        with pytest.raises(ImageBuildError) as info:
            install_wheel(wheel, VENV)
        line = str(info.value)
        assert "\n" not in line
        assert "evil-1.0-py3-none-any.whl" in line and repr(name) in line, line
        assert "would write outside" in line
        assert not target.exists() and not (tmp_path / name.rsplit("/", 1)[-1]).exists()
    finally:
        target.unlink(missing_ok=True)


def test_a_console_script_name_cannot_leave_bin(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "tool", "1.0")
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("tool-1.0.dist-info/entry_points.txt", "[console_scripts]\n../../../x = tool:main\n")
    with pytest.raises(ImageBuildError, match=r"tool-1.0-py3-none-any.whl would write outside .*'\.\./\.\./\.\./x'"):
        install_wheel(wheel, VENV)


@pytest.mark.parametrize("filename, name", [
    ("Demo_Pkg.x-1.0-py3-none-any.whl", "demo-pkg-x"),
    ("zope.interface-6.0-cp311-cp311-linux_x86_64.whl", "zope-interface"),
    ("lib_a-2.0-1abc-py3-none-any.whl", "lib-a"),
    # A legacy version packaging refuses (pip installed it): the name is still read.
    ("Foo__Bar-2004d-py3-none-any.whl", "foo-bar"),
])
def test_wheel_name_is_the_normalised_project_name(filename: str, name: str) -> None:
    assert wheel_name(Path(filename)) == name


def test_the_load_archive_names_every_layer_and_holds_the_new_ones_only() -> None:
    """``present``: the first layers are in the engine already; their tars are left out, not their names."""
    layers = [Layer(n, [Entry(f"/{n}.txt", n.encode())], epoch=0) for n in ("a", "b", "c")]
    root = {"Id": "sha256:" + "0" * 64, "RootFS": {"Layers": ["sha256:" + "1" * 64]}}
    blob = image_config(root, layers, settings={}, epoch=0)
    for present, kept in ((0, layers), (2, layers[2:])):
        with tarfile.open(fileobj=io.BytesIO(load_archive(blob, root["RootFS"]["Layers"], layers, present))) as tar:
            names = tar.getnames()
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert [n for n in names if n.endswith("layer.tar")] == [f"{x.diff_id.split(':')[1]}/layer.tar" for x in kept]
        assert manifest[0]["Layers"] == [f"{d.split(':')[1]}/layer.tar"
                                         for d in [*root["RootFS"]["Layers"], *(x.diff_id for x in layers)]]
