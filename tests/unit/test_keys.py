"""The key table (keys.py) is the one declaration: the Config, the cache key, the workspace merge
and the environment variables all follow from it."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from setuptools_grocker.config import Canary, Config, RunOptions, SmokeTest, Watch, load_config
from setuptools_grocker.errors import ConfigError
from setuptools_grocker.keys import KEYS, MEMBER_ONLY, TABLE, Key, env_var
from setuptools_grocker.pipeline.workspace import load_workspace

# Not keys: the project directory, where the file layer came from.
NOT_KEYS = {"project_dir", "source"}


def test_every_config_field_is_declared_once_in_the_table(tmp_path: Path) -> None:
    fields = {f.name for f in dataclasses.fields(Config)} - NOT_KEYS - {"smoke_test", "canary", "watch"}
    fields |= {f"smoke_test.{f.name}" for f in dataclasses.fields(SmokeTest)}
    fields |= {f"canary.{f.name}" for f in dataclasses.fields(Canary)}
    fields |= {f"watch.{f.name}" for f in dataclasses.fields(Watch)}
    declared = [k.field for k in KEYS.values()]
    assert len(declared) == len(set(declared)), "two keys fill one field"
    assert set(declared) == fields
    assert all(not k.field for k in TABLE if k.workspace)


def test_dataclass_defaults_are_the_tables(tmp_path: Path) -> None:
    config = Config(project_dir=tmp_path)
    for key in KEYS.values():
        value: object = config
        for part in key.field.split("."):
            value = getattr(value, part)
        assert value == key.field_value(tmp_path, key.default), key.name
    assert load_config(tmp_path, environ={}) == dataclasses.replace(config, project_dir=tmp_path.resolve())


def test_image_inputs_follow_the_table_and_keep_their_cache_key(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={})
    inputs = config.image_inputs()
    names = {(k.input_name or k.name).split(".")[0] for k in KEYS.values() if k.image_input and not k.input_when_set}
    assert set(inputs) == names
    # The digest of a default configuration's image inputs: a change to the table that should leave the
    # cache keys alone does not change it. It last changed when base-image left the inputs (the base enters
    # every key by its image ID, through the root key, not by its name: issue 18).
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    assert digest == "e94b21ad1ec69713e99e40c1da09b6a22812274bc152278851e51e2ef05d292f"
    for key in KEYS.values():  # what does not shape the image never changes the key
        if not key.image_input and key.kind.name == "str" and key.name not in ("constraints", "cache-dir"):
            value = "registry.example:5000/x" if key.name == "build-cache" else "x"  # a repository, checked
            other = load_config(tmp_path, environ={}, overrides={key.name: value})
            assert other.image_inputs() == inputs, key.name


def test_member_only_keys_are_derived(tmp_path: Path) -> None:
    assert MEMBER_ONLY == {"commands", "default-command", "image", "image-name", "test-command", "test-extras",
                           "smoke-test.command", "smoke-test.port", "smoke-test.path", "ports", "volumes", "extras",
                           "local-packages", "build-commands", "lock"}
    (tmp_path / "pyproject.toml").write_text(
        '[tool.grocker]\nports = [8000]\nlabels = { team = "web" }\n'
        '[tool.grocker.smoke-test]\nport = 8000\ntimeout = 5\n'
        '[tool.grocker.workspace]\nmembers = ["libs/*"]\n')
    member = tmp_path / "libs" / "a"
    member.mkdir(parents=True)
    (member / "pyproject.toml").write_text('[project]\nname = "a"\nversion = "1.0"\n')
    config = load_workspace(tmp_path, environ={}).members["a"].config
    assert (config.ports, config.smoke_test.port) == ((), None)  # member-only: not inherited
    assert (config.labels, config.smoke_test.timeout) == ({"team": "web"}, 5.0)  # inherited


@pytest.mark.parametrize("key", [k for k in TABLE if k.env_var], ids=lambda k: k.name)
def test_every_key_has_its_variable_and_documented_examples(key: Key) -> None:
    assert key.env_var == env_var(key.name)
    key.kind.parse(key.kind.env_example)  # the hint of a bad value is itself valid
    assert key.doc


def test_run_options_are_not_configuration(tmp_path: Path) -> None:
    assert not {"tag", "no_cache", "push", "report"} & {f.name for f in dataclasses.fields(Config)}
    with pytest.raises(AssertionError, match="unknown override tag"):
        load_config(tmp_path, environ={}, overrides={"tag": "x:1"})
    RunOptions(tag="x:1", push=True).validate()
    with pytest.raises(ConfigError, match="image reference 'Bad:1' is not valid"):
        RunOptions(tag="Bad:1").validate()


def test_workspace_wheelhouse_is_refused_with_its_replacement(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.grocker.workspace]\nmembers = ["libs/*"]\nwheelhouse = "wheels"\n')
    (tmp_path / "libs" / "a").mkdir(parents=True)
    (tmp_path / "libs" / "a" / "pyproject.toml").write_text('[project]\nname = "a"\nversion = "1.0"\n')
    with pytest.raises(ConfigError) as info:
        load_workspace(tmp_path, environ={})
    assert info.value.message == f"'workspace.wheelhouse' in {tmp_path / 'pyproject.toml'} is no longer supported"
    assert "workspace.index-url" in info.value.hint and ".grocker/wheels/" in info.value.hint
