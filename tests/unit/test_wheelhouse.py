"""The wheel index client against stub indexes on 127.0.0.1/127.0.0.2: what a hostile index cannot do.

Nothing is written outside the wheel directory, a link is taken by its href's own file name,
the index's hash and the wheel's own content are checked, and credentials go to the index's
own origin only, never into a stored or printed URL.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Iterator

import pytest

from setuptools_grocker.errors import WheelIndexError
from setuptools_grocker.registry.wheelhouse import WheelIndex, build_tag, open_index, public_url, tagged_name
from tests.stub_index import StubIndex, files_under, make_wheel, sha256

KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90" * 2
OTHER_KEY = "f" * 64
NAME, VERSION = "core-lib", "1.2.0"
GOOD = f"core_lib-1.2.0-{build_tag(KEY)}-py3-none-any.whl"
TOKEN = "s3cr3t-t0ken-value"


@pytest.fixture
def stub() -> Iterator[StubIndex]:
    with StubIndex() as s:
        yield s


@pytest.fixture
def elsewhere() -> Iterator[StubIndex]:
    """Another host (127.0.0.2): it must never see the index's credentials."""
    with StubIndex("127.0.0.2") as s:
        yield s


def serve(stub: StubIndex, data: bytes, *, text: str = GOOD, href: str | None = None, digest: str | None = None,
          fragment: str | None = None) -> None:
    stub.file(f"/packages/{GOOD}", data)
    href = href if href is not None else f"../../packages/{GOOD}"
    frag = fragment if fragment is not None else f"sha256={digest or sha256(data)}"
    stub.page(NAME, [(text, f"{href}#{frag}" if frag else href)])


def fetch(index: WheelIndex, dest: Path) -> Path:
    found = index.find(NAME, VERSION, KEY)
    assert found is not None
    return index.download(found, dest, NAME, VERSION, KEY)


def test_a_good_wheel_is_found_checked_and_written_under_grockers_own_name(stub: StubIndex, tmp_path: Path) -> None:
    data = make_wheel(NAME, VERSION)
    serve(stub, data)
    dest = tmp_path / "wheels"
    found = WheelIndex(stub.url).find(NAME, VERSION, KEY)
    assert found is not None and found.filename == GOOD and found.hash_name == "sha256"
    assert found.public == f"{stub.url}/packages/{GOOD}"
    path = WheelIndex(stub.url).download(found, dest, NAME, VERSION, KEY)
    assert path == dest / GOOD and path.read_bytes() == data
    assert files_under(tmp_path) == {f"wheels/{GOOD}"}


def test_builds_of_other_keys_and_other_files_are_ignored(stub: StubIndex) -> None:
    other = f"core_lib-1.2.0-{build_tag(OTHER_KEY)}-py3-none-any.whl"
    stub.page(NAME, [(other, f"../../packages/{other}#sha256={'0' * 64}"),
                     ("core-lib-1.2.0.tar.gz", "../../packages/core-lib-1.2.0.tar.gz#sha256=" + "0" * 64),
                     ("core_lib-1.2.0-py3-none-any.whl", "../../packages/core_lib-1.2.0-py3-none-any.whl")])
    assert WheelIndex(stub.url).find(NAME, VERSION, KEY) is None


HOSTILE_LINKS = {
    # The href decides what is fetched; a link whose text and file differ is a lie.
    "href-traversal": (GOOD, "../../../../../../evil.whl"),
    "encoded-traversal": (GOOD, "%2e%2e%2f%2e%2e%2f%2e%2e%2fevil.whl"),
    "encoded-traversal-same-name": (GOOD, "%2e%2e%2f%2e%2e%2f" + GOOD),
    "text-traversal": ("../../../" + GOOD, "../../../" + GOOD),
    "encoded-both": ("../../" + GOOD, "..%2f..%2f" + GOOD),
    "backslash": ("..\\..\\" + GOOD, "..%5c..%5c" + GOOD),
    "text-differs-from-href": (GOOD, f"../../packages/core_lib-1.2.0-{build_tag(OTHER_KEY)}-py3-none-any.whl"),
    "wrong-build-tag-in-href": (GOOD, f"core_lib-1.2.0-{build_tag(OTHER_KEY)}-py3-none-any.whl"),
    "href-names-another-project": (GOOD, f"../../packages/evil-1.2.0-{build_tag(KEY)}-py3-none-any.whl"),
    "file-scheme": (GOOD, f"file:///etc/{GOOD}"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LINKS))
