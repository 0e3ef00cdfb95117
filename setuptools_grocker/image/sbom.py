"""The software bill of materials (SBOM) of a runtime image, in CycloneDX JSON.

Made from the build's own records while the image is assembled, not by scanning the image
afterwards: the wheels that are installed (name, version, the wheel's SHA-256, its licence when its
metadata states one, internal or third-party), the Debian packages of the root image (dpkg's status
file, read once per root image ID and cached), and the base and root images. It is stored in the
application's layer at :data:`SBOM_PATH`, so ``docker run --rm IMAGE cat /opt/app/grocker/sbom.cdx.json``
reads it without grocker.

Reproducible: the same inputs give the same bytes. cyclonedx-python-lib randomises the serial number,
the timestamp and the references by default; here the serial number is a UUID derived from a hash of
every component, the timestamp is the image's epoch (``SOURCE_DATE_EPOCH``) and each ``bom-ref`` is its
component's package URL.
"""
from __future__ import annotations

import datetime
import email.parser
import hashlib
import json
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from packaging.utils import canonicalize_name

from setuptools_grocker.errors import ImageBuildError
from setuptools_grocker.fs import write_atomic

if TYPE_CHECKING:
    from setuptools_grocker.engine import Engine

__all__ = ["SBOM_PATH", "DebPackage", "PythonDist", "debian_packages", "make_sbom", "parse_dpkg_status",
           "prepare", "python_dists", "read_components", "remember", "sbom_of"]

#: Where the SBOM is in every runtime image (the application's layer).
SBOM_PATH = "/opt/app/grocker/sbom.cdx.json"
DPKG_STATUS = "/var/lib/dpkg/status"
MEDIA_TYPE = "application/vnd.cyclonedx+json"
#: Bump when the SBOM's content changes for the same inputs (it is part of the image).
SBOM_VERSION = 1
_NS = "grocker:"


@dataclass(frozen=True)
class PythonDist:
    """One distribution installed in the image's venv, from its wheel."""

    name: str
    version: str
    sha256: str
    wheel: str
    internal: bool
    licence: str | None = None
    #: True when ``licence`` is an SPDX expression (PEP 639 ``License-Expression``).
    expression: bool = False


@dataclass(frozen=True)
class DebPackage:
    """One Debian package installed in the root image (dpkg's status)."""

    name: str
    version: str
    architecture: str
    source: str | None = None


