"""``grocker verify IMAGE``: is the image in the registry the one that was signed, with its documents?

Two halves. :func:`collect` reads what the registry holds for the image (its manifest, config and layers,
the ``.sbom``, ``.att`` and ``.sig`` next to it: registry/attach.py) and asks the plugins about each
signature (``grocker_verify_signature``); it judges nothing. :func:`evaluate` judges that
:class:`Evidence`, with no I/O, one :class:`Check` per question:

- ``signature``: a signature by a key a plugin trusts verifies, none that a plugin knows fails, and its
  payload names this repository and this manifest digest (plugin/signing.py);
- ``sbom``: the SBOM attached names this image as its subject, and its content digest is the one the
  signature covers;
- ``provenance``: the same for the provenance statement, whose subjects are this manifest digest and this
  image's config digest (the image ID);
- ``layers``: the provenance's layer diff IDs are the image's, in order;
- ``sbom-in-image``: the SBOM attached is byte for byte the file in the image (and the one the
  provenance recorded).

A check that could not run because an earlier one found nothing to check says so (``ok`` None) and
does not pass (the earlier one failed). Without a plugin that verifies signatures the signature is
"not checked", which fails unless ``allow_unsigned``.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from setuptools_grocker.errors import RegistryError, SupplyChainError
from setuptools_grocker.image.sbom import SBOM_PATH
from setuptools_grocker.plugin.signing import Signature, SigningRequest, parse_payload
from setuptools_grocker.ref import ImageRef

if TYPE_CHECKING:
    from setuptools_grocker.plugin.manager import PluginManager

__all__ = ["Check", "Evidence", "SignatureSeen", "Verification", "collect", "evaluate", "verify"]

VERIFY_HOOK = "grocker_verify_signature"
RESIGN = "push the image again with grocker and its signing plugin (or find who replaced it)"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Check:
    """One verdict: ``ok`` True (passed), False (failed), None (not checked)."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class SignatureSeen:
    """A stored signature, its payload, and the plugins' verdicts on it (``(plugin, valid)``)."""

    payload: bytes
    signature: Signature
    verdicts: tuple[tuple[str, bool], ...] = ()


@dataclass
class Evidence:
    """What the registry holds for one image (read by :func:`collect`)."""

    repository: str
    digest: str
    #: The digest of the image's config blob: the image ID.
    config_digest: str
    diff_ids: list[str]
    sbom_manifest: dict[str, Any] | None = None
    sbom: bytes | None = None
    att_manifest: dict[str, Any] | None = None
    provenance: bytes | None = None
    #: The SBOM file inside the image (None: the image has none).
    sbom_in_image: bytes | None = None
    #: The stored signatures; None when the image has no ``.sig``.
    signatures: list[SignatureSeen] | None = None
    #: Whether some plugin implements ``grocker_verify_signature``.
    verifiers: bool = False


@dataclass
class Verification:
    image: str
    digest: str
    checks: list[Check] = field(default_factory=list)
    allow_unsigned: bool = False

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False or (c.ok is None and not self._may_skip(c))]

    def _may_skip(self, check: Check) -> bool:
        return self.allow_unsigned and check.name == "signature"

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "image": self.image, "digest": self.digest, "allow_unsigned": self.allow_unsigned,
                "checks": [c.to_json() for c in self.checks]}

    def error(self) -> SupplyChainError:
        first = self.failed[0]
        more = [c.name for c in self.failed[1:]]
        tail = f" (also failed: {', '.join(more)})" if more else ""
        return SupplyChainError(f"{self.image} fails verification: {first.name}: {first.detail}{tail}",
                                first.fix or RESIGN)


# -- judging ------------------------------------------------------------------------------------------

def evaluate(ev: Evidence, allow_unsigned: bool = False) -> list[Check]:
    """Every check of ``ev`` (see the module), in order."""
    signature, covered = _signature(ev, allow_unsigned)
    statement = _statement(ev.provenance)
    return [signature,
            _document(ev, "sbom", "SBOM", ev.sbom_manifest, ev.sbom, covered.sbom if covered else None, covered),
            _provenance(ev, statement, covered),
            _layers(ev, statement),
            _sbom_in_image(ev, statement)]


