"""The workspace's lock (pipeline/wslock.py): the applications' resolutions merged into one shared set, each
package tagged with its users; an application's subset; conflicts; what a build accepts."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from setuptools_grocker.errors import LockError
from setuptools_grocker.pipeline.workspace import why_rebuild
from setuptools_grocker.pipeline.wslock import (
    Resolution,
    conflict_pins,
    conflicts,
    parse_workspace_lock,
    read_workspace_lock,
    render_workspace_lock,
    write_workspace_lock,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64
ROOT = Path("/ws")


def _package(name: str, version: str, sha: str, marker: str | None = None,
             url: str = "https://packages.example") -> str:
    line = f'marker = "{marker}"\n' if marker else ""
    wheel = f"{url}/files/{name}-{version}-py3-none-any.whl"
    return (f'[[packages]]\nname = "{name}"\nversion = "{version}"\n{line}'
            f'wheels = [{{ url = "{wheel}", hashes = {{ sha256 = "{sha}" }} }}]\n')


def _uv(*packages: str) -> str:
    return 'lock-version = "1.0"\ncreated-by = "uv"\nrequires-python = ">=3.11"\n\n' + "\n".join(packages)


def _resolution(app: str, *packages: str, inputs: str = "sha256:in", built: tuple[str, ...] = ()) -> Resolution:
    return Resolution(app, _uv(_package(app, "1.0", H1), _package("core-lib", "0.1", H1), *packages), inputs,
                      (app, "core-lib", *built))


A = _resolution("app-a", _package("six", "1.16.0", H2), _package("idna", "3.7", H3), inputs="sha256:a")
B = _resolution("app-b", _package("six", "1.16.0", H2), inputs="sha256:b")


def test_the_shared_set_tags_each_package_with_its_applications() -> None:
    doc = tomllib.loads(render_workspace_lock({"app-b": B, "app-a": A}, ROOT))
    assert doc["lock-version"] == "1.0"
    used = {p["name"]: p["tool"]["grocker"]["used-by"] for p in doc["packages"]}
    assert used == {"idna": ["app-a"], "six": ["app-a", "app-b"]}  # built packages are never locked
    apps = doc["tool"]["grocker"]["applications"]
    assert apps == {"app-a": {"inputs": "sha256:a", "from-source": ["core-lib"]},
                    "app-b": {"inputs": "sha256:b", "from-source": ["core-lib"]}}


def test_an_applications_subset_is_what_it_uses_and_its_digest_only_those(tmp_path: Path) -> None:
    lock = write_workspace_lock(tmp_path, {"app-a": A, "app-b": B})
    assert lock.path == tmp_path / "pylock.toml" and lock.used_by("six") == ("app-a", "app-b")
    a, b = lock.subset("app-a"), lock.subset("app_b")
    assert [p.name for p in a.packages] == ["idna", "six"] and [p.name for p in b.packages] == ["six"]
    assert (a.inputs, a.from_source, b.inputs) == ("sha256:a", ("core-lib",), "sha256:b")
    assert a.path == b.path == tmp_path / "pylock.toml" and f"grocker lock {tmp_path}" in a.fix
    # Another version of a package only app-a uses: app-a's part changes, app-b's keeps its digest (and key).
    a2 = _resolution("app-a", _package("six", "1.16.0", H2), _package("idna", "3.8", H1), inputs="sha256:a")
    again = write_workspace_lock(tmp_path, {"app-a": a2, "app-b": B})
    assert again.digest != lock.digest
    assert again.subset("app-a").digest != a.digest and again.subset("app-b").digest == b.digest


def test_an_application_missing_from_the_lock_is_named(tmp_path: Path) -> None:
    lock = write_workspace_lock(tmp_path, {"app-a": A})
    with pytest.raises(LockError) as err:
        lock.subset("app-b")
    assert "no entry for the application app-b" in err.value.message and "grocker lock" in err.value.hint


def test_versions_that_differ_are_a_conflict_pinned_to_the_lowest() -> None:
    b2 = _resolution("app-b", _package("six", "1.17.0", H3), _package("idna", "3.10", H2))
    found = conflicts({"app-a": A, "app-b": b2})
    assert found == {"idna": {"app-a": "3.7", "app-b": "3.10"}, "six": {"app-a": "1.16.0", "app-b": "1.17.0"}}
    assert conflict_pins(found) == ["idna==3.7", "six==1.16.0"]  # versions compared as versions, not text
    with pytest.raises(LockError) as err:
        render_workspace_lock({"app-a": A, "app-b": b2}, ROOT)
    assert "need different versions of idna: app-a idna 3.7, app-b idna 3.10 (and 1 more" in err.value.message
    assert conflicts({"app-a": A, "app-b": B}) == {}


def test_markers_of_the_applications_are_united_and_credentials_dropped() -> None:
    a = _resolution("app-a", _package("tomli", "2.0.1", H2, "python_version < '3.11'",
                                      url="https://ci:s3cret@packages.example"))
    b = _resolution("app-b", _package("tomli", "2.0.1", H2, "sys_platform == 'win32'"))
    c = _resolution("app-c", _package("tomli", "2.0.1", H2))
    text = render_workspace_lock({"app-a": a, "app-b": b}, ROOT)
    assert "s3cret" not in text
    [tomli] = tomllib.loads(text)["packages"]
    assert tomli["marker"] == "(python_version < '3.11') or (sys_platform == 'win32')"
    [tomli] = tomllib.loads(render_workspace_lock({"app-a": a, "app-c": c}, ROOT))["packages"]
    assert "marker" not in tomli  # one application needs it everywhere


def test_a_lock_that_is_not_a_workspace_lock_is_one_line(tmp_path: Path) -> None:
    assert read_workspace_lock(tmp_path) is None
    (tmp_path / "pylock.toml").write_text('lock-version = "1.0"\n[tool.grocker]\ninputs = "sha256:x"\n')
    with pytest.raises(LockError) as err:
        read_workspace_lock(tmp_path)
    assert "is not a workspace lock" in err.value.message and f"grocker lock {tmp_path}" in err.value.hint
    text = render_workspace_lock({"app-a": A}, ROOT).replace('used-by = ["app-a"]', "")
    with pytest.raises(LockError, match="has no \\[packages.tool.grocker\\] used-by"):
        parse_workspace_lock(ROOT / "pylock.toml", text.encode(), ROOT)


def test_a_changed_lock_is_the_plans_reason() -> None:
    parts = {"tool": "t", "source": "s", "config": "c", "env": "e", "deps": {}, "lock": "l2", "key": "k2"}
    old = {"parts": {**parts, "lock": "l1", "key": "k1"}}
    assert why_rebuild(parts, old, set()) == "lock changed"