def _licence(meta: Mapping[str, Any]) -> tuple[str | None, bool]:
    expression = str(meta.get("License-Expression") or "").strip()
    if expression:
        return expression, True
    text = str(meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 100 and text.upper() != "UNKNOWN":
        return text, False
    classifiers = [c.split("::")[-1].strip() for c in meta.get("Classifier", [])
                   if c.startswith("License ::") and c.count("::") >= 2]
    return ("; ".join(classifiers) or None), False


def _metadata(wheel: Path) -> Mapping[str, Any]:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ImageBuildError(f"{wheel.name} has no single *.dist-info/METADATA", "rebuild the wheel")
        message = email.parser.BytesParser().parsebytes(zf.read(names[0]), headersonly=True)
    data: dict[str, Any] = {k: message.get(k) for k in ("Name", "Version", "License", "License-Expression")}
    data["Classifier"] = message.get_all("Classifier") or []
    return data


def wheel_name(filename: str) -> str:
    """A wheel's file name without its build tag: the wheel index names a library's wheel with a build tag
    carrying the key (wheelhouse.py), a machine that built it has it without; the bytes are the same, and
    so must the SBOM (hence the image) be."""
    parts = filename[:-len(".whl")].split("-") if filename.endswith(".whl") else []
    if len(parts) == 6:
        del parts[2]
        return "-".join(parts) + ".whl"
    return filename


def python_dists(wheels: Iterable[Path], internal: Iterable[str]) -> list[PythonDist]:
    """The distributions the wheels ``wheels`` install, sorted by name; ``internal`` names the internal ones."""
    internal_names = {canonicalize_name(n) for n in internal}
    found = []
    for wheel in wheels:
        meta = _metadata(wheel)
        name = canonicalize_name(str(meta["Name"]))
        licence, expression = _licence(meta)
        found.append(PythonDist(name=name, version=str(meta["Version"]),
                                sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(), wheel=wheel_name(wheel.name),
                                internal=name in internal_names, licence=licence, expression=expression))
    return sorted(found, key=lambda d: (d.name, d.version))


def parse_dpkg_status(text: str) -> list[DebPackage]:
    """The packages dpkg's status file says are installed (``Status: install ok installed``), sorted."""
    found = []
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # continuation lines (descriptions, conffiles)
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
        if fields.get("Status", "").split()[-1:] != ["installed"] or "Package" not in fields:
            continue
        source = fields.get("Source", "").split(" ")[0] or None
        found.append(DebPackage(fields["Package"], fields.get("Version", ""), fields.get("Architecture", ""),
                                source))
    return sorted(found, key=lambda p: (p.name, p.architecture, p.version))


_DPKG_MEMO: dict[str, list[DebPackage]] = {}


def debian_packages(engine: Engine, root_id: str, cache: Path | None) -> list[DebPackage]:
    """The Debian packages of the image ``root_id``: read once from its dpkg status (through the engine),
    then kept by image ID in memory and in ``cache/dpkg-<id>.json`` (an image ID names its content)."""
    if root_id in _DPKG_MEMO:
        return _DPKG_MEMO[root_id]
    path = cache / f"dpkg-{root_id.split(':')[-1]}.json" if cache is not None else None
    packages: list[DebPackage] | None = None
    if path is not None and path.is_file():
        try:
            packages = [DebPackage(**p) for p in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            packages = None  # damaged: read the image again
    if packages is None:
        status = engine.image_file(root_id, DPKG_STATUS)
        packages = parse_dpkg_status(status.decode("utf-8", "replace")) if status is not None else []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps([p.__dict__ for p in packages], indent=1) + "\n")
    _DPKG_MEMO[root_id] = packages
    return packages


#: The SBOMs this process put into images, by image ID: the provenance and the push need not read them back.
_MADE: dict[str, bytes] = {}


def remember(image_id: str, data: bytes) -> None:
    """Note that the image ``image_id`` holds the SBOM ``data`` (see :func:`sbom_of`)."""
    _MADE[image_id] = data


def sbom_of(engine: Engine, image_id: str) -> bytes | None:
    """The SBOM file of ``image_id``: as this process made it, else read from the image (None: it has none)."""
    made = _MADE.get(image_id)
    return made if made is not None else engine.image_file(image_id, SBOM_PATH)


def _pypi_purl(name: str, version: str) -> str:
    from packageurl import PackageURL

    return str(PackageURL("pypi", None, name, version))


def _deb_purl(package: DebPackage, distro: str) -> str:
    from packageurl import PackageURL

    qualifiers = {"arch": package.architecture} if package.architecture else {}
    if package.source and package.source != package.name:
        qualifiers["upstream"] = package.source
    return str(PackageURL("deb", distro, package.name, package.version, qualifiers or None))


#: The SBOM's root part (the base and the root's Debian packages, added to a Bom), made by :func:`prepare` while
#: the compile container works; taken (once) by :func:`make_sbom` for the same inputs.
_PREPARED: dict[tuple[Any, ...], tuple[Any, list[Any]]] = {}


def _root_part(debs: Sequence[DebPackage], base_image: str, base_id: str | None, distro: str
               ) -> tuple[Any, list[Any]]:
    """A Bom holding the base image and the root's Debian packages, and those components."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.bom_ref import BomRef
    from cyclonedx.model.component import Component, ComponentType

    bom = Bom()
    base = Component(name=base_image, version=base_id or "", type=ComponentType.CONTAINER,
                     bom_ref=BomRef(f"grocker-base:{base_image}@{base_id or ''}"),
                     properties=[Property(name=_NS + "kind", value="base-image")])
    bom.components.add(base)
    parts = [base]
    for deb in debs:
        purl = _deb_purl(deb, distro)
        component = Component(name=deb.name, version=deb.version, type=ComponentType.LIBRARY, bom_ref=BomRef(purl),
                              purl=_parse_purl(purl), properties=[Property(name=_NS + "kind", value="debian")])
        bom.components.add(component)
        parts.append(component)
    return bom, parts


def prepare(*, debs: Sequence[DebPackage], base_image: str, base_id: str | None, distro: str = "debian") -> None:
    """Make the SBOM's root part ahead (about half of :func:`make_sbom`'s time), for a make_sbom to come."""
    _PREPARED[(tuple(debs), base_image, base_id, distro)] = _root_part(debs, base_image, base_id, distro)


def make_sbom(*, name: str, version: str, dists: Sequence[PythonDist], debs: Sequence[DebPackage],
              base_image: str, base_id: str | None, root_id: str, epoch: int, distro: str = "debian") -> bytes:
    """The CycloneDX JSON of an image: ``dists`` in its venv, ``debs`` in its root; same inputs, same bytes."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom_ref import BomRef
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6

    from setuptools_grocker import __version__

    inputs = json.dumps({
        "v": SBOM_VERSION, "name": name, "version": version, "dists": [d.__dict__ for d in dists],
        "debs": [d.__dict__ for d in debs], "base": [base_image, base_id], "root": root_id, "epoch": epoch,
        "tool": __version__,
    }, sort_keys=True).encode()
    digest = hashlib.sha256(inputs).hexdigest()
    prepared = _PREPARED.pop((tuple(debs), base_image, base_id, distro), None)
    bom, parts = prepared if prepared is not None else _root_part(debs, base_image, base_id, distro)
    bom.serial_number = uuid.UUID(hex=digest[:32], version=5)
    bom.metadata.timestamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    image = Component(name=name, version=version, type=ComponentType.CONTAINER,
                      bom_ref=BomRef(f"grocker-image:{name}@{version}"),
                      properties=[Property(name=_NS + "root-image", value=root_id)])
    bom.metadata.component = image
    bom.metadata.properties.add(Property(name=_NS + "tool", value=f"setuptools-grocker {__version__}"))
    for dist in dists:
        purl = _pypi_purl(dist.name, dist.version)
        licences: list[Any] = []
        if dist.licence:
            licences = [LicenseExpression(dist.licence) if dist.expression else DisjunctiveLicense(name=dist.licence)]
        component = Component(
            name=dist.name, version=dist.version, type=ComponentType.LIBRARY, bom_ref=BomRef(purl),
            purl=_parse_purl(purl), hashes=[HashType(alg=HashAlgorithm.SHA_256, content=dist.sha256)],
            licenses=licences,
            properties=[Property(name=_NS + "kind", value="python"),
                        Property(name=_NS + "internal", value="true" if dist.internal else "false"),
                        Property(name=_NS + "wheel", value=dist.wheel)])
        bom.components.add(component)
        parts.append(component)
    bom.register_dependency(image, parts)
    return (JsonV1Dot6(bom).output_as_string(indent=2) + "\n").encode()


