from __future__ import annotations

from pathlib import Path

import pytest

from setuptools_grocker.config import (
    DEFAULT_BASE_IMAGE,
    check_default_command,
    env_var,
    load_config,
    validate_reference,
)
from setuptools_grocker.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path: Path) -> None:
    write(tmp_path / "setup.py", "")
    config = load_config(tmp_path, environ={})
    assert config.base_image == DEFAULT_BASE_IMAGE
    assert config.python == "python3"
    assert config.effective_default_command == "help"
    assert config.source == "defaults"


def test_layering_defaults_file_env_flags(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.grocker]\nbase-image = "from-file:1"\npython = "python3.11"\n'
          'extras = ["a"]\n[tool.grocker.commands]\nserver = "srv"\n')
    config = load_config(tmp_path, environ={})
    assert (config.base_image, config.python, config.extras) == ("from-file:1", "python3.11", ("a",))
    assert config.effective_default_command == "server"
    env = {"GROCKER_BASE_IMAGE": "from-env:2", "GROCKER_EXTRAS": "b,c"}
    config = load_config(tmp_path, environ=env)
    assert (config.base_image, config.extras, config.python) == ("from-env:2", ("b", "c"), "python3.11")
    config = load_config(tmp_path, environ=env, overrides={"base-image": "from-flag:3"})
    assert config.base_image == "from-flag:3"


def test_grocker_toml_for_setup_py_projects(tmp_path: Path) -> None:
    write(tmp_path / "setup.py", "")
    write(tmp_path / "grocker.toml", 'ports = [8000]\n[smoke-test]\nport = 8000\npath = "/health"\n'
          '[system-packages]\nrun = ["libpq5"]\nbuild = ["libpq-dev"]\n[env]\nA = 1\n')
    config = load_config(tmp_path, environ={})
    assert config.ports == (8000,)
    assert (config.smoke_test.port, config.smoke_test.path) == (8000, "/health")
    assert (config.run_packages, config.build_packages) == (("libpq5",), ("libpq-dev",))
    assert config.env == {"A": "1"}


def test_config_in_two_files_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.grocker]\npython = "python3"\n')
    write(tmp_path / "grocker.toml", 'python = "python3"\n')
    with pytest.raises(ConfigError, match="both"):
        load_config(tmp_path, environ={})


def test_unknown_key_names_the_closest(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.grocker]\nbase-imag = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert "unknown key 'base-imag'" in info.value.message
    assert info.value.hint == "did you mean 'base-image'?"


def test_unknown_nested_key(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.grocker.smoke-test]\nprot = 8000\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert info.value.hint == "did you mean 'smoke-test.port'?"


@pytest.mark.parametrize("text, match", [
    ('ports = "8000"', "'ports' .* must be a list of integers"),
    ("python = 3", "'python' .* must be a string"),
    ('commands = ["a"]', "'commands' .* must be a table"),
    ("image = 1", "'image' .* must be true or false"),
])
def test_wrong_types(tmp_path: Path, text: str, match: str) -> None:
    write(tmp_path / "pyproject.toml", f"[tool.grocker]\n{text}\n")
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path, environ={})


