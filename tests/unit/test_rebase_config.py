"""The pure parts of the security refresh and of ``grocker rebase``: config rewriting, root comparison, the
SBOM's new content, apt's simulation output (no engine: the integration test is test_rebase_image.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from setuptools_grocker.errors import RebaseError
from setuptools_grocker.image.rebase import (
    REBASED_LABEL,
    SBOM_LAYER_PREFIX,
    incompatibilities,
    package_changes,
    rebased_config,
    rebased_sbom,
    split_layers,
)
from setuptools_grocker.image.refresh import parse_simulation, refreshed_key
from setuptools_grocker.image.sbom import DebPackage, PythonDist, make_sbom

OLD_ROOT = "sha256:" + "a" * 64
NEW_ROOT = "sha256:" + "b" * 64


def app_config(root_layers: int = 2, app: tuple[str, ...] = ("sha256:app1", "sha256:app2")) -> dict[str, Any]:
    """An image config as assemble.py writes it: one history entry per layer, the root's first."""
    return {
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/opt/app/venv/bin:/usr/bin", "LANG=C.UTF-8", "GROCKER_APP_NAME=shop"],
                   "User": "app", "Labels": {"io.grocker.key": "k"}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:old{i}" for i in range(root_layers)] + list(app)},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"root image {OLD_ROOT} layer {i + 1}"}
                    for i in range(root_layers)]
        + [{"created": "2024-01-01T00:00:00Z", "created_by": f"setuptools-grocker: {d}"} for d in app],
    }


def new_root(layers: int = 3, env: tuple[str, ...] = ("LANG=C.UTF-8",)) -> dict[str, Any]:
    return {"Id": NEW_ROOT, "Architecture": "amd64", "Os": "linux",
            "RootFS": {"Layers": [f"sha256:new{i}" for i in range(layers)]}, "Config": {"Env": list(env)}}


def test_split_layers_separates_the_root_from_the_application() -> None:
    layers = split_layers(app_config())
    assert layers.root_id == OLD_ROOT
    assert layers.root == ["sha256:old0", "sha256:old1"]
    assert layers.app == ["sha256:app1", "sha256:app2"]
    assert layers.sbom_layer is None


def test_rebased_config_swaps_the_root_layers_under_the_same_application_layers() -> None:
    config = json.loads(rebased_config(app_config(), image_id="sha256:orig", new_root=new_root(),
                                       old_root_env=["LANG=C.UTF-8"], sbom_diff_id="sha256:sbom"))
    assert config["rootfs"]["diff_ids"] == ["sha256:new0", "sha256:new1", "sha256:new2", "sha256:app1",
                                            "sha256:app2", "sha256:sbom"]
    history = [h["created_by"] for h in config["history"]]
    assert history[:3] == [f"root image {NEW_ROOT} layer {i}" for i in (1, 2, 3)]
    assert history[3:5] == ["setuptools-grocker: sha256:app1", "setuptools-grocker: sha256:app2"]
    assert history[5] == f"{SBOM_LAYER_PREFIX}{NEW_ROOT}"
    assert len(config["history"]) == len(config["rootfs"]["diff_ids"])  # the engine pairs them
    assert config["created"] == "2024-01-01T00:00:00Z"
    assert config["config"]["User"] == "app"
    assert config["config"]["Labels"] == {"io.grocker.key": "k", REBASED_LABEL: "sha256:orig"}


def test_a_second_rebase_replaces_the_sbom_layer_and_keeps_the_first_image_named() -> None:
    once = json.loads(rebased_config(app_config(), image_id="sha256:orig", new_root=new_root(),
                                     old_root_env=None, sbom_diff_id="sha256:sbom1"))
    other = {**new_root(layers=2), "Id": "sha256:" + "c" * 64}
    twice = json.loads(rebased_config(once, image_id="sha256:once", new_root=other, old_root_env=None,
                                      sbom_diff_id="sha256:sbom2"))
    assert twice["rootfs"]["diff_ids"] == ["sha256:new0", "sha256:new1", "sha256:app1", "sha256:app2",
                                           "sha256:sbom2"]
    assert twice["config"]["Labels"][REBASED_LABEL] == "sha256:orig"
    assert split_layers(twice).sbom_layer == "sha256:sbom2"


