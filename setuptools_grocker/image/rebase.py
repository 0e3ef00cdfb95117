"""Rebase: an application image put on another root image without rebuilding its wheels.

As ``pack rebase`` does, only the image's config is rewritten: its ``rootfs.diff_ids`` and its
``history`` lose the old root's layers and get the new root's, in front of the same application
layers (their tar blobs are kept byte for byte). The pipeline (``pipeline/rebase.py``) checks that
the application does not depend on what the roots differ in, loads the result and smoke-tests it.

The SBOM is a file of an application layer (``sbom.py``): rewriting that layer would change its
diff ID, so the SBOM of the rebased image (the same Python distributions, the new root's Debian
packages) goes into one small layer of its own on top, which shadows the old file at the same path.
A second rebase replaces that layer instead of stacking another.

Everything here is pure (no engine): the config rewriting, the comparison of two roots'
interpreters and Debian packages, the SBOM's new content.
"""
from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from setuptools_grocker.errors import RebaseError
from setuptools_grocker.image.sbom import DebPackage, PythonDist, make_sbom

__all__ = ["INTERPRETER_PROBE", "REBASED_LABEL", "SBOM_LAYER_PREFIX", "Layers", "incompatibilities",
           "package_changes", "rebased_config", "rebased_sbom", "split_layers"]

#: How assemble.py names the history entry of each root layer (``root image <ID> layer <N>``).
ROOT_HISTORY_PREFIX = "root image "
#: The history entry of the SBOM layer a rebase adds (followed by the new root's ID).
SBOM_LAYER_PREFIX = "setuptools-grocker: SBOM after a rebase onto root "
#: The label naming the image a rebased image was made from (the first one, over several rebases).
REBASED_LABEL = "io.grocker.rebased-from"

#: Run by the roots' own ``python3 -I`` (argv[1]: the image's user): what the application's venv and
#: bytecode depend on. The venv links to the root's interpreter, its bytecode carries the root's magic
#: number, its compiled extensions are built for the root's ABI; volumes are owned by the user's uid.
INTERPRETER_PROBE = r"""
import importlib.util, json, os, platform, pwd, sys, sysconfig
try:
    uid = pwd.getpwnam(sys.argv[1]).pw_uid
except KeyError:
    uid = None
print(json.dumps({"version": platform.python_version(), "minor": "%d.%d" % sys.version_info[:2],
                  "implementation": sys.implementation.name, "cache_tag": sys.implementation.cache_tag,
                  "soabi": sysconfig.get_config_var("SOABI"), "magic": importlib.util.MAGIC_NUMBER.hex(),
                  "executable": os.path.realpath(sys.executable), "machine": platform.machine(), "uid": uid}))
"""

#: The interpreter facts that must be equal for the application's layers to work on the new root
#: (the micro version may change: same ABI, same bytecode magic number within a minor release).
_MUST_MATCH = {
    "minor": "Python version",
    "implementation": "Python implementation",
    "cache_tag": "bytecode cache tag",
    "magic": "bytecode magic number",
    "soabi": "extension ABI (SOABI)",
    "executable": "interpreter path",
    "machine": "machine",
    "uid": "uid of the image's user",
}


@dataclass(frozen=True)
class Layers:
    """An application image's layers, split into its root's and its own."""

    root_id: str | None
    root: list[str]
    app: list[str]
    #: The history entries of ``app``, in order (one per layer: assemble.py writes no empty layer).
    app_history: list[dict[str, Any]] = field(default_factory=list)
    #: The SBOM layer of an earlier rebase (left out of ``app``: a rebase writes a new one).
    sbom_layer: str | None = None


def split_layers(config: Mapping[str, Any]) -> Layers:
    """Split the image config ``config`` (the JSON of ``docker save``) into root and application layers.

    The root's layers are the leading ones whose history says ``root image ...`` (assemble.py writes
    one entry per layer); an image not assembled by grocker has none and is refused.
    """
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    history = [h for h in config.get("history") or [] if not h.get("empty_layer")]
    if len(history) != len(diff_ids):
        raise RebaseError(f"the image's history has {len(history)} layer entries for {len(diff_ids)} layers",
                          "rebase only images assembled by setuptools-grocker")
    count = 0
    root_id = None
    while count < len(history) and str(history[count].get("created_by", "")).startswith(ROOT_HISTORY_PREFIX):
        root_id = root_id or str(history[count]["created_by"]).split()[2]
        count += 1
    if count == 0:
        raise RebaseError("the image's history names no root image layers (it was not assembled by grocker)",
                          "rebase only images assembled by setuptools-grocker")
    app, app_history, sbom = [], [], None
    for diff_id, entry in zip(diff_ids[count:], history[count:]):
        if str(entry.get("created_by", "")).startswith(SBOM_LAYER_PREFIX):
            sbom = diff_id
            continue
        app.append(diff_id)
        app_history.append(dict(entry))
    return Layers(root_id=root_id, root=diff_ids[:count], app=app, app_history=app_history, sbom_layer=sbom)


