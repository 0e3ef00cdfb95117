"""Image references: ``[host[:port]/]repository[:tag][@digest]``, split in one place.

A reference is split the way the Docker Engine splits it: the digest follows the ``@``, the tag
follows the last ``:`` *after the last ``/``* (so ``127.0.0.1:5000/app`` has a port, not a tag),
and the first path component is a registry host when it has a ``.`` or a ``:`` or is
``localhost``. This module imports nothing of the pipeline: every layer may use it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from setuptools_grocker.errors import ConfigError

#: A repository path without its host: lowercase components joined by ``/`` (the distribution spec).
NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
#: A tag: at most 128 characters, not starting with '.' or '-'.
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: ``algorithm:encoded`` as the OCI image spec writes a digest.
DIGEST_PATTERN = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")


def looks_like_host(part: str) -> bool:
    """Whether the first component of a reference names a registry rather than a repository."""
    return "." in part or ":" in part or part == "localhost"


@dataclass(frozen=True)
class ImageRef:
    """One image reference, split into its parts; ``str()`` gives it back as written."""

    #: ``[host[:port]/]path``: everything before the tag and digest.
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Split ``text`` without judging it (see :func:`parse_reference` for the checked form)."""
        name, at, digest = text.partition("@")
        tag = None
        if ":" in name.rsplit("/", 1)[-1]:
            name, tag = name.rsplit(":", 1)
        return cls(name, tag, digest if at else None)

    @property
    def host(self) -> str | None:
        """The registry host (with its port), or None for a reference the engine resolves itself."""
        first, slash, _ = self.repository.partition("/")
        return first if slash and looks_like_host(first) else None

    @property
    def path(self) -> str:
        """The repository without its host: what goes into ``/v2/<path>/...`` on the registry."""
        return self.repository.split("/", 1)[1] if self.host is not None else self.repository

    @property
    def reference(self) -> str:
        """What the registry API names a manifest by: the digest, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository under ``tag`` (a digest no longer applies)."""
        return replace(self, tag=tag, digest=None)

    def valid(self) -> bool:
        """Whether every part is well formed (the host is left to the engine and the network)."""
        return bool(NAME_PATTERN.match(self.path)
                    and (self.tag is None or TAG_PATTERN.match(self.tag))
                    and (self.digest is None or DIGEST_PATTERN.match(self.digest)))

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag is not None else "") + \
            (f"@{self.digest}" if self.digest is not None else "")


def parse_reference(text: str, *, digest: bool = False) -> ImageRef:
    """``text`` parsed and checked; ConfigError when it is not a valid reference.

    A digest is refused unless ``digest`` is true: grocker *tags* the references it is given.
    """
    ref = ImageRef.parse(text)
    if not ref.valid() or (ref.digest is not None and not digest):
        raise ConfigError(
            f"image reference {text!r} is not valid",
            "use NAME:TAG with a lowercase name and a tag of letters, digits, '_', '.', '-'",
        )
    return ref