def _signature(ev: Evidence, allow_unsigned: bool) -> tuple[Check, SigningRequest | None]:
    tag = f"sha256-{ev.digest.split(':')[-1]}.sig"
    if not ev.signatures:
        if allow_unsigned:
            return Check("signature", None, f"not signed (no tag {tag}); allowed by --allow-unsigned"), None
        return Check("signature", False, f"{ev.repository}@{ev.digest} has no signature (no tag {tag})",
                     "sign it at push with a signing plugin installed (or, if the tag was moved to this image, "
                     "find who moved it); --allow-unsigned checks the rest"), None
    if not ev.verifiers:
        return Check("signature", None, f"{len(ev.signatures)} signature(s) present, not checked: no installed "
                     f"plugin implements {VERIFY_HOOK}",
                     "install the signing plugin that verifies them (grocker plugins lists what is loaded), "
                     "or pass --allow-unsigned"), None
    for seen in ev.signatures:
        for plugin, valid in seen.verdicts:
            if not valid:
                return Check("signature", False, f"the signature by {seen.signature.algorithm} key "
                             f"{seen.signature.key_id} does not verify ({plugin}): the signature or what it "
                             "signed was altered", RESIGN), None
    trusted = [s for s in ev.signatures if any(valid for _, valid in s.verdicts)]
    if not trusted:
        keys = ", ".join(sorted({f"{s.signature.algorithm} key {s.signature.key_id}" for s in ev.signatures}))
        return Check("signature", False, f"no signature is by a key the installed plugins trust (signed by {keys})",
                     "give the verifying plugin the signer's public key, or sign the image again with a trusted "
                     "key"), None
    for seen in trusted:
        request = parse_payload(seen.payload)
        if request is not None and request.digest == ev.digest and request.repository == ev.repository:
            plugins = ", ".join(p for p, valid in seen.verdicts if valid)
            return Check("signature", True, f"signed by {seen.signature.algorithm} key {seen.signature.key_id} "
                         f"(verified by {plugins}); it covers {ev.repository}@{ev.digest}"), request
    request = parse_payload(trusted[0].payload)
    what = f"{request.repository}@{request.digest}" if request else "a payload grocker does not know"
    return Check("signature", False, f"the trusted signature covers {what}, not this image "
                 f"({ev.repository}@{ev.digest}): the tag was moved or the signature copied", RESIGN), None


def _subject(manifest: dict[str, Any] | None) -> str | None:
    subject = (manifest or {}).get("subject")
    return str(subject.get("digest")) if isinstance(subject, dict) else None


def _document(ev: Evidence, name: str, what: str, manifest: dict[str, Any] | None, data: bytes | None,
              signed: str | None, covered: SigningRequest | None) -> Check:
    tag = f"sha256-{ev.digest.split(':')[-1]}.{'att' if name == 'provenance' else name}"
    if manifest is None or data is None:
        return Check(name, False, f"no {what} attached (no tag {tag})", "push the image again with grocker")
    if _subject(manifest) != ev.digest:
        return Check(name, False, f"the {what} attached names {_subject(manifest)} as its subject, not "
                     f"{ev.digest}", RESIGN)
    actual = sha256(data)
    if covered is None:
        return Check(name, True, f"attached, {actual}; no trusted signature to compare it with")
    if signed is None:
        return Check(name, False, f"the signature covers no {what}", RESIGN)
    if signed != actual:
        return Check(name, False, f"the {what} attached ({actual}) is not the one the signature covers ({signed}): "
                     "it was replaced after signing", RESIGN)
    return Check(name, True, f"attached, {actual}, the one the signature covers")


