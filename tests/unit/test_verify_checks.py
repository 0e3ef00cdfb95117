"""`grocker verify`'s checks on evidence built by hand (no registry), the signing payload, the signing hooks
through the plugin manager with the example Ed25519 plugin, and the CLI's bad input."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

from setuptools_grocker.cli import main
from setuptools_grocker.errors import PluginError, SupplyChainError
from setuptools_grocker.image.verify import Evidence, SignatureSeen, Verification, evaluate
from setuptools_grocker.plugin import Signature, SigningRequest, impl
from setuptools_grocker.plugin.manager import PluginManager
from setuptools_grocker.plugin.signing import make_payload, parse_payload

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "grocker-plugin-sign-ed25519"
REPOSITORY = "127.0.0.1:5000/shop-app"
SBOM = b'{"bomFormat": "CycloneDX"}\n'
LAYERS = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
CONFIG = "sha256:" + "c" * 64
DIGEST = "sha256:" + "d" * 64


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def provenance(layers: list[str] = LAYERS, sbom: bytes = SBOM, subjects: tuple[str, ...] = (CONFIG, DIGEST)) -> bytes:
    statement = {"subject": [{"digest": {"sha256": s.split(":")[1]}} for s in subjects],
                 "predicate": {"runDetails": {"byproducts": [
                     *({"name": f"layer-{i}", "digest": {"sha256": d.split(":")[1]}} for i, d in enumerate(layers)),
                     {"name": "sbom", "digest": {"sha256": sha(sbom).split(":")[1]}}]}}}
    return (json.dumps(statement, indent=2) + "\n").encode()


def artifact(data: bytes, subject: str = DIGEST) -> dict[str, Any]:
    return {"layers": [{"digest": sha(data)}], "subject": {"digest": subject}}


def evidence(*, verdicts: tuple[tuple[str, bool], ...] = (("ed", True),), payload: bytes | None = None,
             **changes: Any) -> Evidence:
    """A consistent, signed image; ``changes`` tamper with one part of it."""
    att = provenance()
    payload = payload if payload is not None else make_payload(REPOSITORY, DIGEST, sha(SBOM), sha(att))
    ev = Evidence(repository=REPOSITORY, digest=DIGEST, config_digest=CONFIG, diff_ids=list(LAYERS),
                  sbom_manifest=artifact(SBOM), sbom=SBOM, att_manifest=artifact(att), provenance=att,
                  sbom_in_image=SBOM, verifiers=True,
                  signatures=[SignatureSeen(payload, Signature(b"sig", "k1", "ed25519", "ed"), verdicts)])
    for key, value in changes.items():
        setattr(ev, key, value)
    return ev


def verdicts(ev: Evidence, allow_unsigned: bool = False) -> dict[str, bool | None]:
    return {c.name: c.ok for c in evaluate(ev, allow_unsigned)}


def test_a_consistent_signed_image_passes_every_check() -> None:
    checks = evaluate(evidence())
    assert [c.name for c in checks] == ["signature", "sbom", "provenance", "layers", "sbom-in-image"]
    assert all(c.ok is True for c in checks), checks
    result = Verification("x", DIGEST, checks)
    assert result.ok and result.to_json()["ok"] is True


def test_a_moved_tag_fails_the_signature() -> None:
    """The tag points at another image: the signature found (copied over) covers the first digest."""
    other = "sha256:" + "e" * 64
    ev = evidence(payload=make_payload(REPOSITORY, other, sha(SBOM), sha(provenance())))
    check = evaluate(ev)[0]
    assert check.ok is False and other in check.detail and "tag was moved" in check.detail
    # The other image's own .sig tag is missing: "no signature", naming the tag.
    check = evaluate(evidence(signatures=None))[0]
    assert check.ok is False and f"sha256-{'d' * 64}.sig" in check.detail


def test_a_replaced_sbom_fails_against_the_signature_and_the_image() -> None:
    forged = b'{"bomFormat": "CycloneDX", "components": []}\n'
    result = verdicts(evidence(sbom=forged, sbom_manifest=artifact(forged)))
    assert result["sbom"] is False and result["sbom-in-image"] is False
    assert result["signature"] is True and result["provenance"] is True
    check = evaluate(evidence(sbom=forged, sbom_manifest=artifact(forged)))[1]
    assert "replaced after signing" in check.detail and sha(forged) in check.detail


def test_a_replaced_provenance_fails() -> None:
    forged = provenance(layers=["sha256:" + "9" * 64])
    result = verdicts(evidence(provenance=forged, att_manifest=artifact(forged)))
    assert result["provenance"] is False and result["layers"] is False and result["sbom"] is True


def test_the_provenance_must_name_this_manifest_and_image_id() -> None:
    # Even when it is the one the signature covers.
    att = provenance(subjects=(CONFIG,))
    ev = evidence(provenance=att, att_manifest=artifact(att),
                  payload=make_payload(REPOSITORY, DIGEST, sha(SBOM), sha(att)))
    check = evaluate(ev)[2]
    assert check.ok is False and "manifest digest" in check.detail


def test_a_document_attached_to_another_image_fails() -> None:
    check = evaluate(evidence(sbom_manifest=artifact(SBOM, subject="sha256:" + "f" * 64)))[1]
    assert check.ok is False and "as its subject" in check.detail


def test_layers_must_be_the_recorded_ones() -> None:
    check = evaluate(evidence(diff_ids=[LAYERS[0], "sha256:" + "3" * 64]))[3]
    assert check.ok is False and "differ from layer 1" in check.detail


def test_the_sbom_in_the_image_must_be_the_attached_one() -> None:
    check = evaluate(evidence(sbom_in_image=b"{}"))[4]
    assert check.ok is False and "not the one in the image" in check.detail
    assert evaluate(evidence(sbom_in_image=None))[4].ok is False


def test_a_signature_that_does_not_verify_fails_naming_the_key() -> None:
    check = evaluate(evidence(verdicts=(("ed", False),)))[0]
    assert check.ok is False and "k1" in check.detail and "does not verify" in check.detail


def test_a_signature_by_an_unknown_key_fails() -> None:
    check = evaluate(evidence(verdicts=()))[0]
    assert check.ok is False and "no signature is by a key the installed plugins trust" in check.detail


def test_unsigned_or_unchecked_fails_unless_allowed() -> None:
    for ev in (evidence(signatures=None), evidence(verifiers=False)):
        strict = Verification("x", DIGEST, evaluate(ev))
        assert not strict.ok and strict.failed[0].name == "signature"
        allowed = Verification("x", DIGEST, evaluate(ev, allow_unsigned=True), allow_unsigned=True)
        assert allowed.ok, allowed.checks
    unchecked = evaluate(evidence(verifiers=False))[0]
    assert unchecked.ok is None and "not checked" in unchecked.detail
    # --allow-unsigned does not excuse a signature that fails, nor a forged document.
    bad = evidence(verdicts=(("ed", False),))
    assert not Verification("x", DIGEST, evaluate(bad, True), allow_unsigned=True).ok


def test_the_error_is_one_line_naming_the_check_and_the_fix() -> None:
    forged = b"{}"
    result = Verification("reg/app:1", DIGEST, evaluate(evidence(sbom=forged, sbom_manifest=artifact(forged))))
    error = result.error()
    assert isinstance(error, SupplyChainError) and error.exit_code == 19
    text = error.one_line()
    assert "\n" not in text and "sbom:" in text and "also failed: sbom-in-image" in text and error.hint


def test_the_payload_is_canonical_and_reads_back() -> None:
    payload = make_payload(REPOSITORY, DIGEST, "sha256:aa", None)
    assert payload == make_payload(REPOSITORY, DIGEST, "sha256:aa", None)
    assert b": " not in payload and b", " not in payload
    assert parse_payload(payload) == SigningRequest(REPOSITORY, DIGEST, "sha256:aa", None)
    assert parse_payload(b"not json") is None
    assert parse_payload(b'{"critical": {"type": "other"}}') is None


# -- the hooks, through the plugin manager, with the example plugin ----------------------------------

@pytest.fixture()
def ed25519(tmp_path: Path) -> Iterator[types.ModuleType]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import grocker_sign_ed25519

        yield grocker_sign_ed25519
    finally:
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("grocker_sign_ed25519", None)


def test_the_example_plugin_signs_and_verifies_through_pluggy(ed25519: types.ModuleType, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    private, public = ed25519.generate(tmp_path / "keys")
    assert private.stat().st_mode & 0o777 == 0o600
    other_private, other_public = ed25519.generate(tmp_path / "other")
    environ = {"ED25519_SIGNING_KEY": str(private)}
    pm = PluginManager(extra=["grocker_sign_ed25519"], environ=environ)
    request = SigningRequest(REPOSITORY, DIGEST, sha(SBOM), None)
    from setuptools_grocker.config import Config

    [signature] = pm.grocker_sign(Config(project_dir=tmp_path), request)
    assert signature.signer == "grocker_sign_ed25519" and signature.algorithm == "ed25519"
    assert pm.grocker_verify_signature(request.payload, signature) == [("grocker_sign_ed25519", True)]
    assert pm.grocker_verify_signature(request.payload + b" ", signature) == [("grocker_sign_ed25519", False)]
    # Another trusted key: the signature's key is unknown to it (no verdict).
    wrong = PluginManager(extra=["grocker_sign_ed25519"], environ={"ED25519_TRUSTED_KEYS": str(other_public)})
    assert wrong.grocker_verify_signature(request.payload, signature) == []
    both = PluginManager(extra=["grocker_sign_ed25519"],
                         environ={"ED25519_TRUSTED_KEYS": os.pathsep.join([str(other_public), str(public)])})
    assert both.grocker_verify_signature(request.payload, signature) == [("grocker_sign_ed25519", True)]
    # No key configured: nothing signed.
    assert PluginManager(extra=["grocker_sign_ed25519"], environ={}).grocker_sign(Config(project_dir=tmp_path),
                                                                                 request) == []
    # The key never appears in what the plugin returns or in an error.
    secret = private.read_text()
    assert secret.split("\n")[1] not in repr(signature)
    private.chmod(0o644)
    with pytest.raises(PluginError) as caught:
        pm.grocker_sign(Config(project_dir=tmp_path), request)
    assert "readable by others" in caught.value.one_line() and secret.split("\n")[1] not in caught.value.one_line()


def test_a_sign_hook_returning_garbage_names_the_plugin(tmp_path: Path) -> None:
    mod = types.ModuleType("bad_signer")

    @impl
    def grocker_sign(request: SigningRequest) -> object:
        return "signed!"

    mod.grocker_sign = grocker_sign  # type: ignore[attr-defined]
    sys.modules["bad_signer"] = mod
    try:
        pm = PluginManager(extra=["bad_signer"])
        from setuptools_grocker.config import Config

        with pytest.raises(PluginError, match="bad_signer.*grocker_sign, expected a Signature"):
            pm.grocker_sign(Config(project_dir=tmp_path), SigningRequest(REPOSITORY, DIGEST, None, None))
        assert not pm.has_implementations("grocker_verify_signature")
    finally:
        sys.modules.pop("bad_signer", None)


def test_verify_without_a_registry_host_is_one_line_and_exit_19(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    assert main(["verify", "shop-app:1", "--project", str(tmp_path)]) == 19
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names no registry" in err[0]