def test_variables_from_the_old_root_follow_the_new_root_the_image_s_own_stay() -> None:
    app = app_config()
    app["config"]["Env"].append("TZ=UTC")
    config = json.loads(rebased_config(app, image_id="sha256:orig",
                                       new_root=new_root(env=("LANG=C.UTF-8", "TZ=Europe/Paris", "NEW=1")),
                                       old_root_env=["LANG=C.UTF-8"], sbom_diff_id=None))
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["TZ"] == "UTC"  # the image set it, not the old root
    assert env["NEW"] == "1" and env["GROCKER_APP_NAME"] == "shop"
    assert env["PATH"].startswith("/opt/app/venv/bin")


def test_the_same_rewrite_gives_the_same_bytes() -> None:
    args: dict[str, Any] = {"image_id": "sha256:orig", "new_root": new_root(), "old_root_env": None,
                            "sbom_diff_id": "sha256:s"}
    assert rebased_config(app_config(), **args) == rebased_config(app_config(), **args)


def test_an_image_not_assembled_by_grocker_is_refused() -> None:
    config = app_config()
    for entry in config["history"]:
        entry["created_by"] = "RUN something"
    with pytest.raises(RebaseError, match="names no root image layers"):
        split_layers(config)
    config["history"] = config["history"][:1]
    with pytest.raises(RebaseError, match="history has 1 layer entries for 4 layers"):
        split_layers(config)


PYTHON = {"version": "3.11.2", "minor": "3.11", "implementation": "cpython", "cache_tag": "cpython-311",
          "soabi": "cpython-311-x86_64-linux-gnu", "magic": "a70d0d0a", "executable": "/usr/bin/python3.11",
          "machine": "x86_64", "uid": 10001}
DEBS = [DebPackage("libc6", "2.36-9", "amd64"), DebPackage("libssl3", "3.0.11-1", "amd64")]


def test_a_micro_release_and_upgraded_packages_are_compatible() -> None:
    upgraded = [DebPackage("libc6", "2.36-9+deb12u1", "amd64"), DebPackage("libssl3", "3.0.13-1", "amd64"),
                DebPackage("tzdata", "2024a", "all")]
    assert incompatibilities(PYTHON, {**PYTHON, "version": "3.11.4"}, old_packages=DEBS, new_packages=upgraded) == []


def test_another_python_another_uid_or_a_removed_package_is_incompatible() -> None:
    other = {**PYTHON, "version": "3.12.1", "minor": "3.12", "cache_tag": "cpython-312", "magic": "cb0d0d0a",
             "uid": 1000}
    reasons = incompatibilities(PYTHON, other, old_packages=DEBS, new_packages=DEBS[:1])
    assert "Python version 3.11 -> 3.12" in reasons
    assert "bytecode magic number a70d0d0a -> cb0d0d0a" in reasons
    assert "uid of the image's user 10001 -> 1000" in reasons
    assert "Debian package(s) removed: libssl3" in reasons


def test_package_changes_lists_upgrades_additions_and_removals() -> None:
    new = [DebPackage("libc6", "2.36-9", "amd64"), DebPackage("libssl3", "3.0.13-1", "amd64"),
           DebPackage("less", "590", "amd64")]
    assert package_changes(DEBS, new) == [{"name": "less", "old": None, "new": "590"},
                                          {"name": "libssl3", "old": "3.0.11-1", "new": "3.0.13-1"}]
    assert package_changes(new, DEBS)[0] == {"name": "less", "old": "590", "new": None}


def _sbom(debs: list[DebPackage], root: str) -> bytes:
    dists = [PythonDist("shop", "1.0", "0" * 64, "shop-1.0-py3-none-any.whl", True, "MIT", True),
             PythonDist("requests", "2.32.3", "1" * 64, "requests-2.32.3-py3-none-any.whl", False, "Apache 2.0")]
    return make_sbom(name="shop", version="1.0", dists=sorted(dists, key=lambda d: d.name), debs=debs,
                     base_image="debian:bookworm-slim", base_id="sha256:base", root_id=root, epoch=1700000000)


