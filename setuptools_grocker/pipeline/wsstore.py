"""A workspace's wheels: the local store (``.grocker/wheels/NAME/KEY/``, published by an atomic rename) and
the wheel index (fetch a library's exact build instead of building it, upload a complete one)."""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

from setuptools_grocker.errors import WorkspaceError
from setuptools_grocker.pipeline.workspace import Member, Workspace, load_member_state, save_member_state
from setuptools_grocker.pipeline.wsplan import PlanEntry, stages_of
from setuptools_grocker.progress import Progress
from setuptools_grocker.registry.wheelhouse import WheelIndex

STALE_STAGING_SECONDS = 6 * 3600


class WheelStore:
    """The wheels of one workspace, here and on its wheel index (``index`` None: no index)."""

    def __init__(self, ws: Workspace, index: WheelIndex | None) -> None:
        self.ws = ws
        self.index = index

    def dep_wheel(self, name: str, parts: Mapping[str, Any]) -> Path:
        """The wheel of internal dependency ``name``: built in this run, before, or on the index."""
        state = load_member_state(self.ws, name)
        key = parts["key"]
        wheel = state.get("stages", {}).get("wheel", {}).get("wheel") if state.get("key") == key else None
        if wheel and Path(wheel).is_file():
            return Path(wheel)
        if self.index is not None:
            m = self.ws.members[name]
            found = self.index.find(m.name, m.version, key)
            if found:
                entry = PlanEntry(name, m.kind, m.version, 0, sorted(m.deps), key, None, found.public, found=found)
                fetched = self.fetch(m, entry, parts, Progress(quiet=True))
                return Path(fetched["stages"]["wheel"]["wheel"])
        raise WorkspaceError(f"dependency {name} is not built for this source",
                             f"build it first (grocker workspace build --only {name}), or drop --no-deps")

    def fetch(self, member: Member, entry: PlanEntry, parts: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        """Take this exact build of a library from the wheel index instead of building it."""
        assert self.index is not None and entry.found is not None
        final = self.ws.state_dir / "wheels" / member.name / entry.key
        staging = final.parent / ".tmp" / f"fetch-{uuid.uuid4().hex[:8]}"
        try:
            wheel = self.index.download(entry.found, staging / "wheels", member.name, member.version, entry.key)
            (staging / "manifest.json").write_text(json.dumps({
                "name": member.name, "version": member.version, "wheel": wheel.name, "closure": [],
                "fetched": entry.found.public, entry.found.hash_name: entry.found.digest}))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            os.replace(staging, final)
        except OSError:  # published meanwhile by a concurrent build
            shutil.rmtree(staging, ignore_errors=True)
        found = sorted((final / "wheels").glob("*.whl"))
        progress.info(f"fetched {found[0].name} from the wheel index")
        # Only complete (tested) libraries are uploaded: every stage counts as done.
        done = {"wheel": {"wheel": str(found[0]), "distributions": [], "fetched": True}}
        for stage in stages_of(member, False)[1:]:
            done[stage] = {"fetched": True}
        save_member_state(self.ws, member, parts, done)
        return {"key": entry.key, "stages": done}

    def republish(self, member: Member, wheel: Path, key: str) -> Path:
        """The library wheel ``wheel`` (of an earlier key) published under ``key``: its wheelhouse hard-linked
        (copied where links fail) into ``wheels/NAME/KEY`` by an atomic rename. For a library whose own inputs
        did not change but whose dependencies did: its wheel is the same file, only its tests run again."""
        final = self.ws.state_dir / "wheels" / member.name / key
        old = wheel.parent.parent
        staging = final.parent / ".tmp" / f"reuse-{uuid.uuid4().hex[:8]}"
        try:
            (staging / "wheels").mkdir(parents=True)
            for path in [old / "manifest.json", *sorted((old / "wheels").glob("*.whl"))]:
                target = staging / path.relative_to(old)
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copy2(path, target)
            os.replace(staging, final)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (final / "wheels" / wheel.name).is_file():  # not published meanwhile by a concurrent build
                raise
        return final / "wheels" / wheel.name

    def upload(self, member: Member, entry: PlanEntry, wheel: Path, progress: Progress) -> None:
        if self.index is not None:
            with progress.stage("upload"):
                name = self.index.upload(wheel, entry.key, member.name, member.version)
                progress.info(f"uploaded {name}")

    def clean_stale_staging(self) -> None:
        """Remove staging directories of builds killed long ago (never read as results)."""
        now = time.time()
        stale = [*(self.ws.state_dir / "wheels").glob("*/.tmp/*"), *(self.ws.state_dir / "stage").glob("*")]
        for tmp in stale:
            try:
                if now - tmp.stat().st_mtime > STALE_STAGING_SECONDS:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                pass
