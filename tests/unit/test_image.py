"""The root and compiler recipes (no engine): configured values cannot reach the shell unquoted."""
from __future__ import annotations

from pathlib import Path

from setuptools_grocker.config import Config
from setuptools_grocker.image.recipes import compiler_recipe, root_recipe

# Config() directly: load_config refuses these values (test_config.py); the recipes quote them anyway.
HOSTILE = Config(project_dir=Path("/nonexistent"), user="app; rm -rf /", python="python3$(id)")


def test_user_and_python_are_quoted_in_the_root_recipe() -> None:
    text = root_recipe(HOSTILE)
    assert "--gid 10001 'app; rm -rf /';" in text
    assert "--home-dir '/home/app; rm -rf /' --shell /bin/sh 'app; rm -rf /';" in text
    assert text.count("python3$(id)") == text.count("'python3$(id)'") == 3


def test_the_python_dev_package_is_quoted_in_the_compiler_recipe() -> None:
    text = compiler_recipe(HOSTILE, "grocker/root:x", ("libpq-dev",))
    assert "pkg-config 'python3$(id)-dev' libpq-dev;" in text
    assert "'python3$(id)' -m venv" in text


def test_config_dir_belongs_to_root() -> None:
    text = root_recipe(Config(project_dir=Path("/nonexistent")))
    assert "install -d -o root -g root -m 0755 /config" in text
    assert "chown" not in text


def test_the_tool_in_cache_keys_covers_the_scripts_it_puts_into_images(tmp_path, monkeypatch) -> None:
    """A changed entrypoint or compile driver rebuilds what it made, even at the same version."""
    from setuptools_grocker.image import recipes

    (tmp_path / "entrypoint.py").write_text("print('a')\n")
    monkeypatch.setattr(recipes, "RESOURCES", tmp_path)
    recipes.tool_identity.cache_clear()
    try:
        first = recipes.tool_identity()
        assert first == recipes.tool_identity()
        (tmp_path / "entrypoint.py").write_text("print('b')\n")
        recipes.tool_identity.cache_clear()
        assert recipes.tool_identity() != first
        assert recipes.tool_identity().startswith(recipes.__version__ + "+")
    finally:
        recipes.tool_identity.cache_clear()
