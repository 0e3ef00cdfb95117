"""ImageRef: one way to split ``[host[:port]/]repository[:tag][@digest]``."""
from __future__ import annotations

import pytest

from setuptools_grocker.errors import ConfigError, RegistryError
from setuptools_grocker.ref import ImageRef, parse_reference
from setuptools_grocker.registry.client import _registry_ref, _url

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, repository, host, path, tag, digest", [
    ("app", "app", None, "app", None, None),
    ("app:1.0", "app", None, "app", "1.0", None),
    ("team/app:1.0", "team/app", None, "team/app", "1.0", None),
    # A port is not a tag: the tag follows the last ':' after the last '/'.
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app", "127.0.0.1:5000", "app", None, None),
    ("127.0.0.1:5000/team/app:k0123", "127.0.0.1:5000/team/app", "127.0.0.1:5000", "team/app", "k0123", None),
    ("localhost/app:2", "localhost/app", "localhost", "app", "2", None),
    ("localhost:5000/app", "localhost:5000/app", "localhost:5000", "app", None, None),
    ("registry.local/app", "registry.local/app", "registry.local", "app", None, None),
    # A first component without '.', ':' or 'localhost' is part of the path (Docker Hub style).
    ("team/app", "team/app", None, "team/app", None, None),
    (f"127.0.0.1:5000/app@{DIGEST}", "127.0.0.1:5000/app", "127.0.0.1:5000", "app", None, DIGEST),
    (f"127.0.0.1:5000/app:1.0@{DIGEST}", "127.0.0.1:5000/app", "127.0.0.1:5000", "app", "1.0", DIGEST),
    (f"app@{DIGEST}", "app", None, "app", None, DIGEST),
])
def test_parse_splits_every_part(text: str, repository: str, host: str | None, path: str, tag: str | None,
                                 digest: str | None) -> None:
    ref = ImageRef.parse(text)
    assert (ref.repository, ref.host, ref.path, ref.tag, ref.digest) == (repository, host, path, tag, digest)
    assert str(ref) == text


def test_reference_is_what_the_registry_names_a_manifest_by() -> None:
    assert ImageRef.parse("h.local/app").reference == "latest"
    assert ImageRef.parse("h.local/app:1").reference == "1"
    assert ImageRef.parse(f"h.local/app:1@{DIGEST}").reference == DIGEST


def test_with_tag_keeps_host_and_port_and_drops_the_digest() -> None:
    assert str(ImageRef.parse("127.0.0.1:5000/app:1.0").with_tag("k00")) == "127.0.0.1:5000/app:k00"
    assert str(ImageRef.parse("127.0.0.1:5000/app").with_tag("x")) == "127.0.0.1:5000/app:x"
    assert str(ImageRef.parse(f"localhost:5000/a/b:1@{DIGEST}").with_tag("2")) == "localhost:5000/a/b:2"


@pytest.mark.parametrize("text", ["app:1.0", "registry.local:5000/team/app:1.0-abc", "app", "127.0.0.1:5000/a:b",
                                  "localhost/app", "localhost:5000/app:latest"])
def test_valid_references(text: str) -> None:
    assert str(parse_reference(text)) == text


@pytest.mark.parametrize("text", ["App:1", "app:1+local", "app:", "a b:1", "", "127.0.0.1:5000/", "app@",
                                  "127.0.0.1:5000/App:1", "app:-x", f"app:1@{DIGEST}", "app@sha256:short"])
def test_invalid_references_give_the_one_line_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_reference(text)
    assert info.value.one_line() == (
        f"image reference {text!r} is not valid; "
        "use NAME:TAG with a lowercase name and a tag of letters, digits, '_', '.', '-'")
    assert "\n" not in info.value.one_line()


def test_a_digest_is_taken_where_asked_for() -> None:
    assert parse_reference(f"127.0.0.1:5000/app@{DIGEST}", digest=True).digest == DIGEST
    with pytest.raises(ConfigError):
        parse_reference("app@sha256:short", digest=True)


def test_registry_urls_are_built_from_the_parts() -> None:
    r, host = _registry_ref(f"127.0.0.1:5000/team/app:1@{DIGEST}")
    assert _url(host, r, "manifests", r.reference) == f"http://127.0.0.1:5000/v2/team/app/manifests/{DIGEST}"
    r, host = _registry_ref("registry.local:443/app:1")
    assert _url(host, r, "blobs", "uploads/") == "https://registry.local:443/v2/app/blobs/uploads/"


@pytest.mark.parametrize("text", ["app:1", "team/app:1"])
def test_a_reference_without_a_registry_is_refused_for_registry_calls(text: str) -> None:
    with pytest.raises(RegistryError, match="names no registry"):
        _registry_ref(text)
