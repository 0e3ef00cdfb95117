"""What ``grocker gc`` selects (pure rules), sizes, build records on disk."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from setuptools_grocker.errors import ConfigError
from setuptools_grocker.image import records
from setuptools_grocker.image.gc import (
    CacheEntry,
    Candidate,
    GcOptions,
    cache_entries,
    parse_size,
    released_digests,
    select_caches,
    select_images,
)
from setuptools_grocker.image.records import Record

NOW = 1_800_000_000.0
OWNER = {"io.grocker.owner": "setuptools-grocker"}


def iso(seconds_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW - seconds_ago))


def runtime(image_id: str, *tags: str, layers: tuple[str, ...] = ("l-root", "l-app")) -> Candidate:
    return Candidate(image_id, tags, {**OWNER, "io.grocker.key": "k"}, layers, 100)


def record(image_id: str, status: str = "built", age: float = 60, **kw: object) -> Record:
    return Record(image_id=image_id, when=iso(age), status=status, **kw)  # type: ignore[arg-type]


ROOT = Candidate("root", ("grocker/root:abc",), OWNER, ("l-root",), 1000, created=NOW - 30 * 86400)
COMPILER = Candidate("compiler", ("grocker/compiler:def",), OWNER, ("l-root", "l-cc"), 5000, created=NOW - 30 * 86400)


def removed(*args: object, **kw: object) -> dict[str, str]:
    kw.setdefault("now", NOW)
    return {r.target: r.reason for r in select_images(*args, **kw)}  # type: ignore[arg-type]


@pytest.mark.parametrize("text, size", [("0", 0), ("2048", 2048), ("1K", 1024), ("500M", 500 * 2**20),
                                        ("10G", 10 * 2**30), ("1.5GiB", int(1.5 * 2**30)), ("2 gb", 2 * 2**30),
                                        ("1T", 2**40)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "-1G", "5X", "1.2.3M"])
def test_bad_sizes_name_the_fix(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size(text)
    assert "500M" in info.value.one_line()


def test_superseded_and_failed_go_tagged_and_recent_stay() -> None:
    images = [runtime("cur", "app:1"), runtime("old"), runtime("bad"), runtime("building"), runtime("killed")]
    recs = [record("cur"), record("old"), record("bad", "failed"), record("building", "untested", age=60),
            record("killed", "untested", age=7200)]
    got = removed(images, recs, set(), GcOptions())
    assert set(got) == {"old", "bad", "killed"}
    assert "superseded" in got["old"] and "failed" in got["bad"] and "did not finish" in got["killed"]


def test_never_a_foreign_image_a_used_one_or_a_released_one() -> None:
    foreign = Candidate("foreign", (), {"io.grocker.key": "k", "io.grocker.owner": "someone-else"}, ("x",), 1)
    unlabelled = Candidate("plain", (), {}, ("y",), 1)
    images = [foreign, unlabelled, runtime("running"), runtime("released")]
    recs = [record(i, "failed") for i in ("foreign", "plain", "running")] + [
        record("released", releases=["2026.12"])]
    assert removed(images, recs, {"running"}, GcOptions(untracked=True, base_images=True)) == {}


def test_untracked_images_go_only_when_asked() -> None:
    assert removed([runtime("stray")], [], set(), GcOptions()) == {}
    assert "untracked" in removed([runtime("stray")], [], set(), GcOptions(untracked=True))["stray"]


def test_root_and_compiler_stay_while_a_kept_image_or_a_recent_record_uses_them() -> None:
    kept = runtime("cur", "app:1")
    # The runtime image is built on the root (layers); the record of a kept image names the compiler.
    assert removed([kept, ROOT, COMPILER], [record("cur", compiler_image="compiler")], set(), GcOptions()) == {}
    # An old record of a removed image keeps neither; nothing else is built on them.
    old = [record("old", age=30 * 86400, compiler_image="compiler", root_image="root")]
    assert set(removed([runtime("old", layers=("other",)), ROOT, COMPILER], old, set(), GcOptions())) == {
        "old", "root", "compiler"}
    # A recent record (a build of last week) keeps them: the next build would make them again.
    recent = [record("old", age=86400, compiler_image="compiler", root_image="root")]
    assert set(removed([runtime("old", layers=("other",)), ROOT, COMPILER], recent, set(), GcOptions())) == {"old"}
    # The compiler is built on the root: a kept compiler (a container uses it) keeps the root.
    assert removed([ROOT, COMPILER], [], {"compiler"}, GcOptions()) == {}


def test_a_root_or_compiler_image_made_in_the_last_hour_stays() -> None:
    # Another user's build (records elsewhere) made it and is about to start its compile container.
    fresh = Candidate("new", ("grocker/compiler:fff",), OWNER, ("l-root", "l-x"), 5000, created=NOW - 600)
    assert removed([fresh], [], set(), GcOptions()) == {}
    assert set(removed([fresh], [], set(), GcOptions(), now=NOW + 7200)) == {"new"}


def test_untagged_recipe_images_go_only_with_untracked() -> None:
    stray = Candidate("stray", (), OWNER, ("l-root", "l-y"), 5000, created=NOW - 86400)
    assert removed([ROOT, stray], [], {"root"}, GcOptions()) == {}
    assert removed([ROOT, stray], [], {"root"}, GcOptions(untracked=True)) == {
        "stray": "untracked (no tag, no build record)"}


def test_removal_order_is_one_the_engine_accepts() -> None:
    order = [r.target for r in select_images([ROOT, COMPILER, runtime("old", layers=("z",))], [record("old")],
                                             set(), GcOptions(), now=NOW)]
    assert order == ["old", "compiler", "root"]


def test_base_images_only_with_the_option() -> None:
    base = Candidate("base", ("debian:bookworm-slim",), {**OWNER, "io.grocker.bootstrap": "bookworm"}, ("b",), 9)
    assert removed([base], [], set(), GcOptions()) == {}
    assert set(removed([base], [], set(), GcOptions(base_images=True))) == {"base"}
    on_it = Candidate("cur", ("app:1",), {**OWNER, "io.grocker.key": "k"}, ("b", "app"), 1)
    assert removed([base, on_it], [], set(), GcOptions(base_images=True)) == {}


def test_project_scope_sees_only_its_recorded_runtime_images(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    recs = [record("a", project=str(mine)), record("b", project=str(theirs)), record("c", workspace=str(mine))]
    images = [runtime("a"), runtime("b"), runtime("c"), runtime("stray"), ROOT, COMPILER]
    got = removed(images, recs, set(), GcOptions(project=mine, untracked=True))
    assert set(got) == {"a", "c"}


def test_caches_go_oldest_first_down_to_the_size() -> None:
    entries = [CacheEntry("blob", Path(n), size, mtime) for n, size, mtime in
               (("new", 40, 3.0), ("old", 50, 1.0), ("mid", 30, 2.0))]
    assert [r.target for r in select_caches(entries, 120)] == []
    assert [r.target for r in select_caches(entries, 70)] == ["old"]
    assert [r.target for r in select_caches(entries, 39)] == ["old", "mid", "new"]


def test_cache_entries_of_the_home_and_of_recorded_projects(tmp_path: Path) -> None:
    home, state = tmp_path / "cache", tmp_path / "proj" / ".grocker"
    for path, size in ((home / "pip" / "s1" / "w.whl", 10), (home / "blobs" / "x.tar.gz", 20),
                       (home / "bytecode" / "b.tar", 5), (home / "bytecode" / ".staging-1" / "m.py", 3),
                       (state / "wheelhouse" / "key1" / "a.whl", 7), (state / "build-env" / "e1" / "ready", 2),
                       (state / "build-env" / "member" / "e2" / "ready", 1),
                       (state / "build-env" / "member" / "e3" / "site" / "half-made.py", 1)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    (state / "wheelhouse" / ".tmp").mkdir()
    (home / "records").mkdir()
    # A build compiling bytecode right now has a staging directory there: not a cache entry.
    got = {(e.kind, e.path.name, e.size) for e in cache_entries(home, [record("i", state_dir=str(state))])}
    assert got == {("pip cache", "s1", 10), ("blob", "x.tar.gz", 20), ("bytecode cache", "b.tar", 5),
                   ("wheelhouse", "key1", 7), ("build environment", "e1", 2),
                   ("build environment", "e2", 1)}
    # Scoped to a project: its own pip cache and wheelhouses, nothing shared.
    scoped = cache_entries(home, [record("i", state_dir=str(state), project=str(tmp_path / "proj"))],
                           project=tmp_path / "proj")
    assert {e.kind for e in scoped} == {"wheelhouse", "build environment"}


def test_records_round_trip_merge_tags_and_mark_releases(tmp_path: Path) -> None:
    records.save(tmp_path, record("sha256:abc", "untested", tags=["app:1"], digest="sha256:d1"))
    assert (tmp_path / "records" / "abc.json").is_file()
    records.update(tmp_path, "sha256:abc", status="built", tags=["app:1", "app:latest"])
    found = records.find(tmp_path, "sha256:abc")
    assert found is not None and found.status == "built" and found.tags == ["app:1", "app:latest"]
    assert records.update(tmp_path, "sha256:none", status="failed") is None
    assert records.mark_released(tmp_path, ["sha256:d1", None], "r1") == 1
    assert records.mark_released(tmp_path, ["sha256:d1"], "r1") == 0
    (tmp_path / "records" / "broken.json").write_text("{not json")
    assert [r.releases for r in records.load_all(tmp_path)] == [["r1"]]


def test_an_image_a_workspace_release_document_names_stays(tmp_path: Path) -> None:
    state = tmp_path / "ws" / ".grocker"
    (state / "releases").mkdir(parents=True)
    (state / "releases" / "r1.json").write_text(
        '{"release": "r1", "applications": {"shop": {"version": "1", "digest": "sha256:d1"}}}')
    (state / "releases" / "broken.json").write_text("[")
    recs = [record("old", digest="sha256:d1", state_dir=str(state), workspace=str(tmp_path / "ws")),
            record("older", digest="sha256:d0", state_dir=str(state), workspace=str(tmp_path / "ws"))]
    assert released_digests(recs) == {"sha256:d1"}
    assert set(removed([runtime("old"), runtime("older")], recs, set(), GcOptions(),
                       released=released_digests(recs))) == {"older"}


def test_the_current_refreshed_root_and_the_root_it_refreshes_stay() -> None:
    refreshed = Candidate("refreshed", ("grocker/root:new", "grocker/root:abc-current"), OWNER, ("l-root", "l-up"),
                          1000, created=NOW - 30 * 86400)
    superseded = Candidate("superseded", ("grocker/root:older",), OWNER, ("l-root", "l-up0"), 1000,
                           created=NOW - 30 * 86400)
    got = removed([ROOT, superseded, refreshed], [], set(), GcOptions())
    assert set(got) == {"superseded"}