def _env(items: Sequence[str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        found[key] = value
    return found


def rebased_config(app: Mapping[str, Any], *, image_id: str, new_root: Mapping[str, Any],
                   old_root_env: Sequence[str] | None, sbom_diff_id: str | None) -> bytes:
    """The config of ``app`` (image ``image_id``) on ``new_root`` (its ``docker image inspect`` data), its
    application layers kept, the SBOM layer ``sbom_diff_id`` on top; serialised as assemble.py does.

    A variable the image took from its old root (same value as in ``old_root_env``) takes the new root's
    value; the image's own variables stay. ``created`` stays: the same image on the same root gives the
    same ID.
    """
    layers = split_layers(app)
    created = str(app.get("created") or "1980-01-01T00:00:00Z")
    config = dict(app.get("config") or {})
    old_env, new_env, env = _env(old_root_env), _env((new_root.get("Config") or {}).get("Env")), \
        _env(config.get("Env"))
    for key, value in new_env.items():
        if key not in env or (key in old_env and env[key] == old_env[key]):
            env[key] = value
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    labels = dict(config.get("Labels") or {})
    labels.setdefault(REBASED_LABEL, image_id)
    config["Labels"] = labels
    root_layers = list(new_root["RootFS"]["Layers"])
    history = [{"created": created, "created_by": f"{ROOT_HISTORY_PREFIX}{new_root['Id']} layer {i + 1}"}
               for i in range(len(root_layers))]
    history += layers.app_history
    diff_ids = [*root_layers, *layers.app]
    if sbom_diff_id is not None:
        history.append({"created": created, "created_by": f"{SBOM_LAYER_PREFIX}{new_root['Id']}"})
        diff_ids.append(sbom_diff_id)
    data = {**{k: v for k, v in app.items() if k not in ("config", "rootfs", "history")},
            "architecture": new_root.get("Architecture", app.get("architecture", "amd64")),
            "os": new_root.get("Os", app.get("os", "linux")),
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def incompatibilities(old: Mapping[str, Any], new: Mapping[str, Any], *, old_packages: Sequence[DebPackage],
                      new_packages: Sequence[DebPackage]) -> list[str]:
    """Why the application layers of an image on a root with interpreter ``old`` (INTERPRETER_PROBE's answer)
    and Debian packages ``old_packages`` would not work on ``new``/``new_packages``; empty: they would.

    A Debian package the new root lacks is a reason too: the application may load its libraries.
    """
    reasons = [f"{what} {old.get(key)!s} -> {new.get(key)!s}" for key, what in _MUST_MATCH.items()
               if old.get(key) != new.get(key)]
    gone = sorted({p.name for p in old_packages} - {p.name for p in new_packages})
    if gone:
        reasons.append(f"Debian package(s) removed: {', '.join(gone[:5])}" + (" ..." if len(gone) > 5 else ""))
    return reasons


def package_changes(old: Sequence[DebPackage], new: Sequence[DebPackage]) -> list[dict[str, str | None]]:
    """The Debian packages that differ between two roots: ``{"name", "old", "new"}`` (None: absent), by name."""
    before = {p.name: p.version for p in old}
    after = {p.name: p.version for p in new}
    return [{"name": name, "old": before.get(name), "new": after.get(name)}
            for name in sorted(before.keys() | after.keys()) if before.get(name) != after.get(name)]


def _dists(document: Mapping[str, Any]) -> list[PythonDist]:
    found = []
    for c in document.get("components") or []:
        props = {p.get("name"): p.get("value") for p in c.get("properties") or []}
        if props.get("grocker:kind") != "python":
            continue
        licence, expression = None, False
        for entry in c.get("licenses") or []:  # make_sbom writes at most one
            if entry.get("expression"):
                licence, expression = str(entry["expression"]), True
            else:
                inner = entry.get("license") or {}
                licence = str(inner.get("name") or inner.get("id") or "") or None
        sha = next((h.get("content") for h in c.get("hashes") or [] if h.get("alg") == "SHA-256"), "")
        found.append(PythonDist(name=str(c["name"]), version=str(c["version"]), sha256=str(sha),
                                wheel=str(props.get("grocker:wheel") or ""),
                                internal=props.get("grocker:internal") == "true", licence=licence,
                                expression=expression))
    return sorted(found, key=lambda d: (d.name, d.version))


def rebased_sbom(document: bytes, *, debs: Sequence[DebPackage], root_id: str) -> bytes:
    """The SBOM ``document`` (made by sbom.make_sbom) with the Debian packages ``debs`` of the root ``root_id``:
    the same distributions, base image and timestamp, so a document rewritten onto its own root is the same
    bytes (the serial number is derived from every component, hence new when a package changed)."""
    try:
        data = json.loads(document)
        meta = data["metadata"]
        image = meta["component"]
        epoch = int(datetime.datetime.fromisoformat(str(meta["timestamp"]).replace("Z", "+00:00")).timestamp())
    except (ValueError, KeyError, TypeError) as exc:
        raise RebaseError(f"the image's SBOM cannot be read ({exc})",
                          "rebuild the image with this version of setuptools-grocker") from exc
    base = next((c for c in data.get("components") or []
                 if {"name": "grocker:kind", "value": "base-image"} in (c.get("properties") or [])), None)
    return make_sbom(name=str(image["name"]), version=str(image["version"]), dists=_dists(data), debs=debs,
                     base_image=str(base["name"]) if base else "", base_id=str(base["version"]) if base else None,
                     root_id=root_id, epoch=epoch)


def sha256_id(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()
