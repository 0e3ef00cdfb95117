"""``grocker diff A B``: what changed between two images, from the distributions they record.

Every runtime image carries the label ``io.grocker.distributions`` (the ``name==version``
of everything in its venv); the diff of two such lists is the "what changed, what to
test" list that replaces hand-written changelogs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from setuptools_grocker.engine import Engine, labels_of
from setuptools_grocker.errors import GrockerError

LABEL = "io.grocker.distributions"


@dataclass
class Diff:
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    unchanged: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed,
                "changed": {k: {"from": a, "to": b} for k, (a, b) in self.changed.items()},
                "unchanged": self.unchanged}

    def lines(self) -> list[str]:
        out = [f"+ {n} {v}" for n, v in sorted(self.added.items())]
        out += [f"- {n} {v}" for n, v in sorted(self.removed.items())]
        out += [f"~ {n} {a} -> {b}" for n, (a, b) in sorted(self.changed.items())]
        out.append(f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed, "
                   f"{self.unchanged} unchanged")
        return out


def parse(distributions: list[str]) -> dict[str, str]:
    return dict(d.split("==", 1) for d in distributions if "==" in d)


def compare(a: dict[str, str], b: dict[str, str]) -> Diff:
    diff = Diff()
    for name in sorted(set(a) | set(b)):
        if name not in a:
            diff.added[name] = b[name]
        elif name not in b:
            diff.removed[name] = a[name]
        elif a[name] != b[name]:
            diff.changed[name] = (a[name], b[name])
        else:
            diff.unchanged += 1
    return diff


def distributions_of(engine: Engine, ref: str) -> dict[str, str]:
    attrs = engine.image_attrs(ref)
    if attrs is None:
        try:
            attrs = engine.ensure_image(ref)
        except GrockerError as exc:
            raise GrockerError(f"image {ref} is not in the engine and could not be pulled",
                               "build it, or give a reference the registry has") from exc
    raw = labels_of(attrs).get(LABEL)
    if raw is None:
        raise GrockerError(f"image {ref} has no {LABEL} label: it was not built by setuptools-grocker",
                           "diff two images built by grocker")
    return parse(json.loads(raw))


def diff_images(engine: Engine, a: str, b: str) -> Diff:
    return compare(distributions_of(engine, a), distributions_of(engine, b))