def _parse_purl(text: str) -> Any:
    from packageurl import PackageURL

    return PackageURL.from_string(text)


@dataclass(frozen=True)
class Found:
    """One component of an SBOM, as ``grocker sbom`` shows and searches it."""

    kind: str  # python | debian | base-image
    name: str
    version: str
    internal: bool = False
    licence: str | None = None
    sha256: str | None = None
    purl: str | None = None


def read_components(document: Mapping[str, Any]) -> list[Found]:
    """The components of an SBOM this module wrote (or any CycloneDX JSON, by purl type)."""
    found = []
    for c in document.get("components") or []:
        props = {p.get("name"): p.get("value") for p in c.get("properties") or []}
        purl = str(c.get("purl") or "")
        kind = props.get(_NS + "kind") or ("python" if purl.startswith("pkg:pypi/")
                                           else "debian" if purl.startswith("pkg:deb/") else "other")
        licences = [entry.get("expression") or (entry.get("license") or {}).get("id")
                    or (entry.get("license") or {}).get("name") for entry in c.get("licenses") or []]
        sha = next((h.get("content") for h in c.get("hashes") or [] if h.get("alg") == "SHA-256"), None)
        found.append(Found(kind=str(kind), name=str(c.get("name", "")), version=str(c.get("version", "")),
                           internal=props.get(_NS + "internal") == "true",
                           licence="; ".join(x for x in licences if x) or None, sha256=sha, purl=purl or None))
    return found
