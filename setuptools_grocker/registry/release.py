"""Publishing a workspace release: one immutable document, one pointer moved last.

During the build each application image is pushed under its *key tag* only (``NAME:k<key>``:
the key names the content). A registry offers no transaction, no lock, no compare-and-swap,
no create-if-absent and no way to delete one tag of a digest and spare the others, so a
release promises only what it can keep:

* the **release document** ``REGISTRY/ROOT-release:RELEASE`` names every application by
  digest, with its SBOM and provenance (registry/attach.py) pinned by their own digests. It
  never changes: a second release under the same name is refused unless its content is the
  same (then it is a re-run, and nothing is written);
* the **pointer** ``REGISTRY/ROOT-release:latest`` names the current release document. It is
  the only write that makes a release current, and it comes last of what counts: any failure
  before it leaves the previous release current and complete;
* the **convenience tags** of each application (version, version-gREV, moving tags, the
  release name) move after the pointer, best-effort. They may lag; the result lists those
  that did, and running the release again moves them (it is idempotent).

A release of some applications only (``--only``) copies the entries of the others from the
current document, so the pointer always names every application ever released.

Steps, all under an exclusive lock on ``.grocker/release.lock`` (``flock``: held for the whole
release, dropped by the kernel if the process dies), so two releases of one workspace on one
machine run one after the other:

1. read the pointer (a registry that does not answer stops the release: an unknown pointer
   could not be checked later);
2. verify every key tag's digest (missing, different or unreadable: stop), and find its attached documents;
3. publish the document (or find the same one there);
4. read the pointer again; if it moved since step 1 (a release from elsewhere), stop; else
   move it to the document;
5. move the convenience tags.

Between the second read of step 4 and the pointer's PUT another writer can still slip in
(milliseconds); the registry cannot prevent that, only the lock (one machine) or Buildbot's
MasterLock (one master) can.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from setuptools_grocker.errors import RegistryError, ReleaseConflict, ReleaseIncomplete, WorkspaceError
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.attach import artifact_ref
from setuptools_grocker.registry.client import (
    digest_of,
    get_manifest,
    push_document,
    put_manifest,
    read_document,
    retag,
)

#: The tag of the release-document repository that names the current release.
POINTER_TAG = "latest"
#: How long a release waits for another release of the same workspace to finish.
LOCK_WAIT_SECONDS = 900.0
#: Fields of a release document that may differ between two runs of the same release.
_RUN_FIELDS = ("created", "tool_version")


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
    #: ``sbom``/``provenance`` -> the attached document, pinned by digest (``registry/repo@sha256:...``).
    documents: dict[str, str] = field(default_factory=dict)


def release_id(apps: list[AppRelease]) -> str:
    """A name for a release when the user gave none: the date and a hash of its digests and of the documents
    attached to them. Another machine that pushes the same image again attaches its own provenance (who built
    it, when): a release naming that one is another release, not a clash with the first one's name."""
    digest = hashlib.sha256(json.dumps(sorted((a.name, a.digest, sorted(a.documents.items())) for a in apps))
                            .encode()).hexdigest()
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d") + "-" + digest[:12]


def check_release_name(name: str | None) -> None:
    """Refuse a release name that is the pointer's tag (the document would be its own pointer)."""
    if name == POINTER_TAG:
        raise WorkspaceError(f"'{POINTER_TAG}' cannot name a release: it is the tag of the release pointer",
                             "give another name to --release")


