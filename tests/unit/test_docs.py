"""The Sphinx docs build with warnings as errors, and the generated references are complete."""
from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from setuptools_grocker.cli import make_parser
from setuptools_grocker.keys import TABLE
from setuptools_grocker.plugin.spec import HOOKS

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def text_of(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_every_page_is_in_the_docs(built: Path) -> None:
    for md in DOCS.glob("*.md"):
        assert (built / f"{md.stem}.html").is_file(), md.name


def test_cli_reference_lists_every_command_and_option(built: Path) -> None:
    import argparse

    text = text_of(built / "cli-reference.html")

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> int:
        seen = 0
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    title = " ".join([*words, name])
                    assert title in text, title
                    seen += 1 + walk(sub, [*words, name])
            elif (action.option_strings and not isinstance(action, argparse._HelpAction)
                  and action.help != argparse.SUPPRESS):  # hidden: deprecated, accepted but not documented
                assert action.option_strings[0] in text, (words, action.option_strings)
        return seen

    assert walk(make_parser(), ["grocker"]) >= 12


def test_hooks_reference_lists_every_hook(built: Path) -> None:
    text = text_of(built / "hooks-reference.html")
    for hook in HOOKS:
        assert f"def {hook}(" in text, hook


def test_configuration_reference_names_every_key(built: Path) -> None:
    generated = text_of(built / "configuration.html").replace("\u2019", "'")  # Sphinx's smart quotes
    for key in TABLE:
        assert key.name in generated, key.name
        # The description comes from the table too (its Markdown rendered, so compare its words).
        first_words = re.sub(r"[`*]", "", key.doc).split()[:3]
        assert " ".join(first_words) in generated, f"{key.name}: its description is not in the reference"
        if key.env_var:
            assert key.env_var in generated, key.env_var