def test_a_lying_link_is_refused_and_nothing_is_written(case: str, stub: StubIndex, tmp_path: Path) -> None:
    text, href = HOSTILE_LINKS[case]
    data = make_wheel(NAME, VERSION)
    stub.file("/evil.whl", data)
    serve(stub, data, text=text, href=href)
    work = tmp_path / "a" / "b" / "c" / "ws"
    dest = work / ".grocker" / "wheels" / NAME / ".tmp" / "fetch-1" / "wheels"
    dest.mkdir(parents=True)
    with pytest.raises(WheelIndexError) as err:
        fetch(WheelIndex(stub.url), dest)
    assert "\n" not in str(err.value) and err.value.exit_code == 14
    assert "nothing was downloaded" in str(err.value)
    assert files_under(tmp_path) == set()
    assert [s.path for s in stub.seen] == [f"/simple/{NAME}/"]  # the page only, no file


def test_a_link_without_a_hash_is_refused(stub: StubIndex, tmp_path: Path) -> None:
    serve(stub, make_wheel(NAME, VERSION), fragment="")
    with pytest.raises(WheelIndexError, match="no sha256 hash for " + GOOD):
        fetch(WheelIndex(stub.url), tmp_path)
    serve(stub, make_wheel(NAME, VERSION), fragment="md5=" + "0" * 32)
    with pytest.raises(WheelIndexError, match="no sha256 hash"):
        fetch(WheelIndex(stub.url), tmp_path)
    assert files_under(tmp_path) == set()


@pytest.mark.parametrize("case", ["wrong-sha256", "corrupt-record", "other-project-inside", "other-build-inside",
                                  "not-a-zip"])
def test_a_wheel_that_does_not_check_out_is_rejected_and_removed(case: str, stub: StubIndex, tmp_path: Path) -> None:
    data = {
        "wrong-sha256": make_wheel(NAME, VERSION),
        "corrupt-record": make_wheel(NAME, VERSION, corrupt_record=True),
        "other-project-inside": make_wheel(NAME, VERSION, metadata_name="evil"),
        "other-build-inside": make_wheel(NAME, VERSION, wheel_build=build_tag(OTHER_KEY)),
        "not-a-zip": b"#!/bin/sh\nrm -rf /\n",
    }[case]
    serve(stub, data, digest=sha256(b"something else") if case == "wrong-sha256" else None)
    with pytest.raises(WheelIndexError) as err:
        fetch(WheelIndex(stub.url), tmp_path / "wheels")
    assert "\n" not in str(err.value) and "it was not used" in str(err.value)
    assert files_under(tmp_path) == set()


def test_pages_never_follow_a_redirect_to_another_host(stub: StubIndex, elsewhere: StubIndex) -> None:
    from tests.stub_index import Response

    # pypiserver's fallback sends unknown names to another index: not where our builds are.
    stub.routes[f"/simple/{NAME}/"] = Response(303, b"", {"Location": f"{elsewhere.url}/simple/{NAME}/"})
    elsewhere.page(NAME, [(GOOD, f"{GOOD}#sha256={'0' * 64}")])
    assert WheelIndex(stub.url, auth=None).find(NAME, VERSION, KEY) is None
    assert elsewhere.seen == []


def test_credentials_go_to_the_index_only(stub: StubIndex, elsewhere: StubIndex, tmp_path: Path) -> None:
    from tests.stub_index import Response

    data = make_wheel(NAME, VERSION)
    # The page is on the index, the file on another host (allowed: the hash checks it), and
    # the index redirects there too.
    elsewhere.file(f"/files/{GOOD}", data)
    stub.page(NAME, [(GOOD, f"{elsewhere.url}/files/{GOOD}#sha256={sha256(data)}")])
    index = open_index(stub.url, environ={"GROCKER_WORKSPACE_INDEX_URL": stub.url.replace("//", f"//ci:{TOKEN}@")})
    assert index is not None
    assert fetch(index, tmp_path).read_bytes() == data
    expected = "Basic " + base64.b64encode(f"ci:{TOKEN}".encode()).decode()
    assert [s.authorization for s in stub.seen] == [expected]
    assert [s.authorization for s in elsewhere.seen] == [None]
    # A redirect from the index to another host: followed for a file (the hash checks it), without credentials.
    stub.seen.clear()
    elsewhere.seen.clear()
    stub.routes[f"/packages/{GOOD}"] = Response(302, b"", {"Location": f"{elsewhere.url}/files/{GOOD}"})
    serve_page_only(stub, data)
    assert fetch(index, tmp_path / "again").read_bytes() == data
    assert [(s.path, s.authorization) for s in stub.seen] == [(f"/simple/{NAME}/", expected),
                                                              (f"/packages/{GOOD}", expected)]
    assert [s.authorization for s in elsewhere.seen] == [None]


def serve_page_only(stub: StubIndex, data: bytes) -> None:
    stub.page(NAME, [(GOOD, f"../../packages/{GOOD}#sha256={sha256(data)}")])


