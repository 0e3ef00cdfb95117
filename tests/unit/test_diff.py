from __future__ import annotations

from setuptools_grocker.image.diff import compare, parse


def test_added_removed_changed() -> None:
    a = parse(["app==1.0", "core==1.2", "six==1.16.0", "gone==0.1"])
    b = parse(["app==1.1", "core==1.2", "six==1.16.0", "idna==3.7"])
    diff = compare(a, b)
    assert diff.added == {"idna": "3.7"} and diff.removed == {"gone": "0.1"}
    assert diff.changed == {"app": ("1.0", "1.1")} and diff.unchanged == 2
    assert diff.lines() == ["+ idna 3.7", "- gone 0.1", "~ app 1.0 -> 1.1",
                            "1 added, 1 removed, 1 changed, 2 unchanged"]
    assert diff.to_json()["changed"] == {"app": {"from": "1.0", "to": "1.1"}}