@contextmanager
def release_lock(path: Path, info: Callable[[str], None] = lambda _: None,
                 wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (waiting up to ``wait`` seconds for another holder).

    ``flock`` rather than a create-if-absent lock file: the kernel drops it when the holder
    dies, so a killed release never leaves a stale lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            holder = _holder(path)
            if time.monotonic() >= deadline:
                raise ReleaseConflict(f"another release of this workspace{holder} has held {path} for "
                                      f"{wait:.0f}s", "wait for it to finish, or stop it, then run the release again")
            if not announced:
                info(f"waiting for another release of this workspace{holder} to finish ({path})")
                announced = True
            time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor drops the lock


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def publish_release(apps: list[AppRelease], *, document_repo: str, release: str | None,
                    libraries: dict[str, str], workspace: str, tool_version: str, lock_path: Path,
                    carried: Sequence[str] = (), info: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Publish the release of ``apps``; return its document, with ``document`` and ``lagging`` added.

    ``carried`` names the workspace's other members (a release of some applications only):
    their entries are copied from the current release document, so the pointer always names
    every application of the workspace that was ever released. Raises before the pointer
    moved (the previous release stays current); once it moved the release is done, and the
    convenience tags that could not be moved are listed in ``lagging``.
    """
    if not apps:
        raise RegistryError("the workspace has no application to release", "add an application member")
    check_release_name(release)
    pointer = f"{document_repo}:{POINTER_TAG}"
    with release_lock(lock_path, info):
        # 1. the pointer as it is: the reference to tell whether it moved under us
        before = _digest(pointer, "reading the release pointer")
        # 2. verify
        for app in apps:
            found = _digest(app.key_ref, f"reading {app.key_ref}")
            if found is None:
                raise RegistryError(f"{app.name} is not in the registry as {app.key_ref}; no release tag was moved",
                                    "build and push it first (grocker workspace build --push)")
            if app.digest and found != app.digest:
                raise RegistryError(f"{app.key_ref} has digest {found[:19]}, the build pushed {app.digest[:19]}; "
                                    "no release tag was moved", "someone else pushed to that tag: build again")
            app.digest = found
            app.documents = _documents(app.key_ref, found)
            info(f"verified {app.key_ref} = {found}")
        kept_apps, kept_libraries = _carried(document_repo, before, carried, info)
        name = release or release_id(apps)
        document = {
            "release": name,
            "workspace": workspace,
            # Microseconds: the order of two releases made within one second decides which is newer.
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "tool_version": tool_version,
            "applications": dict(sorted({**kept_apps, **{
                a.name: {"version": a.version, "image": ImageRef.parse(a.key_ref).repository, "digest": a.digest,
                         "tags": sorted(set(a.tags)), **a.documents}
                for a in apps
            }}.items())),
            "libraries": dict(sorted({**kept_libraries, **libraries}.items())),
        }
        # 3. the immutable document
        doc_ref = f"{document_repo}:{name}"
        document, doc_digest, rerun = _publish_document(doc_ref, document, info)
        if rerun and before not in (None, doc_digest):
            _refuse_going_back(document_repo, pointer, before, document)
        # 4. the pointer, last of what counts
        _move_pointer(pointer, document_repo, doc_digest, before, info)
        # 5. the convenience tags: the release is done, these may lag
        lagging = _move_convenience_tags(apps, info)
    moved = sum(len(dict.fromkeys(a.tags)) for a in apps) - len(lagging)
    info(f"release {name}: {pointer} -> {doc_ref}; {moved} tags moved for {len(apps)} applications")
    return {**document, "document": {"image": doc_ref, "digest": doc_digest, "pointer": pointer},
            "lagging": lagging}


def lagging_error(document: dict[str, Any]) -> ReleaseIncomplete | None:
    """The error to report when a published release left convenience tags behind, else None."""
    lagging = document.get("lagging") or []
    if not lagging:
        return None
    tags = ", ".join(entry["tag"] for entry in lagging)
    return ReleaseIncomplete(f"release {document['release']} is published ({document['document']['pointer']} "
                             f"names it) but {len(lagging)} convenience tag(s) lag: {tags}",
                             "run the release again to move them (it is idempotent)",
                             details="\n".join(f"{e['tag']}: {e['error']}" for e in lagging))


def _digest(ref: str, doing: str) -> str | None:
    """``digest_of``, with the failure worded for a release (nothing moved yet when it is called)."""
    try:
        return digest_of(ref)
    except RegistryError as exc:
        raise RegistryError(f"{doing} failed: {exc.message}; no release tag was moved", exc.hint) from exc


#: The documents attached to an application image (registry/attach.py) that a release names: its key -> tag kind.
DOCUMENTS = {"sbom": "sbom", "provenance": "att"}


def _documents(key_ref: str, digest: str) -> dict[str, str]:
    """The SBOM and provenance attached to the image ``digest``, each pinned by its own digest: the release
    document links every application to them (absent when the image was pushed without them)."""
    repository = ImageRef.parse(key_ref).repository
    found = {}
    for key, kind in DOCUMENTS.items():
        pinned = _digest(artifact_ref(key_ref, digest, kind), f"reading the {key} of {key_ref}")
        if pinned is not None:
            found[key] = f"{repository}@{pinned}"
    return found


def _carried(document_repo: str, current: str | None, names: Sequence[str],
             info: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, str]]:
    """The entries of ``names`` in the current release document (none when there is none yet)."""
    if not names or current is None:
        return {}, {}
    ref = f"{document_repo}@{current}"
    try:
        document = read_document(ref)
    except RegistryError as exc:
        raise RegistryError(f"reading the current release document {ref} failed: {exc.message}; "
                            "no release tag was moved", exc.hint) from exc
    apps = {n: e for n, e in (document.get("applications") or {}).items() if n in names}
    libraries = {n: v for n, v in (document.get("libraries") or {}).items() if n in names}
    if apps:
        info(f"kept from release {document.get('release')}: {', '.join(sorted(apps))}")
    return apps, libraries


def _content(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in _RUN_FIELDS}


def _publish_document(doc_ref: str, document: dict[str, Any],
                      info: Callable[[str], None]) -> tuple[dict[str, Any], str, bool]:
    """Push the document under its name, or find the same one there (a re-run); refuse to change it."""
    existing = _digest(doc_ref, f"reading the release document {doc_ref}")
    if existing is not None:
        try:
            stored = read_document(doc_ref)
        except RegistryError as exc:
            raise RegistryError(f"reading the release document {doc_ref} failed: {exc.message}; "
                                "no release tag was moved", exc.hint) from exc
        if _content(stored) != _content(document):
            raise ReleaseConflict(f"release {document['release']} already exists ({doc_ref}) with other content, "
                                  "and a release document never changes; no release tag was moved",
                                  "give this release another name (--release NAME)")
        info(f"release document {doc_ref} = {existing} (already there: a re-run)")
        return stored, existing, True
    try:
        digest = push_document(doc_ref, "release.json", document)
    except RegistryError as exc:
        raise RegistryError(f"publishing the release document {doc_ref} failed: {exc.message}; "
                            "no release tag was moved, the previous release is still current", exc.hint) from exc
    info(f"release document {doc_ref} = {digest}")
    return document, digest, False


def _refuse_going_back(document_repo: str, pointer: str, current: str, document: dict[str, Any]) -> None:
    """A re-run of a release that a newer one superseded must not move the pointer back to it.

    Without it, running an old release again to move its lagging tags would silently undo
    the releases made since. Going back is a new release (a new name, a new document).
    """
    try:
        newest = read_document(f"{document_repo}@{current}")
        newer = _created(newest) > _created(document)
    except (RegistryError, KeyError, TypeError, ValueError):
        return  # not a document of ours, or unreadable: the pointer checks of step 4 still apply
    if newer:
        raise ReleaseConflict(f"release {document['release']} is older than the current release "
                              f"{newest.get('release')} ({pointer}); moving the pointer back would undo it, "
                              "nothing was moved", "to make this content current again, release it under a new "
                              "name (--release NAME)")


def _created(document: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(str(document["created"]))


def _move_pointer(pointer: str, document_repo: str, doc_digest: str, before: str | None,
                  info: Callable[[str], None]) -> None:
    now = _digest(pointer, "reading the release pointer again")
    if now == doc_digest:
        info(f"{pointer} already names this release")
        return
    if now != before:
        raise ReleaseConflict(f"the release pointer moved under you (another release?): {pointer} was "
                              f"{(before or 'absent')[:19]}, is now {(now or 'absent')[:19]}; it was left as it is",
                              f"see which release is current (docker pull {pointer}), then run this release "
                              "again if it should be")
    try:
        body, media_type = get_manifest(f"{document_repo}@{doc_digest}")
        put_manifest(pointer, body, media_type)
    except RegistryError as exc:
        # A PUT whose answer was lost may still have landed: say what is true.
        try:
            landed = digest_of(pointer) == doc_digest
        except RegistryError:
            landed = False
        if not landed:
            raise RegistryError(f"moving the release pointer {pointer} failed: {exc.message}; "
                                "the previous release is still current, no application tag was moved",
                                exc.hint) from exc
    info(f"{pointer} -> {doc_digest}")


def _move_convenience_tags(apps: list[AppRelease], info: Callable[[str], None]) -> list[dict[str, str]]:
    """Point every application's tags at its digest; return those that could not be moved."""
    lagging = []
    for app in apps:
        repo = ImageRef.parse(app.key_ref)
        for tag in dict.fromkeys(app.tags):
            target = str(repo.with_tag(tag))
            try:
                if digest_of(target) != app.digest:  # a re-run writes only what lags
                    retag(f"{repo.repository}@{app.digest}", target)
            except RegistryError as exc:
                lagging.append({"tag": target, "error": exc.message})
                info(f"{target} lags: {exc.message}")
    return lagging
