"""The provenance of a runtime image: an in-toto Statement v1 with an SLSA provenance v1 predicate.

Written by the build itself, unsigned, right after the image is assembled: who built it (the
setuptools-grocker version, the plugins loaded), from what (the project, its extras, a digest of its
image configuration; the source digest and git commit, each internal library's commit and cache key,
the base, root and compiler image IDs, the pip configuration *without credentials*), and what came out
(the image ID, which is its config digest, and its layers' diff IDs).

The statement names the image ID, which an image cannot contain (its ID is the hash of its config,
which lists its layers): it is kept *outside* the image, in ``CACHE_HOME/provenance/<image id>.json``,
and pushed next to the image in the registry (``sha256-<hex>.att``, registry/attach.py), where the
manifest digest is added to its subjects. It is the SLSA provenance *format*, not an SLSA level: a
record written by the build that it describes, unsigned, proves nothing against a tampered build (SLSA
Build L1 at most).
"""
from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from setuptools_grocker.fs import write_atomic
from setuptools_grocker.image.recipes import tool_identity
from setuptools_grocker.image.records import now, provenance_path
from setuptools_grocker.image.sbom import SBOM_PATH, sbom_of
from setuptools_grocker.pipeline.project import git_revision
from setuptools_grocker.progress import redact

if TYPE_CHECKING:
    from setuptools_grocker.config import Config
    from setuptools_grocker.engine import Engine
    from setuptools_grocker.image.recipes import BaseImages
    from setuptools_grocker.plugin.manager import PluginManager

__all__ = ["BUILD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "record_provenance", "scrub_url",
           "scrubbed_pip", "statement"]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:setuptools-grocker:build:v1"
BUILDER_ID = "urn:setuptools-grocker:builder"
MEDIA_TYPE = "application/vnd.in-toto+json"


def scrub_url(value: str) -> str:
    """``value`` without what may be a credential: a URL's user and password, its query and fragment
    (``https://user:token@host/simple?t=x`` -> ``https://host/simple``); other words unchanged."""
    if "://" not in value:
        return value
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unreadable URL>"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


#: Variables whose value is a credential whatever its shape (``UV_INDEX_..._PASSWORD``, ``..._TOKEN``): not recorded.
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|AUTH|API_?KEY|ACCESS_?KEY", re.IGNORECASE)


def scrubbed_pip(pip_env: Mapping[str, str]) -> dict[str, str]:
    """The forwarded package-installer options (``PIP_*``, ``UV_*``) with every URL scrubbed (:func:`scrub_url`),
    the values of variables named like credentials replaced by ``***``, and what the output redaction hides
    hidden too (a registered secret, a token parameter)."""
    return {k: "***" if _SECRET_NAME.search(k) else redact(" ".join(scrub_url(word) for word in v.split()))
            for k, v in sorted(pip_env.items())}


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _commit(revision: str | None) -> dict[str, str]:
    if not revision:
        return {}
    # A dirty tree's commit is not what was built: the annotation keeps "-dirty", the digest the commit.
    return {"gitCommit": revision[:-len("-dirty")] if revision.endswith("-dirty") else revision}


def statement(*, name: str, version: str, image_id: str, layers: Sequence[str], config: Mapping[str, Any],
              extras: Sequence[str], key: str, source_digest: str | None, revision: str | None,
              pip_env: Mapping[str, str], plugins: Sequence[Mapping[str, str]],
              internal: Mapping[str, Mapping[str, str | None]], images: Mapping[str, str | None],
              tool: str, finished: str, sbom_sha256: str | None = None,
              local: Mapping[str, str] | None = None, lock: tuple[str, str] | None = None) -> dict[str, Any]:
    """The in-toto statement (a plain dict, JSON-ready) of one image from its build's values."""
    dependencies: list[dict[str, Any]] = [{
        "name": "source", "uri": f"project:{name}",
        "digest": {**({"sha256": source_digest} if source_digest else {}), **_commit(revision)},
        **({"annotations": {"revision": revision}} if revision else {}),
    }]
    for lib, data in sorted(internal.items()):
        dependencies.append({"name": f"internal:{lib}", "uri": f"project:{lib}",
                             "digest": _commit(data.get("revision")),
                             "annotations": {k: v for k, v in data.items() if v}})
    for directory, digest in sorted((local or {}).items()):
        dependencies.append({"name": f"local-package:{directory}", "digest": {"sha256": digest}})
    if lock is not None:  # the application's pylock.toml (its path in the project, the sha256 of its bytes)
        dependencies.append({"name": "lock", "uri": f"project-file:{lock[0]}", "digest": {"sha256": lock[1]}})
    for role, image in sorted(images.items()):
        if image:
            dependencies.append({"name": f"{role}-image", "digest": {"sha256": image.split(":")[-1]}})
    dependencies.append({"name": "pip-configuration", "annotations": scrubbed_pip(pip_env)})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": image_id.split(":")[-1]},
                     "annotations": {"kind": "image config (image ID)"}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"project": name, "version": version, "extras": sorted(extras),
                                       "configDigest": _digest(config)},
                "internalParameters": {"cacheKey": key},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"setuptools-grocker": tool},
                            "builderDependencies": [{"name": f"plugin:{p['name']}", "annotations": dict(p)}
                                                    for p in plugins]},
                "metadata": {"finishedOn": finished},
                "byproducts": [{"name": f"layer-{i}", "digest": {"sha256": d.split(":")[-1]},
                                "annotations": {"kind": "layer diff ID"}} for i, d in enumerate(layers)]
                + ([{"name": "sbom", "uri": f"file://{SBOM_PATH}",
                     "digest": {"sha256": sbom_sha256}, "mediaType": "application/vnd.cyclonedx+json"}]
                   if sbom_sha256 else []),
            },
        },
    }


def record_provenance(engine: Engine, home: Path, image_id: str, config: Config, *, images: BaseImages,
                      name: str, version: str, key: str, source_digest: str | None, revision: str | None,
                      pip_env: Mapping[str, str], plugins: PluginManager | None,
                      internal: Mapping[str, tuple[Path, str]] | None = None,
                      local: Mapping[str, str] | None = None, lock: tuple[str, str] | None = None) -> dict[str, Any]:
    """Write the statement of ``image_id`` to ``home/provenance/`` (atomically) and return it.

    ``internal``: each internal library of the image (a workspace build), its directory and its cache key;
    ``local``: the source digest of each ``local-packages`` directory (a single build), by directory name;
    ``lock``: the application's lock, its path relative to the project and the sha256 of its bytes.
    """
    attrs = engine.image_attrs(image_id) or {}
    sbom = sbom_of(engine, image_id)
    document = statement(
        name=name, version=version, image_id=image_id, layers=list((attrs.get("RootFS") or {}).get("Layers") or []),
        config=config.image_inputs(), extras=sorted(config.extras), key=key, source_digest=source_digest,
        revision=revision, pip_env=pip_env,
        plugins=[{"name": p.name, "origin": p.origin} for p in (plugins.loaded if plugins is not None else [])],
        internal={lib: {"revision": git_revision(path), "cacheKey": lib_key}
                  for lib, (path, lib_key) in (internal or {}).items()},
        images={"base": images.id_of(engine, config.base_image), "root": images.id_of(engine, images.root),
                "compiler": images.id_of(engine, images.compiler)},
        tool=tool_identity(), finished=now(),
        sbom_sha256=hashlib.sha256(sbom).hexdigest() if sbom is not None else None, local=local, lock=lock)
    path = provenance_path(home, image_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return document