def test_the_sbom_rewritten_onto_its_own_root_is_the_same_bytes() -> None:
    original = _sbom(DEBS, OLD_ROOT)
    assert rebased_sbom(original, debs=DEBS, root_id=OLD_ROOT) == original


def test_the_rebased_sbom_has_the_new_packages_and_root_and_the_same_distributions() -> None:
    new_debs = [DEBS[0], DebPackage("libssl3", "3.0.13-1", "amd64")]
    rebased = rebased_sbom(_sbom(DEBS, OLD_ROOT), debs=new_debs, root_id=NEW_ROOT)
    assert rebased == _sbom(new_debs, NEW_ROOT)  # what a build on the new root would record
    document = json.loads(rebased)
    versions = {c["name"]: c["version"] for c in document["components"]}
    assert versions["libssl3"] == "3.0.13-1" and versions["requests"] == "2.32.3"
    assert document["serialNumber"] != json.loads(_sbom(DEBS, OLD_ROOT))["serialNumber"]


def test_an_unreadable_sbom_is_a_one_line_error() -> None:
    with pytest.raises(RebaseError, match="the image's SBOM cannot be read"):
        rebased_sbom(b"{}", debs=DEBS, root_id=NEW_ROOT)


SIMULATION = """\
NOTE: This is only a simulation!
Reading package lists...
Inst libssl3 [3.0.11-1~deb12u2] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])
Inst libnew1 (1.0-1 Debian:12/stable [amd64])
Remv libold0 [0.9-1]
Conf libssl3 (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])
"""


def test_apt_simulation_output_is_parsed_into_changes() -> None:
    assert parse_simulation(SIMULATION) == [
        {"name": "libnew1", "old": None, "new": "1.0-1"},
        {"name": "libold0", "old": "0.9-1", "new": None},
        {"name": "libssl3", "old": "3.0.11-1~deb12u2", "new": "3.0.13-1~deb12u1"},
    ]
    assert parse_simulation("Reading package lists...\n0 upgraded, 0 newly installed\n") == []


def test_the_refreshed_root_key_covers_every_package_version() -> None:
    key = refreshed_key("recipe", DEBS)
    assert key == refreshed_key("recipe", list(reversed(DEBS)))
    assert key != refreshed_key("recipe", [DEBS[0], DebPackage("libssl3", "3.0.13-1", "amd64")])
    assert key != refreshed_key("other-recipe", DEBS)


def _pyproject(path: Path, name: str, grocker: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1"\n\n{grocker}')


def test_refresh_root_of_a_workspace_covers_the_shared_root_and_each_member_s(tmp_path: Path) -> None:
    from setuptools_grocker.pipeline.rebase import refresh_targets

    _pyproject(tmp_path, "ws", '[tool.grocker]\nbase-image = "debian:test"\n\n'
                               '[tool.grocker.workspace]\nmembers = ["apps/*"]\n')
    _pyproject(tmp_path / "apps" / "shop", "shop", '[tool.grocker.system-packages]\nrun = ["libpq5"]\n')
    _pyproject(tmp_path / "apps" / "till", "till", "")
    shared, *members = refresh_targets(tmp_path, environ={})
    assert shared.run_packages == ("libpq5",) and shared.base_image == "debian:test"
    assert sorted((m.project_dir.name, m.run_packages, m.base_image) for m in members) == [
        ("shop", ("libpq5",), "debian:test"), ("till", (), "debian:test")]
    (single,) = refresh_targets(tmp_path / "apps" / "till", environ={}, overrides={"base-image": "other:1"})
    assert single.base_image == "other:1"


def test_rebase_refuses_a_bad_tag_before_reaching_the_engine(capsys: pytest.CaptureFixture[str]) -> None:
    from setuptools_grocker.cli import main
    from setuptools_grocker.errors import ConfigError

    assert main(["rebase", "shop:1", "--tag", "Shop App:1"]) == ConfigError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("grocker: error:") and "Shop App:1" in err[0]
