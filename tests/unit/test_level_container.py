"""The libraries' shared test container, host side without Docker: when it is on, where a library's paths are
inside it, and how its exec wrapper finds what a library's tests started (issue 17)."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path
from types import ModuleType

import pytest

from setuptools_grocker.errors import ConfigError
from setuptools_grocker.image.recipes import RESOURCES
from setuptools_grocker.pipeline.compile import _below
from setuptools_grocker.pipeline.warm import SharedContainers, level_spec


def test_on_by_default_off_by_either_switch(tmp_path: Path) -> None:
    spec = level_spec({}, root=tmp_path, state_dir=tmp_path / ".grocker")
    assert spec is not None
    assert (spec.stage, spec.wheels, spec.build_envs) == (
        tmp_path / ".grocker" / "stage", tmp_path / ".grocker" / "wheels",
        tmp_path / ".grocker" / "build-env" / "libraries")
    assert spec.idle == 600
    assert level_spec({"GROCKER_LEVEL_TESTS": "0"}, root=tmp_path, state_dir=tmp_path) is None
    assert level_spec({"GROCKER_WARM_IDLE": "0"}, root=tmp_path, state_dir=tmp_path) is None
    with pytest.raises(ConfigError, match="GROCKER_LEVEL_TESTS='yes' is neither 0 nor 1"):
        level_spec({"GROCKER_LEVEL_TESTS": "yes"}, root=tmp_path, state_dir=tmp_path)


def test_no_cache_runs_discard_their_containers(tmp_path: Path) -> None:
    spec = level_spec({}, root=tmp_path, state_dir=tmp_path / ".grocker")
    assert spec is not None
    kept, discarded = SharedContainers(spec), SharedContainers(spec, discard=True)
    assert not kept.to_remove and not discarded.to_remove  # nothing started yet


def test_paths_inside_the_container(tmp_path: Path) -> None:
    lib = tmp_path / "libs" / "a"
    lib.mkdir(parents=True)
    assert _below(lib, tmp_path, "/ws") == "/ws/libs/a"
    assert _below(tmp_path, tmp_path, "/ws") == "/ws"
    # Outside the workspace: not in the shared container (the library gets a container of its own).
    assert _below(tmp_path.parent / "elsewhere", tmp_path, "/ws") is None


def warm_init() -> ModuleType:
    spec = importlib.util.spec_from_file_location("warm_init", RESOURCES / "warm_init.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_wrapper_finds_every_process_below_it() -> None:
    """A daemon started in its own session is still below the process that started it (until it is re-parented;
    the wrapper, as their subreaper, is where it goes)."""
    module = warm_init()
    proc = subprocess.Popen(["sh", "-c", "setsid sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        below: set[int] = set()
        while len(below) < 2 and time.monotonic() < deadline:
            below = module.descendants(proc.pid)
            time.sleep(0.05)
        assert len(below) >= 2
        assert proc.pid not in below and os.getpid() not in below
        assert all(module.processes()[pid] in (proc.pid, *below) for pid in below)
    finally:
        for pid in module.descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