def _statement(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        statement = json.loads(data)
    except ValueError:
        return None
    return statement if isinstance(statement, dict) else None


def _provenance(ev: Evidence, statement: dict[str, Any] | None, covered: SigningRequest | None) -> Check:
    check = _document(ev, "provenance", "provenance", ev.att_manifest, ev.provenance,
                      covered.provenance if covered else None, covered)
    if check.ok is False:
        return check
    if statement is None:
        return Check("provenance", False, "the provenance attached is not a JSON statement", RESIGN)
    subjects = {str((s.get("digest") or {}).get("sha256")) for s in statement.get("subject") or []
                if isinstance(s, dict)}
    for digest, what in ((ev.digest, "manifest digest"), (ev.config_digest, "image ID (config digest)")):
        if digest.split(":")[-1] not in subjects:
            return Check("provenance", False, f"the provenance does not name this image's {what} {digest} as a "
                         "subject", RESIGN)
    return Check("provenance", check.ok, check.detail + "; its subjects are this manifest and image ID", check.fix)


def _byproducts(statement: dict[str, Any]) -> list[dict[str, Any]]:
    run = (statement.get("predicate") or {}).get("runDetails") or {}
    return [b for b in run.get("byproducts") or [] if isinstance(b, dict)]


def _layers(ev: Evidence, statement: dict[str, Any] | None) -> Check:
    if statement is None:
        return Check("layers", None, "no provenance to compare the layers with")
    recorded = ["sha256:" + str((b.get("digest") or {}).get("sha256")) for b in _byproducts(statement)
                if str(b.get("name", "")).startswith("layer-")]
    if recorded != ev.diff_ids:
        differ = next((i for i, (a, b) in enumerate(zip(recorded, ev.diff_ids)) if a != b),
                      min(len(recorded), len(ev.diff_ids)))
        return Check("layers", False, f"the image's layers are not the ones its provenance records ({len(ev.diff_ids)} "
                     f"layers, {len(recorded)} recorded; they differ from layer {differ})", RESIGN)
    return Check("layers", True, f"the {len(recorded)} layer diff IDs are the ones the provenance records")


def _sbom_in_image(ev: Evidence, statement: dict[str, Any] | None) -> Check:
    if ev.sbom_in_image is None:
        return Check("sbom-in-image", False, f"the image has no {SBOM_PATH}", "rebuild it with this grocker")
    inside = sha256(ev.sbom_in_image)
    if ev.sbom is None:
        return Check("sbom-in-image", None, f"the image holds an SBOM ({inside}); none attached to compare")
    if ev.sbom != ev.sbom_in_image:
        return Check("sbom-in-image", False, f"the SBOM attached ({sha256(ev.sbom)}) is not the one in the image "
                     f"({inside})", RESIGN)
    recorded = [b for b in _byproducts(statement or {}) if b.get("name") == "sbom"]
    if recorded and "sha256:" + str((recorded[0].get("digest") or {}).get("sha256")) != inside:
        return Check("sbom-in-image", False, f"the SBOM in the image ({inside}) is not the one the provenance "
                     "records", RESIGN)
    return Check("sbom-in-image", True, f"the SBOM attached is the file in the image ({inside})")


# -- reading ------------------------------------------------------------------------------------------

def collect(ref: str, plugins: PluginManager | None) -> Evidence:
    """Read what the registry holds for the image ``ref`` (a tag or a digest), and the plugins' verdicts."""
    from setuptools_grocker.registry.attach import read_artifact_manifest, read_signatures
    from setuptools_grocker.registry.client import digest_of, get_blob, get_manifest

    parsed = ImageRef.parse(ref)
    if parsed.host is None:
        raise SupplyChainError(f"'{ref}' names no registry: grocker verify reads an image from its registry",
                               "give REGISTRY/REPO:TAG (or @sha256:...), as pushed")
    digest = parsed.digest or digest_of(ref)
    if digest is None:
        raise SupplyChainError(f"{ref} is not in its registry", "check the name and the tag")
    by_digest = f"{parsed.repository}@{digest}"
    body, media_type = get_manifest(by_digest)
    manifest = json.loads(body)
    if "config" not in manifest or "layers" not in manifest:
        raise SupplyChainError(f"{ref} is a {media_type}, not one image", "verify the image of one platform, "
                               "by its digest")
    config = json.loads(get_blob(by_digest, manifest["config"]["digest"]))
    ev = Evidence(repository=parsed.repository, digest=digest, config_digest=manifest["config"]["digest"],
                  diff_ids=list((config.get("rootfs") or {}).get("diff_ids") or []))
    for kind in ("sbom", "att"):
        art = read_artifact_manifest(ref, digest, kind)
        layers = (art or {}).get("layers") or []
        data = get_blob(by_digest, layers[0]["digest"]) if art is not None and len(layers) == 1 else None
        if kind == "sbom":
            ev.sbom_manifest, ev.sbom = art, data
        else:
            ev.att_manifest, ev.provenance = art, data
    ev.sbom_in_image = _file_in_layers(by_digest, [layer["digest"] for layer in manifest["layers"]], get_blob)
    ev.verifiers = plugins is not None and plugins.has_implementations(VERIFY_HOOK)
    stored = read_signatures(ref, digest)
    if stored is not None:
        ev.signatures = [SignatureSeen(payload, sig, tuple(plugins.grocker_verify_signature(payload, sig))
                                       if ev.verifiers and plugins is not None else ())
                         for payload, sig in stored]
    return ev


def _file_in_layers(ref: str, layers: Sequence[str], get_blob: Any, path: str = SBOM_PATH) -> bytes | None:
    """The file ``path`` as the image's filesystem holds it: from the topmost layer that has it (or deletes it)."""
    name = path.lstrip("/")
    directory, _, base = name.rpartition("/")
    for layer in reversed(layers):
        blob = get_blob(ref, layer)
        try:
            raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                for member in tar:
                    member_name = member.name[2:] if member.name.startswith("./") else member.name
                    if member_name == f"{directory}/.wh.{base}":
                        return None
                    if member_name == name and member.isfile():
                        handle = tar.extractfile(member)
                        return handle.read() if handle is not None else None
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise RegistryError(f"layer {layer} of {ref} is not a readable tar", "push the image again") from exc
    return None


def verify(ref: str, plugins: PluginManager | None, allow_unsigned: bool = False) -> Verification:
    """Collect and evaluate: the verdict of every check on the image ``ref`` in its registry."""
    ev = collect(ref, plugins)
    return Verification(image=ref, digest=ev.digest, checks=evaluate(ev, allow_unsigned), allow_unsigned=allow_unsigned)
