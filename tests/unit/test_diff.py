from __future__ import annotations

from setuptools_grocker.image.diff import ImageDiff, compare, parse


def test_added_removed_changed() -> None:
    a = parse(["app==1.0", "core==1.2", "six==1.16.0", "gone==0.1"])
    b = parse(["app==1.1", "core==1.2", "six==1.16.0", "idna==3.7"])
    diff = compare(a, b)
    assert diff.added == {"idna": "3.7"} and diff.removed == {"gone": "0.1"}
    assert diff.changed == {"app": ("1.0", "1.1")} and diff.unchanged == 2
    assert ImageDiff(diff).lines() == [
        "+ idna 3.7", "- gone 0.1", "~ app 1.0 -> 1.1", "python: 1 added, 1 removed, 1 changed, 2 unchanged",
        "debian: not compared (an image has no SBOM; rebuild it with this grocker)"]
    assert diff.to_json()["changed"] == {"app": {"from": "1.0", "to": "1.1"}}


def test_same_version_another_wheel_is_a_rebuild_only_when_both_hashes_are_known() -> None:
    a, b = {"core": "1.2", "six": "1.16.0"}, {"core": "1.2", "six": "1.16.0"}
    diff = compare(a, b, {"core": "aa", "six": "cc"}, {"core": "bb", "six": "cc"})
    assert diff.rebuilt == {"core": "1.2"} and diff.unchanged == 1
    assert compare(a, b, {"core": "aa"}, {"core": None}).rebuilt == {}  # unknown: not claimed


def test_sbom_diff_reports_debian_packages_and_keeps_the_python_keys_at_the_top() -> None:
    python = compare({"app": "1.0"}, {"app": "1.0"}, {"app": "aa"}, {"app": "bb"})
    debian = compare({"libssl3": "3.0.11-1~deb12u1", "zlib1g": "1:1.2.13"},
                     {"libssl3": "3.0.15-1~deb12u1", "zlib1g": "1:1.2.13"})
    result = ImageDiff(python, debian, source="sbom")
    assert result.lines() == ["* app 1.0 (rebuilt: another wheel)",
                              "~ deb:libssl3 3.0.11-1~deb12u1 -> 3.0.15-1~deb12u1",
                              "python: 0 added, 0 removed, 0 changed, 1 rebuilt, 0 unchanged",
                              "debian: 0 added, 0 removed, 1 changed, 1 unchanged"]
    data = result.to_json()
    assert data["rebuilt"] == {"app": "1.0"} and data["source"] == "sbom"
    assert data["debian"]["changed"] == {"libssl3": {"from": "3.0.11-1~deb12u1", "to": "3.0.15-1~deb12u1"}}
