"""`grocker sbom` / `grocker provenance`: bad input is one line and exit 19 before any engine or registry call;
the search rules and the table (no engine)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from setuptools_grocker.cli import main
from setuptools_grocker.errors import SupplyChainError
from setuptools_grocker.image.sbom import DebPackage, Found, PythonDist, make_sbom
from setuptools_grocker.image.supplychain import from_registry, parse_query, table
from setuptools_grocker.registry.attach import artifact_ref, artifact_tag


@pytest.mark.parametrize("argv", [
    ["sbom", "a:1", "b:1"],
    ["sbom", "a:1", "--repository", "127.0.0.1:5000/a"],
    ["sbom", "--find", "requests"],
    ["sbom", "--find", "requests>=2", "a:1"],
    ["sbom", "--find", "requests==", "a:1"],
    ["sbom", "--find", "==1.0", "a:1"],
])
def test_bad_input_is_one_line_and_exit_19(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == SupplyChainError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("grocker: error: ") and ";" in err[0]


def test_queries_match_python_names_normalised_and_debian_names_exactly() -> None:
    q = parse_query("Zope.Interface==6.0")
    assert q.matches(Found("python", "zope-interface", "6.0"))
    assert not q.matches(Found("python", "zope-interface", "6.1"))
    assert not q.matches(Found("base-image", "zope-interface", "6.0"))
    deb = parse_query("libssl3")
    assert deb.matches(Found("debian", "libssl3", "3.0.15-1~deb12u1"))
    assert not deb.matches(Found("debian", "libssl3t64", "3.0"))


def test_where_documents_are_read_from() -> None:
    assert from_registry("127.0.0.1:5000/shop:1", "auto") and not from_registry("shop:1", "auto")
    assert not from_registry("127.0.0.1:5000/shop:1", "engine") and from_registry("shop:1", "registry")


def test_attachment_tags_derive_from_the_image_digest() -> None:
    digest = "sha256:" + "ab" * 32
    assert artifact_tag(digest, "sbom") == "sha256-" + "ab" * 32 + ".sbom"
    assert artifact_ref("127.0.0.1:5000/shop/app:1.0", digest, "att") == \
        "127.0.0.1:5000/shop/app:sha256-" + "ab" * 32 + ".att"
    assert artifact_ref("127.0.0.1:5000/shop/app@" + digest, digest, "att").endswith(":sha256-" + "ab" * 32 + ".att")


def test_table_has_one_line_per_component(tmp_path: Path) -> None:
    document = json.loads(make_sbom(
        name="shop", version="1.0", epoch=0, base_image="debian:bookworm-slim", base_id="sha256:" + "b" * 64,
        root_id="sha256:" + "r" * 64, debs=[DebPackage("bash", "5.2", "amd64")],
        dists=[PythonDist("shop", "1.0", "0" * 64, "shop-1.0-py3-none-any.whl", True, "MIT", True),
               PythonDist("requests", "2.32.3", "1" * 64, "requests-2.32.3-py3-none-any.whl", False)]))
    lines = table(document)
    assert lines[0].split() == ["KIND", "NAME", "VERSION", "ORIGIN", "LICENCE"]
    rows = [line.split() for line in lines[1:-1]]
    assert ["debian", "bash", "5.2", "-", "-"] in rows
    assert ["python", "shop", "1.0", "internal", "MIT"] in rows
    assert ["python", "requests", "2.32.3", "third-party", "-"] in rows
    assert lines[-1] == "shop 1.0: 2 Python distributions, 1 Debian packages"
