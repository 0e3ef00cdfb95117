"""What a workspace run is asked (:class:`WorkspaceOptions`) and what it plans (:class:`PlanEntry`), and the
names a member's image gets."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from setuptools_grocker.pipeline.naming import default_reference
from setuptools_grocker.pipeline.stages import member_stages
from setuptools_grocker.pipeline.workspace import Member
from setuptools_grocker.ref import ImageRef
from setuptools_grocker.registry.client import key_tag
from setuptools_grocker.registry.wheelhouse import IndexedWheel


def stages_of(member: Member, push: bool) -> list[str]:
    """The stages of one member, in order (``push`` only when asked for)."""
    return member_stages(member.kind, has_tests=member.has_tests, push=push)


@dataclass(frozen=True)
class WorkspaceOptions:
    jobs: int = 1
    only: tuple[str, ...] = ()
    fail_fast: bool = False
    push: bool = False
    no_cache: bool = False
    #: The applications compiled in this run resolve their closure again (no reuse of the previous one).
    upgrade: bool = False
    #: The wheel index (no credentials: they come from GROCKER_WORKSPACE_INDEX_URL or ~/.netrc).
    index_url: str | None = None
    #: Run only these stages (default: all); with ``no_deps``, build only the members named in ``only``.
    stages: tuple[str, ...] = ()
    no_deps: bool = False
    #: With push: also point this tag at every application image (and name the release document).
    release: str | None = None
    #: Push the root and compiler images this run builds to the shared cache (``build-cache``).
    cache_write: bool = False


@dataclass
class PlanEntry:
    name: str
    kind: str
    version: str
    level: int
    depends_on: list[str]
    key: str
    reason: str | None  # None: up to date
    #: Where this exact build is, when it is there and not here: its URL on the wheel index
    #: (no credentials, no query) or ``registry:REF``.
    fetch: str | None = None
    stages: list[str] = dataclasses.field(default_factory=list)
    #: The wheel index's link to this build (not part of the JSON plan).
    found: IndexedWheel | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "version": self.version, "level": self.level,
                "depends_on": self.depends_on, "key": self.key, "up_to_date": self.reason is None,
                "reason": self.reason, "fetch": self.fetch, "stages": self.stages}


def reference(member: Member) -> str:
    """The image reference of an application member (its release names derive from it)."""
    return default_reference(member.config, member.name, member.version)


def key_reference(member: Member, key: str) -> str:
    """The immutable key tag a member's image is pushed under (the release moves the other names)."""
    return str(ImageRef.parse(reference(member)).with_tag(key_tag(key)))


def print_plan(entries: list[PlanEntry], write: Callable[[str], None]) -> None:
    width = max((len(e.name) for e in entries), default=4)
    write(f"{'level':<5}  {'member':<{width}}  {'kind':<11}  {'version':<10}  status")
    for e in entries:
        status = "up to date" if e.reason is None else f"rebuild: {e.reason}"
        if e.fetch:
            status = "up to date (in the registry)" if e.fetch.startswith("registry:") else \
                "up to date (on the wheel index)"
        write(f"{e.level:<5}  {e.name:<{width}}  {e.kind:<11}  {e.version:<10}  {status}")
    todo = sum(1 for e in entries if e.reason is not None)
    write(f"{len(entries)} members, {todo} to build, {len(entries) - todo} up to date")
