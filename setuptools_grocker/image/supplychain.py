"""``grocker sbom`` and ``grocker provenance``: read an image's documents from the engine or its registry,
and find the images that hold a package.

Where they are read (``where``): ``engine`` reads the SBOM from the file in the image (sbom.py's
``SBOM_PATH``) and the provenance from this cache home's records (it names the image ID, so it is not in
the image); ``registry`` reads the documents attached next to the image (registry/attach.py). ``auto``
(the default) asks the registry when the reference names a registry host, else the engine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from packaging.utils import canonicalize_name

from setuptools_grocker.errors import RegistryError, SupplyChainError
from setuptools_grocker.image.records import find_provenance
from setuptools_grocker.image.sbom import SBOM_PATH, Found, read_components
from setuptools_grocker.ref import ImageRef

if TYPE_CHECKING:
    from setuptools_grocker.engine import Engine

__all__ = ["WHERE", "Match", "Query", "find", "from_registry", "parse_query", "read_provenance", "read_sbom",
           "read_sbom_bytes", "release_images", "repository_images", "table"]

WHERE = ("auto", "engine", "registry")
OLDER = "rebuild it with this version of setuptools-grocker (and push it again)"


def from_registry(ref: str, where: str) -> bool:
    """Whether ``ref`` is read from its registry (else from the engine) for ``where`` (see the module)."""
    return where == "registry" or (where == "auto" and ImageRef.parse(ref).host is not None)


def _parse(data: bytes, ref: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise SupplyChainError(f"the {what} of {ref} is not JSON", OLDER) from exc
    if not isinstance(document, dict):
        raise SupplyChainError(f"the {what} of {ref} is not a JSON object", OLDER)
    return document


def _registry_bytes(ref: str, kind: str, what: str) -> bytes:
    from setuptools_grocker.registry.attach import artifact_tag, read_artifact

    try:
        data = read_artifact(ref, kind)
    except RegistryError as exc:
        raise RegistryError(f"reading the {what} of {ref} from its registry: {exc.message}",
                            f"{exc.hint}; or read the local image with --from engine" if exc.hint
                            else "read the local image with --from engine") from exc
    if data is None:
        raise SupplyChainError(f"{ref} has no {what} in its registry (no tag {artifact_tag('sha256:<hex>', kind)})",
                               "pushed by an older grocker or another tool; push it again with grocker")
    return data


def read_sbom_bytes(engine: Engine | None, ref: str, where: str = "auto") -> bytes:
    """The CycloneDX SBOM of the image ``ref`` as stored; SupplyChainError when it has none."""
    if from_registry(ref, where):
        return _registry_bytes(ref, "sbom", "SBOM")
    if engine is None or engine.image_id(ref) is None:
        raise SupplyChainError(f"image {ref} is not in the engine",
                               "check the name, or read it from its registry (a reference with its host)")
    data = engine.image_file(ref, SBOM_PATH)
    if data is None:
        raise SupplyChainError(f"image {ref} has no SBOM ({SBOM_PATH}): built by an older grocker (or not by grocker)",
                               OLDER)
    return data


def read_sbom(engine: Engine | None, ref: str, where: str = "auto") -> dict[str, Any]:
    """The CycloneDX SBOM of the image ``ref``, parsed; SupplyChainError when it has none or it is not JSON."""
    return _parse(read_sbom_bytes(engine, ref, where), ref, "SBOM")


def read_provenance(engine: Engine | None, home: Path, ref: str, where: str = "auto") -> dict[str, Any]:
    """The provenance statement of the image ``ref``; SupplyChainError when none is recorded."""
    if from_registry(ref, where):
        return _parse(_registry_bytes(ref, "att", "provenance"), ref, "provenance")
    image_id = engine.image_id(ref) if engine is not None else None
    if image_id is None:
        raise SupplyChainError(f"image {ref} is not in the engine",
                               "check the name, or read it from its registry (a reference with its host)")
    statement = find_provenance(home, image_id)
    if statement is None:
        raise SupplyChainError(f"no provenance of {ref} ({image_id[7:19]}) in this cache home ({home}): built "
                               "elsewhere or by an older grocker",
                               "read it from its registry (`grocker provenance REGISTRY/REPO:TAG`), or rebuild it")
    return statement


def table(document: dict[str, Any]) -> list[str]:
    """The SBOM as text lines: one component a line, kind, name, version, internal, licence."""
    rows = sorted(read_components(document), key=lambda c: (c.kind, c.name, c.version))
    lines = [f"{'KIND':10}  {'NAME':32}  {'VERSION':24}  {'ORIGIN':11}  LICENCE"]
    for c in rows:
        origin = ("internal" if c.internal else "third-party") if c.kind == "python" else "-"
        lines.append(f"{c.kind:10}  {c.name[:32]:32}  {c.version[:24]:24}  {origin:11}  {c.licence or '-'}")
    meta = (document.get("metadata") or {}).get("component") or {}
    counts = {k: sum(1 for c in rows if c.kind == k) for k in ("python", "debian")}
    lines.append(f"{meta.get('name', '?')} {meta.get('version', '')}: {counts['python']} Python distributions, "
                 f"{counts['debian']} Debian packages")
    return lines


@dataclass(frozen=True)
class Query:
    """``NAME`` or ``NAME==VERSION``: a Python distribution or a Debian package."""

    name: str
    version: str | None = None

    def matches(self, component: Found) -> bool:
        if component.kind == "python":
            same = canonicalize_name(component.name) == canonicalize_name(self.name)
        elif component.kind == "debian":
            same = component.name == self.name.lower()
        else:
            return False
        return same and (self.version is None or component.version == self.version)


def parse_query(text: str) -> Query:
    """``NAME[==VERSION]``; SupplyChainError on anything else."""
    name, sep, version = text.partition("==")
    name, version = name.strip(), version.strip()
    if not name or any(c in name for c in " <>=!~,;") or (sep and not version):
        raise SupplyChainError(f"--find {text!r}: not NAME or NAME==VERSION", "e.g. --find requests==2.32.3 "
                               "or --find libssl3")
    return Query(name, version or None)


@dataclass(frozen=True)
class Match:
    """An image and the components of it that matched, or why it could not be read."""

    image: str
    found: tuple[Found, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "error": self.error,
                "found": [{"kind": f.kind, "name": f.name, "version": f.version, "purl": f.purl}
                          for f in self.found]}


def repository_images(repository: str) -> list[str]:
    """Every image (``repo:tag``) of a registry repository, without the attached documents' tags."""
    from setuptools_grocker.registry.client import list_tags

    r = ImageRef.parse(repository)
    if r.host is None:
        raise SupplyChainError(f"--repository {repository}: no registry host", "e.g. 127.0.0.1:5000/shop-app")
    tags = list_tags(r.repository)
    return [f"{r.repository}:{t}" for t in tags if not t.startswith("sha256-")]


