"""The shared build cache's configuration and keys (no engine, no registry: tests/integration/test_shared_cache.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from setuptools_grocker.cli import make_parser, run_options
from setuptools_grocker.config import load_config
from setuptools_grocker.errors import ConfigError
from setuptools_grocker.image.recipes import compiler_key, root_key
from setuptools_grocker.registry.sharedcache import shared_cache

BASE = "sha256:" + "ab" * 32


def test_the_keys_hold_no_path_of_the_machine(tmp_path: Path) -> None:
    # The same configuration in two checkouts (two machines, two users' home directories): the same keys.
    one, two = tmp_path / "alice" / "app", tmp_path / "build-host" / "w" / "app"
    for project in (one, two):
        project.mkdir(parents=True)
        (project / "grocker.toml").write_text('[system-packages]\nrun = ["libpq5"]\nbuild = ["libpq-dev"]\n')
    first, second = (load_config(p, environ={}) for p in (one, two))
    assert root_key(first, BASE) == root_key(second, BASE)
    assert compiler_key(root_key(first, BASE), first.build_packages, "uv") == \
        compiler_key(root_key(second, BASE), second.build_packages, "uv")


def test_the_keys_follow_their_inputs(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={})
    key = root_key(config, BASE)
    assert root_key(config, "sha256:" + "cd" * 32) != key  # another base image
    assert root_key(load_config(tmp_path, environ={"GROCKER_SYSTEM_PACKAGES_RUN": "libpq5"}), BASE) != key
    assert root_key(load_config(tmp_path, environ={"GROCKER_USER": "web"}), BASE) != key
    pip_key, uv_key = compiler_key(key, (), "uv")
    assert pip_key != uv_key and compiler_key(key, (), "pip") == (pip_key, pip_key)
    assert compiler_key(key, ("libpq-dev",), "uv")[0] != pip_key
    # The order the packages are listed in does not matter.
    assert compiler_key(key, ("a1", "b2"), "uv") == compiler_key(key, ("b2", "a1"), "uv")


def test_build_cache_is_a_registry_repository(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={"GROCKER_BUILD_CACHE": "127.0.0.1:5000/team/cache"})
    assert config.build_cache == "127.0.0.1:5000/team/cache"
    for bad in ("cache", "127.0.0.1:5000/cache:latest", "127.0.0.1:5000/Cache"):
        with pytest.raises(ConfigError, match="build-cache .* is not a registry repository") as info:
            load_config(tmp_path, environ={"GROCKER_BUILD_CACHE": bad})
        assert "REGISTRY/REPOSITORY" in (info.value.hint or "")


def test_only_a_trusted_builder_writes(tmp_path: Path) -> None:
    assert shared_cache(None, {"GROCKER_CACHE_WRITE": "1"}, cache=tmp_path) is None
    reader = shared_cache("127.0.0.1:5000/cache", {}, cache=tmp_path)
    assert reader is not None and not reader.write  # off by default: developer machines read
    assert reader.ref("root", "0123") == "127.0.0.1:5000/cache:root-0123"
    for environ, write in (({"GROCKER_CACHE_WRITE": "1"}, False), ({}, True)):
        writer = shared_cache("127.0.0.1:5000/cache", environ, write=write, cache=tmp_path)
        assert writer is not None and writer.write
    with pytest.raises(ConfigError, match="GROCKER_CACHE_WRITE='maybe' is not a boolean"):
        shared_cache("127.0.0.1:5000/cache", {"GROCKER_CACHE_WRITE": "maybe"}, cache=tmp_path)


def test_cache_write_is_a_run_option() -> None:
    parser = make_parser()
    assert run_options(parser.parse_args(["build", ".", "--cache-write"])).cache_write
    assert not run_options(parser.parse_args(["build", "."])).cache_write
    assert parser.parse_args(["workspace", "build", ".", "--cache-write"]).cache_write
