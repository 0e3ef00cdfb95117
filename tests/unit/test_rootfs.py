"""The base image's normalisation, layer, config and archive (rootfs.py), and bootstrap.py's parsing."""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from setuptools_grocker.errors import BootstrapError
from setuptools_grocker.image.bootstrap import BootstrapOptions, installed_packages, mmdebstrap_argv, release_epoch
from setuptools_grocker.image.rootfs import (
    base_config,
    fix_shadow_dates,
    image_id,
    normalise_tree,
    write_load_archive,
    write_rootfs_tar,
)

EPOCH = 1_783_764_997  # 2026-07-11


def make_tree(root: Path, *, reverse: bool = False) -> Path:
    """A small root filesystem with the per-run files a bootstrap leaves; ``reverse`` creates them in the
    opposite order (other inode numbers and directory order) and at another time."""
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "etc/passwd-": "backup\n",
        "etc/shadow": "root:*:20649:0:99999:7:::\nnobody:*:20650:0:99999:7:::\nnew:!:0::::::\nlocked:!::::::\n",
        "etc/hostname": "builder-42\n",
        "etc/resolv.conf": "nameserver 192.0.2.1\n",
        "etc/machine-id": "0123456789abcdef\n",
        "usr/bin/tool": "#!/bin/sh\n",
        "usr/share/doc/tool/copyright": "text\n",
        "var/log/dpkg.log": "2026-12-07 installed tool\n",
        "var/log/wtmp": "",
        "var/log/apt/history.log": "Start-Date: 2026-12-07\n",
        "var/lib/apt/lists/mirror_dists_bookworm_InRelease": "Date: x\n",
        "var/lib/apt/lists/lock": "",
        "var/cache/apt/pkgcache.bin": "cache",
        "var/cache/ldconfig/aux-cache": "aux",
        "var/lib/dpkg/status-old": "old",
        "tmp/stray": "x",
        "dev/null": "not a device here",
    }
    items = sorted(files.items(), reverse=reverse)
    for rel, text in items:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "usr/bin/tool").chmod(0o755)
    (root / "var/lib/apt/lists/partial").mkdir()
    (root / "bin").symlink_to("usr/bin")
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-alias")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (time.time(), time.time() - (7 if reverse else 0)), follow_symlinks=False)
    return root


