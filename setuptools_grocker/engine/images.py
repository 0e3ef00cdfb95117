"""Images: inspect, pull, build, tag, load and save.

Each operation is echoed as its ``docker`` command line; build and load failures become
:class:`~setuptools_grocker.errors.ImageBuildError`, a base image that cannot be pulled
:class:`~setuptools_grocker.errors.BaseImageError`.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO, Mapping

from setuptools_grocker.engine.connection import Connection, docker, short
from setuptools_grocker.errors import BaseImageError, EngineUnavailable, ImageBuildError
from setuptools_grocker.ref import ImageRef

__all__ = ["Images"]


class Images(Connection):
    """The image operations of :class:`~setuptools_grocker.engine.Engine`."""

    def image_attrs(self, ref: str) -> dict[str, Any] | None:
        """The ``docker image inspect`` data of ``ref``, or None when the engine lacks it."""
        try:
            return self._call(f"inspect {ref}", self.client.api.inspect_image, ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise

    def image_id(self, ref: str) -> str | None:
        attrs = self.image_attrs(ref)
        return attrs["Id"] if attrs else None

    def ensure_image(self, ref: str, *, base: bool = True) -> dict[str, Any]:
        """Return the attributes of ``ref`` (a base image unless ``base`` is false), pulling it when absent.

        A base's pull says what it got in one line; a pull by a registry's tag warns that the tag can move (the
        root and compiler keys follow the base's content: machines sharing a base pin it by digest).
        """
        attrs = self.image_attrs(ref)
        if attrs:
            return attrs
        parsed = ImageRef.parse(ref)
        if base and parsed.digest is None and parsed.host is not None:
            self.progress.warn(f"base image {ref} is pulled by tag, and a tag can move: pin it by digest "
                               f"(base-image = \"{parsed.repository}@sha256:...\", printed by "
                               f"`grocker bootstrap-base --push`)")
        self.progress.command(["docker", "pull", ref])
        try:
            self._call(f"pull {ref}", self.client.api.pull, ref)
        except docker.errors.APIError as exc:
            if parsed.digest is not None:
                raise BaseImageError(
                    f"base image '{ref}' is not in the engine and its registry does not have that digest "
                    f"({short(exc)})",
                    "push it from the machine that has it (`grocker bootstrap-base --push "
                    f"{parsed.repository}`) and pin the digest that command prints",
                ) from exc
            raise BaseImageError(
                f"base image '{ref}' is not in the engine and could not be pulled ({short(exc)})",
                f"build one with `grocker bootstrap-base --tag {ref}`, or set base-image to an image you have",
            ) from exc
        attrs = self.image_attrs(ref)
        if not attrs:  # pragma: no cover - the engine said it pulled it
            raise BaseImageError(f"base image '{ref}' was pulled but cannot be inspected")
        how = "by digest" if parsed.digest is not None else "by tag"
        if base:
            self.progress.info(f"base image {ref} pulled {how}: image {str(attrs['Id'])[7:19]}, "
                               f"{int(attrs.get('Size') or 0) / 1e6:.1f} MB unpacked")
        return attrs

    def build(self, context: Path, *, tag: str | None = None, nocache: bool = False,
              labels: Mapping[str, str] | None = None, what: str = "image") -> str:
        """Build ``context/Dockerfile`` with the classic builder; return the image ID."""
        argv = ["docker", "build", "--rm", "--force-rm"]
        if tag:
            argv += ["-t", tag]
        if nocache:
            argv.append("--no-cache")
        self.progress.command(argv + [str(context)])
        tail: deque[str] = deque(maxlen=40)
        image_id = None
        try:
            stream = self._call(
                f"build the {what}",
                self.client.api.build,
                path=str(context),
                tag=tag,
                rm=True,
                forcerm=True,
                nocache=nocache,
                decode=True,
                labels=dict(labels or {}),
            )
            for chunk in stream:
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        if line.strip():
                            tail.append(line)
                            self.progress.output(line)
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if "error" in chunk:
                    tail.append(chunk["error"])
                    raise ImageBuildError(
                        f"building the {what} failed: {chunk['error'].strip().splitlines()[-1]}",
                        self.progress.see("the build output"),
                        details="\n".join(tail),
                    )
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"building the {what} failed: {short(exc)}",
                                  self.progress.see("the build output"), details="\n".join(tail)) from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the Docker Engine stopped answering while building the {what}",
                                    "check that dockerd is running, then run the build again") from exc
        if image_id is None:
            raise ImageBuildError(f"building the {what} produced no image", self.progress.see("the build output"),
                                  details="\n".join(tail))
        return image_id

    def tag(self, image_id: str, ref: str) -> None:
        parsed = ImageRef.parse(ref)
        self.progress.command(["docker", "tag", image_id[7:19] if image_id.startswith("sha256:") else image_id, ref])
        self._call(f"tag {ref}", self.client.api.tag, image_id, parsed.repository, parsed.tag or "latest",
                   force=True)

    def load_file(self, archive: Path, what: str) -> None:
        """``docker load`` an image archive from a file, streamed (a base image's is ~100 MB)."""
        with archive.open("rb") as stream:
            self.load(stream, what, shown=["docker", "load", "-i", str(archive)])

    def load(self, archive: bytes | BinaryIO, what: str, shown: list[str] | None = None) -> None:
        """``docker load`` an image archive (layers the engine already has may be left out)."""
        self.progress.command(shown or ["docker", "load"])
        try:
            answer = self._call(f"load the {what}", self.client.api.load_image, archive)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"loading the {what} failed: {short(exc)}", "see the engine log") from exc
        for chunk in answer or []:
            if isinstance(chunk, dict) and chunk.get("error"):
                raise ImageBuildError(f"loading the {what} failed: {chunk['error']}", "see the engine log")

    def save_image(self, ref: str) -> tuple[bytes, dict[str, bytes]]:
        """``docker save``: the image config's exact bytes and its layer tars by diff ID."""
        self.progress.command(["docker", "save", ref])
        data = b"".join(self._call(f"save {ref}", self.client.api.get_image, ref))
        layers: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            config = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
            for name in manifest[0]["Layers"]:
                blob = tar.extractfile(name).read()  # type: ignore[union-attr]
                layers["sha256:" + hashlib.sha256(blob).hexdigest()] = blob
        return config, layers

    def labelled_images(self, label: str) -> list[dict[str, Any]]:
        """The inspect data of every image labelled ``label`` (``KEY`` or ``KEY=VALUE``).

        Each carries ``UniqueSize`` too: the bytes of its layers no other image uses (``docker
        system df -v``'s SIZE - SHARED SIZE), what removing it alone would free.
        """
        listed = self._call("list images", self.client.api.images, filters={"label": label})
        unique: dict[str, int] = {}
        try:
            for entry in (self._call("measure images", self.client.api.df).get("Images") or []):
                if entry.get("SharedSize", -1) >= 0:
                    unique[entry["Id"]] = int(entry.get("Size", 0)) - int(entry["SharedSize"])
        except docker.errors.APIError:
            pass
        found = []
        for entry in listed:
            attrs = self.image_attrs(entry["Id"])
            if attrs is not None:
                attrs["UniqueSize"] = unique.get(entry["Id"], int(attrs.get("Size") or 0))
                found.append(attrs)
        return found

    def images_of_containers(self) -> set[str]:
        """The image IDs of every container, running or stopped (the engine refuses to remove those)."""
        listed = self._call("list containers", self.client.api.containers, all=True)
        return {str(c.get("ImageID")) for c in listed if c.get("ImageID")}

    def remove_image(self, ref: str) -> str | None:
        """``docker rmi REF`` (never forced); None when done, else the engine's reason."""
        self.progress.command(["docker", "rmi", ref[7:19] if ref.startswith("sha256:") else ref])
        try:
            self._call(f"remove {ref}", self.client.api.remove_image, ref, force=False, noprune=False)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            return short(exc)
        return None


def load_archive(config: bytes, below: list[str], layers: list[tuple[str, bytes]]) -> bytes:
    """A ``docker load`` archive: the image config and the tars of its new ``layers`` (diff ID, tar or gzip
    bytes); the layers ``below`` them (diff IDs) are named by the manifest and left out: the engine has them.

    The engine loads a layer only when it lacks the chain of layers ending with it (the chain ID of the
    diff IDs up to it), so a layer it already has may be named without its tar."""
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{d.split(':', 1)[1]}/layer.tar" for d in [*below, *(d for d, _ in layers)]]
    manifest = [{"Config": config_name, "RepoTags": None, "Layers": names}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        add(config_name, config)
        seen = set()
        for diff_id, blob in layers:
            name = f"{diff_id.split(':', 1)[1]}/layer.tar"
            if name not in seen:
                seen.add(name)
                add(name, blob)
        add("manifest.json", json.dumps(manifest).encode())
    return out.getvalue()