def test_malformed_toml(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.grocker\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(tmp_path, environ={})


def test_env_values_are_parsed_by_kind(tmp_path: Path) -> None:
    write(tmp_path / "setup.py", "")
    env = {
        "GROCKER_PORTS": "80, 443",
        "GROCKER_ENV": "A=1,B=two",
        "GROCKER_SMOKE_TEST_PORT": "8080",
        "GROCKER_SYSTEM_PACKAGES_RUN": "libpq5 libyaml-0-2",
        "GROCKER_IMAGE": "yes",
    }
    config = load_config(tmp_path, environ=env)
    assert config.ports == (80, 443)
    assert config.env == {"A": "1", "B": "two"}
    assert config.smoke_test.port == 8080
    assert config.run_packages == ("libpq5", "libyaml-0-2")
    assert config.image is True
    assert env_var("smoke-test.port") == "GROCKER_SMOKE_TEST_PORT"


def test_bad_env_value(tmp_path: Path) -> None:
    write(tmp_path / "setup.py", "")
    with pytest.raises(ConfigError, match="GROCKER_PORTS"):
        load_config(tmp_path, environ={"GROCKER_PORTS": "eighty"})


def test_unknown_env_var_warns_with_hint(tmp_path: Path) -> None:
    write(tmp_path / "setup.py", "")
    warnings: list[str] = []
    load_config(tmp_path, environ={"GROCKER_BASE_IMAG": "x"}, warn=warnings.append)
    assert warnings == ["ignoring unknown environment variable GROCKER_BASE_IMAG (did you mean GROCKER_BASE_IMAGE?)"]


@pytest.mark.parametrize("text, match", [
    ('default-command = "serve"\n[commands]\nserver = "x"', "did you mean 'server'"),
    ('[commands]\ncheck = "x"', "built into the entrypoint"),
    ('image-name = "Bad Name"', "not a valid image name"),
    ('ports = [70000]', "out of range"),
    ('[system-packages]\nrun = ["lib pq"]', "not a valid Debian package name"),
    ('[smoke-test]\npath = "health"', "must start with '/'"),
    ('[smoke-test]\nnetwork = "host"', "smoke-test.network 'host' in"),
    ('[smoke-test]\nnetwork = "container:warm"', "is not a network the smoke test can use"),
    ('[smoke-test]\nnetwork = "a b"', "smoke-test.network 'a b' in .* is not a network"),
    # Appended to http://127.0.0.1:PORT, '@...' would make the probe go to another host.
    ('[smoke-test]\npath = "@evil.example/x"', "smoke-test.path '@evil.example/x' must start with '/'"),
    ('[smoke-test]\npath = "/x HTTP/1.0\\r\\nHost: evil"', "contains spaces or control characters"),
    # Both reach a shell in the root and compiler image recipes.
    ('user = "app; rm -rf /"', r"user 'app; rm -rf /' is not a valid user name"),
    ('user = "App"', "is not a valid user name"),
    ('python = "python3$(x)"', r"python 'python3\$\(x\)' is not a program name or an absolute path"),
    ('python = "python3 -c 1"', "is not a program name or an absolute path"),
    ('python = "../python3"', "is not a program name or an absolute path"),
])
def test_invalid_values(tmp_path: Path, text: str, match: str) -> None:
    write(tmp_path / "grocker.toml", text + "\n")
    write(tmp_path / "setup.py", "")
    with pytest.raises(ConfigError, match=match):
        check_default_command(load_config(tmp_path, environ={}))


def test_user_and_python_from_the_environment_are_checked_too(tmp_path: Path) -> None:
    write(tmp_path / "setup.py", "")
    with pytest.raises(ConfigError, match="is not a valid user name"):
        load_config(tmp_path, environ={"GROCKER_USER": "app`id`"})
    with pytest.raises(ConfigError, match="must start with '/'"):
        load_config(tmp_path, environ={"GROCKER_SMOKE_TEST_PATH": "@evil.example/x"})
    config = load_config(tmp_path, environ={"GROCKER_USER": "svc_web-1", "GROCKER_PYTHON": "/usr/bin/python3.11"})
    assert (config.user, config.python) == ("svc_web-1", "/usr/bin/python3.11")


@pytest.mark.parametrize("ref", ["app:1.0", "registry.local:5000/team/app:1.0-abc", "app", "127.0.0.1:5000/a:b"])
def test_valid_references(ref: str) -> None:
    validate_reference(ref)


@pytest.mark.parametrize("ref", ["App:1", "app:1+local", "app:", "a b:1"])
def test_invalid_references(ref: str) -> None:
    with pytest.raises(ConfigError, match="is not valid"):
        validate_reference(ref)


def test_image_inputs_ignore_invocation_options(tmp_path: Path) -> None:
    # Per-run options are not configuration at all (RunOptions, see test_keys.py): the same
    # configuration has the same image inputs whatever the run does with the image.
    write(tmp_path / "setup.py", "")
    a = load_config(tmp_path, environ={})
    b = load_config(tmp_path, environ={}, overrides={"base-image": None})
    assert a.image_inputs() == b.image_inputs()


def test_image_inputs_do_not_hold_the_base_image_name(tmp_path: Path) -> None:
    # The base enters every key through the root key (its image ID): the same base named locally on one
    # machine and by its registry digest on another gives the same keys.
    write(tmp_path / "setup.py", "")
    local = load_config(tmp_path, environ={})
    pinned = load_config(tmp_path, environ={"GROCKER_BASE_IMAGE": "127.0.0.1:5000/debian@sha256:" + "a" * 64})
    assert pinned.base_image != local.base_image
    assert pinned.image_inputs() == local.image_inputs()


def test_extra_tags_revision_and_moving(tmp_path: Path) -> None:
    import datetime

    from setuptools_grocker.pipeline.naming import extra_tags

    write(tmp_path / "grocker.toml", 'moving-tags = ["latest", "nightly-{date}"]\n')
    write(tmp_path / "setup.py", "")
    config = load_config(tmp_path, environ={})
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
    assert extra_tags(config, "reg:5000/app:1.0-local", "1.0+local", "0123456789abcdef") == [
        "reg:5000/app:1.0-local-g0123456789ab", "reg:5000/app:latest", f"reg:5000/app:nightly-{today}"]
    assert extra_tags(config, "app:1.0", "1.0", "0123456789abcdef-dirty")[0] == "app:latest"


def test_invalid_moving_tag(tmp_path: Path) -> None:
    write(tmp_path / "grocker.toml", 'moving-tags = ["bad tag"]\n')
    with pytest.raises(ConfigError, match="moving tag 'bad tag' is not a valid tag"):
        load_config(tmp_path, environ={})


def test_build_commands_are_command_lines(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.grocker]\nbuild-commands = ["python manage.py collectstatic --noinput", "echo \'a b\' > x.txt"]\n')
    config = load_config(tmp_path, environ={})
    assert config.build_commands == ("python manage.py collectstatic --noinput", "echo 'a b' > x.txt")
    # One string is one command line, not words.
    (tmp_path / "pyproject.toml").write_text('[tool.grocker]\nbuild-commands = "make assets -j2"\n')
    assert load_config(tmp_path, environ={}).build_commands == ("make assets -j2",)
    # From the environment: one command per line, or a JSON list.
    env = load_config(tmp_path, environ={"GROCKER_BUILD_COMMANDS": "make a\n\nmake b c\n"})
    assert env.build_commands == ("make a", "make b c")
    env = load_config(tmp_path, environ={"GROCKER_BUILD_COMMANDS": '["make a, b", "x"]'})
    assert env.build_commands == ("make a, b", "x")


@pytest.mark.parametrize(("value", "match"), [
    ('["echo \'unbalanced"]', r"build command \"echo 'unbalanced\" in .* cannot be parsed: No closing quotation"),
    ('["make", "  "]', "build-commands in .* has an empty command"),
    ('[1]', "'build-commands' in .* must be a list of strings"),
])
def test_bad_build_commands_are_refused_at_load(tmp_path: Path, value: str, match: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.grocker]\nbuild-commands = {value}\n")
    with pytest.raises(ConfigError, match=match) as info:
        load_config(tmp_path, environ={})
    assert "\n" not in info.value.one_line() and info.value.hint


def test_unbalanced_quote_in_the_environment_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No closing quotation"):
        load_config(tmp_path, environ={"GROCKER_BUILD_COMMANDS": 'echo "oops'})


def test_build_commands_shape_the_cache_key_only_when_set(tmp_path: Path) -> None:
    plain = load_config(tmp_path, environ={})
    assert "build-commands" not in plain.image_inputs()
    one = load_config(tmp_path, environ={"GROCKER_BUILD_COMMANDS": "make a"})
    other = load_config(tmp_path, environ={"GROCKER_BUILD_COMMANDS": "make b"})
    assert one.image_inputs()["build-commands"] == ["make a"]
    assert len({repr(c.image_inputs()) for c in (plain, one, other)}) == 3