def test_normalise_removes_per_run_files_and_fixes_dates(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "t")
    touched = normalise_tree(tree, EPOCH)
    for gone in ("etc/passwd-", "etc/hostname", "etc/resolv.conf", "usr/share/doc/tool", "var/cache/apt/pkgcache.bin",
                 "var/cache/ldconfig/aux-cache", "var/lib/dpkg/status-old", "tmp/stray",
                 "var/lib/apt/lists/mirror_dists_bookworm_InRelease"):
        assert not (tree / gone).exists(), gone
        assert gone in touched
    # apt's empty state, the login records' files and the machine ID's file stay, empty.
    assert sorted(p.name for p in (tree / "var/lib/apt/lists").iterdir()) == ["lock", "partial"]
    assert (tree / "var/log/dpkg.log").read_bytes() == b"" and (tree / "var/log/apt/history.log").read_bytes() == b""
    assert (tree / "var/log/wtmp").exists() and "var/log/wtmp" not in touched
    assert (tree / "etc/machine-id").read_bytes() == b""
    day = str(EPOCH // 86400)
    assert (tree / "etc/shadow").read_text().splitlines() == [
        f"root:*:{day}:0:99999:7:::", f"nobody:*:{day}:0:99999:7:::", "new:!:0::::::", "locked:!::::::"]


def test_shadow_dates_keep_empty_and_zero() -> None:
    assert fix_shadow_dates("a:*:19000:0:99999:7:::\nb:*::::::\nc:*:0:::::\n", 86400 * 20000) == \
        "a:*:20000:0:99999:7:::\nb:*::::::\nc:*:0:::::\n"


def test_layer_is_the_same_for_trees_made_differently(tmp_path: Path) -> None:
    layers = []
    for name, reverse in (("one", False), ("two", True)):
        tree = make_tree(tmp_path / name, reverse=reverse)
        normalise_tree(tree, EPOCH)
        out = tmp_path / f"{name}.tar"
        layers.append((write_rootfs_tar(tree, out, EPOCH), out.read_bytes()))
    assert layers[0] == layers[1]
    diff_id, data = layers[0]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert "dev" in names and not any(n.startswith("dev/") for n in names)  # the engine mounts its own /dev
    assert all(m.mtime <= EPOCH and m.uname == "" and m.gname == "" for m in members)
    by_name = {m.name: m for m in members}
    assert by_name["bin"].issym() and by_name["bin"].linkname == "usr/bin"
    assert by_name["usr/bin/tool"].isreg() and by_name["usr/bin/tool"].mode == 0o755
    assert by_name["usr/bin/tool-alias"].islnk() and by_name["usr/bin/tool-alias"].linkname == "usr/bin/tool"


def test_old_files_keep_their_time(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/old").write_text("x")
    os.utime(tree / "etc/old", (EPOCH - 1000, EPOCH - 1000))
    with tarfile.open(fileobj=io.BytesIO(_tar(tree, tmp_path))) as tar:
        assert tar.getmember("etc/old").mtime == EPOCH - 1000
        assert tar.getmember("etc").mtime == EPOCH


def _tar(tree: Path, tmp: Path) -> bytes:
    out = tmp / "layer.tar"
    write_rootfs_tar(tree, out, EPOCH)
    return out.read_bytes()


def test_config_and_archive(tmp_path: Path) -> None:
    labels = {"io.grocker.base.packages": json.dumps(["tini=0.19.0-1"]), "io.grocker.bootstrap": "bookworm"}
    config = base_config(diff_id="sha256:" + "a" * 64, epoch=EPOCH, architecture="arm64", labels=labels,
                         created_by="test")
    assert config == base_config(diff_id="sha256:" + "a" * 64, epoch=EPOCH, architecture="arm64",
                                 labels=dict(reversed(labels.items())), created_by="test")
    data = json.loads(config)
    assert data["created"] == "2026-07-11T10:16:37Z" and data["architecture"] == "arm64"
    assert data["config"]["Labels"] == labels and data["config"]["Cmd"] == ["bash"]
    layer = tmp_path / "layer.tar"
    layer.write_bytes(b"layer bytes")
    archive = tmp_path / "image.tar"
    write_load_archive(archive, config=config, layer=layer, diff_id="sha256:" + "a" * 64, ref="debian:bookworm-slim")
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest == [{"Config": image_id(config)[7:] + ".json", "RepoTags": ["debian:bookworm-slim"],
                             "Layers": ["a" * 64 + "/layer.tar"]}]
        assert tar.extractfile(manifest[0]["Config"]).read() == config  # type: ignore[union-attr]


def test_release_epoch() -> None:
    assert release_epoch("Origin: Debian\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nSuite: stable\n") == EPOCH
    with pytest.raises(BootstrapError, match="no Date"):
        release_epoch("Origin: Debian\n")
    with pytest.raises(BootstrapError, match="bad Date"):
        release_epoch("Date: yesterday\n")


def test_installed_packages(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: tini\nStatus: install ok installed\nArchitecture: amd64\nVersion: 0.19.0-1\n\n"
                      "Package: dpkg\nStatus: install ok installed\nArchitecture: arm64\nVersion: 1.21.23\n\n"
                      "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n")
    assert installed_packages(tmp_path) == (["dpkg=1.21.23", "tini=0.19.0-1"], "arm64")


def test_mmdebstrap_argv_with_apt_cache(tmp_path: Path) -> None:
    options = BootstrapOptions(include=("python3", "tini"), apt_cache=tmp_path)
    argv = mmdebstrap_argv("mmdebstrap", options, tmp_path / "rootfs", "http://mirror.invalid/debian")
    assert argv[-3:] == ["bookworm", str(tmp_path / "rootfs"), "http://mirror.invalid/debian"]
    assert "--variant=minbase" in argv and "--include=python3,tini" in argv
    assert f"--setup-hook=sync-in {tmp_path} /var/cache/apt/archives/" in argv
    assert f"--customize-hook=sync-out /var/cache/apt/archives {tmp_path}" in argv
    assert not any("sync" in a for a in mmdebstrap_argv("mmdebstrap", BootstrapOptions(), tmp_path, "m"))