def test_same_origin_redirects_keep_the_credentials(stub: StubIndex, tmp_path: Path) -> None:
    from tests.stub_index import Response

    data = make_wheel(NAME, VERSION)
    stub.routes[f"/packages/{GOOD}"] = Response(302, b"", {"Location": f"/real/{GOOD}"})
    stub.file(f"/real/{GOOD}", data)
    serve_page_only(stub, data)
    index = WheelIndex(stub.url.replace("//", f"//ci:{TOKEN}@"))  # the library takes userinfo, keeps it apart
    assert TOKEN not in index.url and TOKEN not in repr(index.auth)
    assert fetch(index, tmp_path).read_bytes() == data
    assert [s.path for s in stub.seen] == [f"/simple/{NAME}/", f"/packages/{GOOD}", f"/real/{GOOD}"]
    assert all(s.authorization for s in stub.seen)


def test_credentials_on_the_command_line_or_in_a_file_are_refused() -> None:
    for kwargs in ({"url": f"https://ci:{TOKEN}@127.0.0.1:1/"}, {"url": f"https://:{TOKEN}@127.0.0.1:1/"},
                   {"url": None, "configured": f"https://{TOKEN}@127.0.0.1:1/"}):
        with pytest.raises(WheelIndexError) as err:
            open_index(environ={}, **kwargs)  # type: ignore[arg-type]
        assert TOKEN not in str(err.value) and "GROCKER_WORKSPACE_INDEX_URL" in str(err.value)
        assert err.value.exit_code == 14


def test_where_the_url_and_its_credentials_come_from(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login robot password {TOKEN}-netrc\n")
    env_url = f"http://ci:{TOKEN}@127.0.0.1:8080/"
    # The environment variable alone: URL and credentials.
    index = open_index(None, environ={"GROCKER_WORKSPACE_INDEX_URL": env_url})
    assert index is not None and index.url == "http://127.0.0.1:8080" and index.auth is not None
    assert (index.auth.username, index.auth.password) == ("ci", TOKEN)
    # --wheel-index for the same origin takes the variable's credentials; it wins over the file.
    index = open_index("http://127.0.0.1:8080/simple/", environ={"GROCKER_WORKSPACE_INDEX_URL": env_url},
                       configured="http://127.0.0.1:9/")
    assert index is not None and index.url == "http://127.0.0.1:8080" and index.auth is not None
    assert index.auth.password == TOKEN
    # Another port is another origin: not the variable's credentials, the netrc's.
    index = open_index("http://127.0.0.1:8081", environ={"GROCKER_WORKSPACE_INDEX_URL": env_url,
                                                         "NETRC": str(netrc)})
    assert index is not None and index.auth is not None
    assert (index.auth.username, index.auth.password) == ("robot", f"{TOKEN}-netrc")
    # ~/.netrc through HOME; no credentials when it has none for the host.
    (tmp_path / ".netrc").write_text(netrc.read_text())
    assert open_index("http://127.0.0.1:1", environ={"HOME": str(tmp_path)}).auth is not None  # type: ignore[union-attr]
    assert open_index("http://127.0.0.2:1", environ={"HOME": str(tmp_path)}).auth is None  # type: ignore[union-attr]
    assert open_index(None, environ={}) is None


def test_a_broken_netrc_is_named_without_its_content(tmp_path: Path) -> None:
    (tmp_path / ".netrc").write_text(f"machine 127.0.0.1 login robot password\n{TOKEN} macdef\n")
    with pytest.raises(WheelIndexError) as err:
        open_index("http://127.0.0.1:1", environ={"HOME": str(tmp_path)})
    assert TOKEN not in str(err.value) and ".netrc" in str(err.value)


def test_bad_index_urls_are_one_line_errors() -> None:
    for url in ("ftp://127.0.0.1/", "127.0.0.1:8080", "http://127.0.0.1:99999/",
                f"http://127.0.0.1/simple?private_token={TOKEN}"):
        with pytest.raises(WheelIndexError) as err:
            open_index(url, environ={})
        assert TOKEN not in str(err.value) and "\n" not in str(err.value)


def test_public_url_and_tagged_name() -> None:
    assert public_url(f"https://u:{TOKEN}@h:8443/p/x.whl?X-Amz-Signature={TOKEN}#sha256=00") == "https://h:8443/p/x.whl"
    assert tagged_name("Core.Lib-1.2.0-py3-none-any.whl", KEY) == GOOD
    assert tagged_name(f"core_lib-1.2.0-{build_tag(OTHER_KEY)}-py3-none-any.whl", KEY) == GOOD
    for bad in ("../core_lib-1.2.0-py3-none-any.whl", "core_lib-1.2.0-py3-none-a/y.whl", "x.whl"):
        with pytest.raises(WheelIndexError):
            tagged_name(bad, KEY)


def test_an_index_that_needs_credentials_says_where_to_put_them(stub: StubIndex) -> None:
    from tests.stub_index import Response

    stub.routes[f"/simple/{NAME}/"] = Response(401, b"", {"WWW-Authenticate": 'Basic realm="pypi"'})
    with pytest.raises(WheelIndexError, match="HTTP 401.*GROCKER_WORKSPACE_INDEX_URL"):
        WheelIndex(stub.url).find(NAME, VERSION, KEY)
