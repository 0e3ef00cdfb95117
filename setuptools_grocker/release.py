"""Publishing a workspace release: every application image, or none.

During the build each application image is pushed under its *key tag* only (``NAME:k<key>``,
immutable: the key names the content). The names people and deploys use (the version, the
version plus the git revision, the moving tags, a release name) move afterwards, here, and
only when every application is in the registry with the digest that was pushed:

1. verify: read the digest of every key tag back from the registry; any application missing
   or different stops the release before anything moved;
2. publish the release document (JSON: application -> image, digest, version; internal library
   versions) under its own immutable tag;
3. move every application tag registry-side (a retag is one manifest PUT, no layers move),
   remembering where each pointed before; if one fails, the tags already moved are put back;
4. move the document's ``latest``.

A registry has no transactions: between the first and the last PUT of step 3 a reader can
see some tags moved and not others (milliseconds); a failure in that window restores them.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from setuptools_grocker.errors import RegistryError
from setuptools_grocker.registry import (
    Ref,
    digest_of,
    get_manifest,
    manifest_digest,
    push_document,
    put_manifest,
    retag,
)


@dataclass
class AppRelease:
    name: str
    version: str
    #: ``registry/repo:k<key>``: where the build pushed it.
    key_ref: str
    #: The digest the build got back from the push (None when an earlier build pushed it).
    digest: str | None
    #: The tags (not references) to point at it: version, version-gREV, moving tags, release name.
    tags: list[str] = field(default_factory=list)


def release_id(apps: list[AppRelease]) -> str:
    """A name for a release when the user gave none: the date and a hash of its digests."""
    digest = hashlib.sha256(json.dumps(sorted((a.name, a.digest) for a in apps)).encode()).hexdigest()
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d") + "-" + digest[:12]


def publish_release(apps: list[AppRelease], *, document_repo: str, release: str | None,
                    libraries: dict[str, str], workspace: str, tool_version: str,
                    info: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Verify, then move every tag of every application; return the release document."""
    if not apps:
        raise RegistryError("the workspace has no application to release", "add an application member")
    # 1. verify
    for app in apps:
        try:
            found = digest_of(app.key_ref)
        except RegistryError as exc:
            raise RegistryError(f"{exc.message}; no release tag was moved", exc.hint) from exc
        if found is None:
            raise RegistryError(f"{app.name} is not in the registry as {app.key_ref}; no release tag was moved",
                                "build and push it first (grocker workspace build --push)")
        if app.digest and found != app.digest:
            raise RegistryError(f"{app.key_ref} has digest {found[:19]}, the build pushed {app.digest[:19]}; "
                                "no release tag was moved", "someone else pushed to that tag: build again")
        app.digest = found
        info(f"verified {app.key_ref} = {found}")
    name = release or release_id(apps)
    document = {
        "release": name,
        "workspace": workspace,
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "tool_version": tool_version,
        "applications": {
            a.name: {"version": a.version, "image": a.key_ref.rsplit(":", 1)[0], "digest": a.digest,
                     "tags": sorted(set(a.tags))}
            for a in apps
        },
        "libraries": dict(sorted(libraries.items())),
    }
    # 2. the document, under its immutable name
    doc_ref = f"{document_repo}:{name}"
    document_digest = push_document(doc_ref, "release.json", document)
    info(f"release document {doc_ref} = {document_digest}")
    # 3. move the application tags, all or none
    moves = [(app, Ref.parse(app.key_ref).with_tag(tag)) for app in apps for tag in dict.fromkeys(app.tags)]
    before = {target: manifest_digest(target) for _, target in moves}
    moved: list[str] = []
    try:
        for app, target in moves:
            retag(f"{app.key_ref.rsplit(':', 1)[0]}@{app.digest}", target)
            moved.append(target)
    except RegistryError as exc:
        restored = _restore(moved, before)
        raise RegistryError(f"moving {target} failed ({exc.message}); {restored}",
                            "fix the registry and run the release again: it is idempotent") from exc
    # 4. the document's moving tag
    retag(doc_ref, f"{document_repo}:latest")
    document["document"] = {"image": doc_ref, "digest": document_digest}
    info(f"release {name}: {len(moves)} tags moved for {len(apps)} applications")
    return document


def _restore(moved: list[str], before: dict[str, str | None]) -> str:
    """Put the moved tags back where they were; say what could not be."""
    failed = []
    for target in reversed(moved):
        old = before.get(target)
        if old is None:
            failed.append(target)  # it did not exist before; a registry tag cannot be unset portably
            continue
        try:
            body, media_type = get_manifest(f"{target.rsplit(':', 1)[0]}@{old}")
            put_manifest(target, body, media_type)
        except RegistryError:
            failed.append(target)
    if not failed:
        return f"the {len(moved)} tags already moved were put back"
    return f"put back {len(moved) - len(failed)} of {len(moved)} moved tags; still moved: {', '.join(failed)}"
