"""The names of an image: its default reference and the tags beside the version tag."""
from __future__ import annotations

from packaging.utils import canonicalize_name

from setuptools_grocker.config import Config
from setuptools_grocker.ref import ImageRef


def tag_safe(version: str) -> str:
    """A PEP 440 version as a Docker tag ('+' is not allowed in tags)."""
    return version.replace("+", "-")


def default_reference(config: Config, name: str, version: str) -> str:
    repo = config.image_name or canonicalize_name(name)
    if config.registry:
        repo = f"{config.registry.rstrip('/')}/{repo}"
    return f"{repo}:{tag_safe(version)}"


def extra_tags(config: Config, ref: str, version: str, revision: str | None) -> list[str]:
    """Tags beside the version tag: version + git revision, and the configured moving tags."""
    import datetime

    parsed = ImageRef.parse(ref)
    tags = []
    if revision and not revision.endswith("-dirty"):
        tags.append(str(parsed.with_tag(f"{tag_safe(version)}-g{revision[:12]}")))
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    tags += [str(parsed.with_tag(t.replace("{date}", today))) for t in config.moving_tags]
    return tags
