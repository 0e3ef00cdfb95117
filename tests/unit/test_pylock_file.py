"""The lock file (pipeline/lock.py): what `grocker lock` keeps of uv's pylock.toml, and what a build accepts."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from setuptools_grocker.errors import ConfigError, LockError
from setuptools_grocker.pipeline.lock import (
    host_inputs,
    parse_lock,
    read_lock,
    render_lock,
    strip_credentials,
    write_lock,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

H1, H2, H3 = "1" * 64, "2" * 64, "3" * 64
# What uv 0.13 writes for an application's wheel with a dependency on an index (with a credential left in, which
# uv itself removes), a local package built in the same compile, and a package with a marker.
UV_LOCK = f'''lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11.2"

[[packages]]
name = "My_App"
version = "1.0"
archive = {{ path = "/tmp/grocker-build/project-wheel/my_app-1.0-py3-none-any.whl", hashes = {{ sha256 = "{H1}" }} }}

[[packages]]
name = "requests"
version = "2.32.3"
index = "https://ci:t0ps3cret@packages.example/simple"
sdist = {{ url = "https://ci:t0ps3cret@packages.example/files/requests-2.32.3.tar.gz", hashes = {{ sha256 = "{H2}" }} }}
wheels = [
    {{ url = "https://packages.example/files/requests-2.32.3-py3-none-any.whl", hashes = {{ sha256 = "{H3}" }} }},
]

[[packages]]
name = "shared-lib"
version = "0.3"
wheels = [{{ path = "/tmp/local-wheels/shared_lib-0.3-py3-none-any.whl", hashes = {{ sha256 = "{H1}" }} }}]

[[packages]]
name = "tomli"
version = "2.0.1"
marker = "python_full_version < '3.11'"
wheels = [{{ url = "https://packages.example/files/tomli-2.0.1-py3-none-any.whl", hashes = {{ sha256 = "{H2}" }} }}]
'''


def test_the_lock_keeps_the_third_party_packages_without_credentials(tmp_path: Path) -> None:
    text = render_lock(UV_LOCK, built=["my-app", "shared_lib"], inputs="sha256:abc", project="my_app")
    doc = tomllib.loads(text)
    assert [p["name"] for p in doc["packages"]] == ["requests", "tomli"]
    assert doc["tool"]["grocker"] == {"inputs": "sha256:abc", "from-source": ["shared-lib"]}
    assert "t0ps3cret" not in text and "ci:" not in text
    assert doc["packages"][0]["index"] == "https://packages.example/simple"
    lock = write_lock(tmp_path / "pylock.toml", UV_LOCK, built=["my-app", "shared-lib"], inputs="sha256:abc",
                      project="My_App")
    assert (tmp_path / "pylock.toml").read_text() == text
    assert [p.name for p in lock.packages] == ["requests", "tomli"]
    assert lock.packages[0].hashes == (H2, H3)  # the sdist's and the wheel's: pip takes either
    assert lock.packages[1].marker == "python_full_version < '3.11'"
    assert lock.from_source == ("shared-lib",)
    assert lock.job()["packages"][0] == {"name": "requests", "version": "2.32.3", "hashes": [H2, H3], "marker": None}
    assert read_lock(tmp_path / "pylock.toml") == lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pylock.toml"]  # written atomically, nothing left


def test_credentials_go_from_every_url() -> None:
    assert strip_credentials('url = "https://user:pass@host/x", index = "http://TOKEN@host:8080/simple"') \
        == 'url = "https://host/x", index = "http://host:8080/simple"'
    assert strip_credentials("https://host/simple?page=1") == "https://host/simple?page=1"


def test_a_missing_lock_is_none_and_the_digest_is_the_bytes(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "pylock.toml") is None
    path = tmp_path / "pylock.toml"
    text = render_lock(UV_LOCK, built=["my-app", "shared-lib"], inputs="sha256:abc", project="my-app")
    first = parse_lock(path, text.encode())
    again = parse_lock(path, (text + "# reviewed\n").encode())
    assert first.packages == again.packages and first.digest != again.digest


@pytest.mark.parametrize("text, problem", [
    ("lock-version = [\n", "not TOML"),
    ('lock-version = "2.0"\n[tool.grocker]\ninputs = "x"\n', "not a PEP 751 version 1.x"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "1"\nwheels = [{ url = "u" }]\n'
     '[tool.grocker]\ninputs = "x"\n', "a file of package 'a' has no hashes"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "1"\nwheels = [{ url = "u", hashes = { md5 = "x" } }]\n'
     '[tool.grocker]\ninputs = "x"\n', "package 'a' has no sha256 hash"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "1"\n[tool.grocker]\ninputs = "x"\n',
     "package 'a' has no sha256 hash"),
    ('lock-version = "1.0"\n[[packages]]\nname = "a"\n[tool.grocker]\ninputs = "x"\n', "needs a name and a version"),
    (f'lock-version = "1.0"\n[[packages]]\nname = "a"\nversion = "1"\nmarker = "python_version <"\n'
     f'wheels = [{{ url = "u", hashes = {{ sha256 = "{H1}" }} }}]\n[tool.grocker]\ninputs = "x"\n', "invalid marker"),
    ('lock-version = "1.0"\n', "not written by `grocker lock`"),
])
def test_a_bad_lock_is_one_line_naming_the_problem_and_the_fix(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "pylock.toml"
    path.write_text(text)
    with pytest.raises(LockError) as caught:
        read_lock(path)
    line = caught.value.one_line()
    assert problem in line and str(path) in line and "grocker lock" in line and "\n" not in line
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 3


def test_the_host_inputs_of_the_closure(tmp_path: Path) -> None:
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("requests<3\n")
    first = host_inputs(("b", "a"), constraints, "first-index")
    assert first["extras"] == ["a", "b"]
    assert host_inputs(("a", "b"), constraints, "first-index") == first
    constraints.write_text("requests<2.32\n")
    assert host_inputs(("a", "b"), constraints, "first-index") != first
    assert host_inputs(("a", "b"), None, "first-index") != first
    assert host_inputs(("a", "b"), None, "unsafe-best-match") != host_inputs(("a", "b"), None, "first-index")


def test_the_lock_is_in_the_cache_key_only_when_there_is_one(tmp_path: Path) -> None:
    from setuptools_grocker.config import load_config
    from setuptools_grocker.pipeline.build import cache_key, closure_key

    config = load_config(Path(__file__).parent, environ={})
    source = type("S", (), {"digest": "d1"})()
    args: dict[str, object] = {"rkey": "r", "source": source, "local_sources": [], "pip_env": {}}
    text = render_lock(UV_LOCK, built=["my-app", "shared-lib"], inputs="sha256:abc", project="my-app")
    lock = parse_lock(tmp_path / "pylock.toml", text.encode())
    other = parse_lock(tmp_path / "pylock.toml", (text + "\n").encode())
    without = cache_key(config, **args)  # type: ignore[arg-type]
    assert cache_key(config, lock=None, **args) == without  # type: ignore[arg-type]
    assert len({without, cache_key(config, lock=lock, **args),  # type: ignore[arg-type]
                cache_key(config, lock=other, **args)}) == 3  # type: ignore[arg-type]
    assert closure_key(config, lock=lock, **args) != closure_key(config, **args)  # type: ignore[arg-type]


def test_the_lock_key_names_a_path_in_the_project(tmp_path: Path) -> None:
    from setuptools_grocker.config import load_config

    assert load_config(tmp_path, environ={}).lock_file == tmp_path.resolve() / "pylock.toml"
    assert load_config(tmp_path, environ={"GROCKER_LOCK": "locks/app.toml"}).lock_file \
        == tmp_path.resolve() / "locks" / "app.toml"


def test_a_lock_at_a_configured_path_gets_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "app.toml"
    write_lock(path, UV_LOCK, built=["my-app", "shared-lib"], inputs="sha256:abc", project="my-app")
    assert read_lock(path) is not None


def test_grocker_lock_of_a_workspace_without_applications_is_one_line(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from setuptools_grocker.cli import main

    (tmp_path / "pyproject.toml").write_text('[tool.grocker.workspace]\nmembers = ["lib"]\n')
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "pyproject.toml").write_text('[project]\nname = "lib"\nversion = "1.0"\n')
    assert main(["lock", str(tmp_path), "--base-image", "other:1"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--base-image is for one application" in err
    assert main(["lock", str(tmp_path)]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("grocker: error:") and "has no application to lock" in err
    assert not (tmp_path / "pylock.toml").exists()
