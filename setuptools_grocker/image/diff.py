"""``grocker diff A B``: what changed between two images, from their SBOMs or the distributions they record.

When both images have an SBOM (the file in a local image, the attached document of a registry image:
see image/supplychain.py), the diff is read from them: the Python distributions, with the ones
*rebuilt* at the same version (an internal library whose code changed without a new version: its
wheel's sha256 differs), and the Debian packages of the root. An image without one (built by an older
grocker) falls back, for both, to the label ``io.grocker.distributions`` (the ``name==version`` of
everything in the venv), which says nothing of rebuilds and Debian packages. Either is the "what
changed, what to test" list that replaces hand-written changelogs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from setuptools_grocker.engine import Engine, labels_of
from setuptools_grocker.errors import GrockerError, RegistryError, SupplyChainError

LABEL = "io.grocker.distributions"


@dataclass
class Diff:
    """The difference of two ``name -> version`` sets (Python distributions, or Debian packages)."""

    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Same version, another wheel (sha256): rebuilt from other code. Only known from SBOMs.
    rebuilt: dict[str, str] = field(default_factory=dict)
    unchanged: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed,
                "changed": {k: {"from": a, "to": b} for k, (a, b) in self.changed.items()},
                "rebuilt": self.rebuilt, "unchanged": self.unchanged}

    def lines(self, prefix: str = "") -> list[str]:
        out = [f"+ {prefix}{n} {v}" for n, v in sorted(self.added.items())]
        out += [f"- {prefix}{n} {v}" for n, v in sorted(self.removed.items())]
        out += [f"~ {prefix}{n} {a} -> {b}" for n, (a, b) in sorted(self.changed.items())]
        out += [f"* {prefix}{n} {v} (rebuilt: another wheel)" for n, v in sorted(self.rebuilt.items())]
        return out

    def summary(self) -> str:
        rebuilt = f", {len(self.rebuilt)} rebuilt" if self.rebuilt else ""
        return (f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed{rebuilt}, "
                f"{self.unchanged} unchanged")


@dataclass
class ImageDiff:
    """``grocker diff``'s answer: the Python side always, the Debian side when both images have an SBOM."""

    python: Diff
    debian: Diff | None = None
    source: str = "labels"  # sbom | labels

    def to_json(self) -> dict[str, Any]:
        # The Python side at the top level, as before the SBOM existed (scripts read it there).
        return {**self.python.to_json(), "source": self.source,
                "debian": self.debian.to_json() if self.debian is not None else None}

    def lines(self) -> list[str]:
        out = self.python.lines()
        if self.debian is not None:
            out += self.debian.lines("deb:")
        out.append(f"python: {self.python.summary()}")
        out.append(f"debian: {self.debian.summary()}" if self.debian is not None
                   else "debian: not compared (an image has no SBOM; rebuild it with this grocker)")
        return out


def parse(distributions: list[str]) -> dict[str, str]:
    return dict(d.split("==", 1) for d in distributions if "==" in d)


def compare(a: Mapping[str, str], b: Mapping[str, str], hashes_a: Mapping[str, str | None] | None = None,
            hashes_b: Mapping[str, str | None] | None = None) -> Diff:
    """The difference from ``a`` to ``b``; with the hashes of both sides, same-version rebuilds too."""
    diff = Diff()
    for name in sorted(set(a) | set(b)):
        if name not in a:
            diff.added[name] = b[name]
        elif name not in b:
            diff.removed[name] = a[name]
        elif a[name] != b[name]:
            diff.changed[name] = (a[name], b[name])
        elif hashes_a and hashes_b and hashes_a.get(name) and hashes_b.get(name) \
                and hashes_a[name] != hashes_b[name]:
            diff.rebuilt[name] = b[name]
        else:
            diff.unchanged += 1
    return diff


def distributions_of(engine: Engine, ref: str) -> dict[str, str]:
    attrs = engine.image_attrs(ref)
    if attrs is None:
        try:
            attrs = engine.ensure_image(ref, base=False)
        except GrockerError as exc:
            raise GrockerError(f"image {ref} is not in the engine and could not be pulled",
                               "build it, or give a reference the registry has") from exc
    raw = labels_of(attrs).get(LABEL)
    if raw is None:
        raise GrockerError(f"image {ref} has no {LABEL} label: it was not built by setuptools-grocker",
                           "diff two images built by grocker")
    return parse(json.loads(raw))


@dataclass
class _Contents:
    versions: dict[str, dict[str, str]]  # kind -> name -> version
    hashes: dict[str, str | None]  # Python distribution -> wheel sha256


def _from_sbom(engine: Engine | None, ref: str) -> _Contents | None:
    """What the SBOM of ``ref`` lists; None when it has none (or it cannot be read as one)."""
    from setuptools_grocker.image.sbom import read_components
    from setuptools_grocker.image.supplychain import read_sbom

    try:
        document = read_sbom(engine, ref)
    except (SupplyChainError, RegistryError):
        return None
    versions: dict[str, dict[str, str]] = {"python": {}, "debian": {}}
    hashes: dict[str, str | None] = {}
    for c in read_components(document):
        if c.kind in versions:
            versions[c.kind][c.name] = c.version
        if c.kind == "python":
            hashes[c.name] = c.sha256
    return _Contents(versions, hashes)


def diff_images(engine: Engine, a: str, b: str) -> ImageDiff:
    """The difference from image ``a`` to image ``b`` (local, or a registry reference: see the module)."""
    first = _from_sbom(engine, a)
    second = _from_sbom(engine, b) if first is not None else None
    if first is None or second is None:
        return ImageDiff(compare(distributions_of(engine, a), distributions_of(engine, b)))
    return ImageDiff(compare(first.versions["python"], second.versions["python"], first.hashes, second.hashes),
                     compare(first.versions["debian"], second.versions["debian"]), source="sbom")
