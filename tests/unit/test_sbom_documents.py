"""The SBOM and provenance documents, built from plain values (no engine): content, reproducibility, no secrets."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

from setuptools_grocker.image.sbom import (
    DebPackage,
    PythonDist,
    make_sbom,
    parse_dpkg_status,
    prepare,
    python_dists,
    read_components,
)
from setuptools_grocker.pipeline.provenance import PREDICATE_TYPE, STATEMENT_TYPE, scrub_url, statement

STATUS = """\
Package: libyaml-0-2
Status: install ok installed
Architecture: amd64
Source: libyaml
Version: 0.2.5-1
Description: Fast YAML 1.1 parser and emitter library
 libyaml is a C library for parsing and emitting data in YAML 1.1,
 Package: not-a-package

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
"""


def wheel(root: Path, name: str, version: str, meta: str = "") -> Path:
    path = root / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}-{version}.dist-info/METADATA",
                    f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n{meta}")
    return path


def dists(tmp_path: Path) -> list[PythonDist]:
    wheels = [wheel(tmp_path, "Shop_App", "1.0", "License-Expression: MIT OR Apache-2.0\n"),
              wheel(tmp_path, "requests", "2.32.0", "License: Apache 2.0\n"),
              wheel(tmp_path, "certifi", "2024.1", "Classifier: License :: OSI Approved :: "
                                                   "Mozilla Public License 2.0 (MPL 2.0)\n"),
              wheel(tmp_path, "nolicence", "0.1", "License: UNKNOWN\n")]
    return python_dists(reversed(wheels), internal=["shop-app"])


def test_dpkg_status_lists_installed_packages_only() -> None:
    packages = parse_dpkg_status(STATUS)
    assert packages == [DebPackage("bash", "5.2.15-2+b2", "amd64", None),
                        DebPackage("libyaml-0-2", "0.2.5-1", "amd64", "libyaml")]


def test_python_distributions_from_wheels(tmp_path: Path) -> None:
    found = {d.name: d for d in dists(tmp_path)}
    assert list(found) == ["certifi", "nolicence", "requests", "shop-app"]
    assert found["shop-app"].internal and not found["requests"].internal
    assert (found["shop-app"].licence, found["shop-app"].expression) == ("MIT OR Apache-2.0", True)
    assert found["requests"].licence == "Apache 2.0"
    assert found["certifi"].licence == "Mozilla Public License 2.0 (MPL 2.0)"
    assert found["nolicence"].licence is None
    whl = tmp_path / "requests-2.32.0-py3-none-any.whl"
    assert found["requests"].sha256 == hashlib.sha256(whl.read_bytes()).hexdigest()


def test_a_wheel_from_the_index_is_the_same_component_as_the_one_built_here(tmp_path: Path) -> None:
    """The wheel index names a library's wheel with a build tag (its key); the machine that built it has the
    same bytes without one: the SBOM, inside the image, must not tell them apart (the same image digest)."""
    built = wheel(tmp_path, "shop_lib", "1.0")
    fetched = tmp_path / "index" / "shop_lib-1.0-1367fd392b9c3-py3-none-any.whl"
    fetched.parent.mkdir()
    fetched.write_bytes(built.read_bytes())
    here, there = python_dists([built], internal=["shop-lib"]), python_dists([fetched], internal=["shop-lib"])
    assert here == there
    assert here[0].wheel == "shop_lib-1.0-py3-none-any.whl"


def sbom(tmp_path: Path, epoch: int = 1_700_000_000) -> bytes:
    return make_sbom(name="shop-app", version="1.0", dists=dists(tmp_path), debs=parse_dpkg_status(STATUS),
                     base_image="debian:bookworm-slim", base_id="sha256:" + "b" * 64, root_id="sha256:" + "r" * 64,
                     epoch=epoch)


def test_sbom_is_cyclonedx_with_every_component(tmp_path: Path) -> None:
    document = json.loads(sbom(tmp_path))
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    assert document["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    assert document["metadata"]["component"]["name"] == "shop-app"
    refs = {c["bom-ref"] for c in document["components"]}
    assert "pkg:pypi/requests@2.32.0" in refs
    assert "pkg:deb/debian/libyaml-0-2@0.2.5-1?arch=amd64&upstream=libyaml" in refs
    found = {(c.kind, c.name): c for c in read_components(document)}
    assert set(found) == {("base-image", "debian:bookworm-slim"), ("python", "certifi"), ("python", "nolicence"),
                          ("python", "requests"), ("python", "shop-app"), ("debian", "bash"),
                          ("debian", "libyaml-0-2")}
    assert found[("python", "shop-app")].internal and not found[("python", "requests")].internal
    assert found[("python", "shop-app")].licence == "MIT OR Apache-2.0"
    assert found[("python", "requests")].sha256 is not None
    # The image depends on each component.
    image_deps = next(d for d in document["dependencies"] if d["ref"] == document["metadata"]["component"]["bom-ref"])
    assert len(image_deps["dependsOn"]) == len(document["components"])


def test_sbom_is_reproducible_and_its_serial_follows_the_inputs(tmp_path: Path) -> None:
    one, two = sbom(tmp_path), sbom(tmp_path)
    assert one == two
    other = json.loads(sbom(tmp_path, epoch=1_700_000_001))
    assert other["serialNumber"] != json.loads(one)["serialNumber"]
    assert json.loads(one)["serialNumber"].startswith("urn:uuid:")


def test_a_root_part_made_ahead_gives_the_same_bytes_and_serves_once(tmp_path: Path) -> None:
    """The image stage's SBOM with its root part made while the compile container works (``prepare``): the same
    bytes as one made at once; a part made for another root or base is not used."""
    alone = sbom(tmp_path)
    prepare(debs=parse_dpkg_status(STATUS), base_image="debian:bookworm-slim", base_id="sha256:" + "b" * 64)
    assert sbom(tmp_path) == alone
    prepare(debs=parse_dpkg_status(STATUS)[:1], base_image="debian:bookworm-slim", base_id="sha256:" + "b" * 64)
    prepare(debs=parse_dpkg_status(STATUS), base_image="debian:trixie", base_id="sha256:" + "b" * 64)
    assert sbom(tmp_path) == alone  # neither matches: made afresh
    assert json.loads(sbom(tmp_path))["components"] == json.loads(alone)["components"]


def provenance(pip_env: dict[str, str]) -> dict[str, Any]:
    return statement(name="shop-app", version="1.0", image_id="sha256:" + "1" * 64, layers=["sha256:" + "2" * 64],
                     config={"python": "3"}, extras=["web"], key="k" * 64, source_digest="s" * 64,
                     revision="abc123-dirty", pip_env=pip_env, plugins=[{"name": "p", "origin": "config"}],
                     internal={"shop-lib": {"revision": "def456", "cacheKey": "c" * 64}},
                     images={"root": "sha256:" + "3" * 64, "compiler": "sha256:" + "4" * 64, "base": None},
                     tool="0.2.0", finished="2026-12-07T00:00:00+00:00", sbom_sha256="5" * 64)


def test_provenance_is_an_in_toto_slsa_statement() -> None:
    document = provenance({})
    assert (document["_type"], document["predicateType"]) == (STATEMENT_TYPE, PREDICATE_TYPE)
    assert document["subject"][0]["digest"] == {"sha256": "1" * 64}
    deps = {d["name"]: d for d in document["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["source"]["digest"] == {"sha256": "s" * 64, "gitCommit": "abc123"}
    assert deps["source"]["annotations"] == {"revision": "abc123-dirty"}
    assert deps["internal:shop-lib"]["digest"] == {"gitCommit": "def456"}
    assert deps["internal:shop-lib"]["annotations"]["cacheKey"] == "c" * 64
    assert deps["root-image"]["digest"] == {"sha256": "3" * 64} and "base-image" not in deps
    run = document["predicate"]["runDetails"]
    assert run["builder"]["builderDependencies"][0]["name"] == "plugin:p"
    assert {b["name"] for b in run["byproducts"]} == {"layer-0", "sbom"}


def test_provenance_never_holds_credentials_of_urls() -> None:
    document = provenance({"PIP_INDEX_URL": "https://user:t0ken@index.example/simple/?access_token=qq#frag",
                           "PIP_EXTRA_INDEX_URL": "https://__token__:pypi-AgE@a.example:8443/s http://b.example/s",
                           "PIP_PROXY": "http://proxyuser:proxypass@proxy.example:3128",
                           "UV_INDEX_INTERNAL_PASSWORD": "hunter2-pass", "UV_INDEX_INTERNAL_USERNAME": "ci"})
    text = json.dumps(document)
    for secret in ("t0ken", "access_token", "qq", "pypi-AgE", "__token__", "proxypass", "proxyuser", "frag",
                   "hunter2"):
        assert secret not in text
    pip = next(d for d in document["predicate"]["buildDefinition"]["resolvedDependencies"]
               if d["name"] == "pip-configuration")["annotations"]
    assert pip["PIP_INDEX_URL"] == "https://index.example/simple/"
    assert pip["PIP_EXTRA_INDEX_URL"] == "https://a.example:8443/s http://b.example/s"
    assert pip["UV_INDEX_INTERNAL_PASSWORD"] == "***" and pip["UV_INDEX_INTERNAL_USERNAME"] == "ci"
    assert scrub_url("/opt/wheels") == "/opt/wheels"
    assert scrub_url("http://[::1]:80/x?y") == "http://[::1]:80/x"


def test_the_sbom_names_the_base_by_its_content_not_by_base_image() -> None:
    from setuptools_grocker.image.runtime import base_name

    bootstrapped = {"Config": {"Labels": {"io.grocker.bootstrap": "bookworm"}}}
    assert base_name(bootstrapped) == "debian:bookworm"
    assert base_name({"Config": {"Labels": None}}) == base_name(None) == "base-image"
