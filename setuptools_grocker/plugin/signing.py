"""What a signing plugin receives and returns: the payload grocker asks it to sign, and its signature.

The payload is cosign's "simple signing" document (the ``critical`` part names the repository and the
image's manifest digest), with the content digests of the documents attached next to the image in its
``optional`` part, so one signature covers the image and its SBOM and provenance as they were pushed::

    {"critical": {"identity": {"docker-reference": "127.0.0.1:5000/shop-app"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "cosign container image signature"},
     "optional": {"io.grocker.sbom": "sha256:...", "io.grocker.provenance": "sha256:..."}}

It is serialised canonically (sorted keys, no spaces), so the same image and documents always give the
same bytes. A plugin signs those bytes as they are (:attr:`SigningRequest.payload`); grocker stores the
payload and every signature under the tag ``sha256-<hex>.sig`` (registry/attach.py) and, at
``grocker verify``, gives each signature back to the plugins with the payload it covers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["PAYLOAD_TYPE", "Signature", "SigningRequest", "make_payload", "parse_payload"]

PAYLOAD_TYPE = "cosign container image signature"
SBOM_KEY = "io.grocker.sbom"
PROVENANCE_KEY = "io.grocker.provenance"


@dataclass(frozen=True)
class Signature:
    """One signature of a payload, as a plugin returns it (``grocker_sign``) and receives it back
    (``grocker_verify_signature``).

    ``key_id`` names the key (or identity) so that a verifier can tell its own signatures from others';
    ``algorithm`` names the scheme (``ed25519``, ...). ``signer`` is the plugin that made it (set by
    grocker). ``annotations`` are stored with the signature (a certificate, a transparency-log entry):
    text only, never a secret.
    """

    signature: bytes
    key_id: str
    algorithm: str
    signer: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SigningRequest:
    """An image just pushed, and the payload to sign for it."""

    #: ``registry/repo`` the image was pushed to.
    repository: str
    #: Its manifest digest there (``sha256:...``).
    digest: str
    #: The content digest of the SBOM attached next to it (``.sbom``), None when it has none.
    sbom: str | None
    #: The content digest of the provenance statement attached next to it (``.att``), None when it has none.
    provenance: str | None

    @property
    def image(self) -> str:
        """``registry/repo@sha256:...``: the image by digest."""
        return f"{self.repository}@{self.digest}"

    @property
    def payload(self) -> bytes:
        """The bytes to sign (see the module)."""
        return make_payload(self.repository, self.digest, self.sbom, self.provenance)


def make_payload(repository: str, digest: str, sbom: str | None, provenance: str | None) -> bytes:
    optional = {k: v for k, v in ((SBOM_KEY, sbom), (PROVENANCE_KEY, provenance)) if v}
    document = {"critical": {"identity": {"docker-reference": repository},
                             "image": {"docker-manifest-digest": digest}, "type": PAYLOAD_TYPE},
                "optional": optional}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def parse_payload(payload: bytes) -> SigningRequest | None:
    """What a stored payload covers, or None when it is not a payload of this form."""
    try:
        document: Any = json.loads(payload)
        critical = document["critical"]
        optional = document.get("optional") or {}
        if critical["type"] != PAYLOAD_TYPE:
            return None
        return SigningRequest(repository=str(critical["identity"]["docker-reference"]),
                              digest=str(critical["image"]["docker-manifest-digest"]),
                              sbom=optional.get(SBOM_KEY), provenance=optional.get(PROVENANCE_KEY))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