def release_images(document_ref: str) -> list[str]:
    """Every application image (``repo@digest``) of a workspace release: ``REGISTRY/REPO`` (its current
    release, through the pointer) or ``REGISTRY/REPO:RELEASE``."""
    from setuptools_grocker.registry.client import read_document
    from setuptools_grocker.registry.release import POINTER_TAG

    r = ImageRef.parse(document_ref)
    if r.host is None:
        raise SupplyChainError(f"--release {document_ref}: no registry host", "e.g. 127.0.0.1:5000/shop-release")
    document = read_document(document_ref if r.tag or r.digest else str(r.with_tag(POINTER_TAG)))
    return [f"{entry['image']}@{entry['digest']}" for _, entry in sorted((document.get("applications") or {}).items())]


def find(engine: Engine | None, query: Query, images: Sequence[str], where: str = "auto") -> list[Match]:
    """Each image of ``images`` with the components that match ``query`` (images without any are left out;
    those that cannot be read are kept with their error)."""
    matches = []
    for image in images:
        try:
            document = read_sbom(engine, image, where)
        except (SupplyChainError, RegistryError) as exc:
            matches.append(Match(image, error=exc.message))
            continue
        found = tuple(c for c in read_components(document) if query.matches(c))
        if found:
            matches.append(Match(image, found))
    return matches
