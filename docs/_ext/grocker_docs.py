"""Sphinx directives that generate reference pages from the code, so they cannot drift.

They emit Markdown, parsed in place by MyST (the pages are Markdown).

``grocker-cli``     every command and option of the ``grocker`` parser (argparse)
``grocker-hooks``   every pluggy hookspec, with its signature and docstring
``grocker-config``  every configuration key, its type and default (the table the loader uses)
"""
from __future__ import annotations

import argparse
import inspect
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


class _Markdownish(SphinxDirective):
    """Emit Markdown lines, parsed in place."""

    def emit(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="<generated>"), self.content_offset, container)
        return list(container.children)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, sub, helps.get(name, "")))
    return out


def _escape(text: str) -> str:
    return text.replace("*", "\\*").replace("|", "\\|").replace("<", "&lt;")


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(action.option_strings) or action.dest
        if action.option_strings and action.nargs != 0:
            names += " " + (action.metavar or action.dest.upper())
        help_text = (action.help or "") % {"default": action.default} if action.help else ""
        rows.append(f"| `{names}` | {_escape(help_text)} |")
    return rows


class CliDirective(_Markdownish):
    def run(self) -> list[nodes.Node]:
        from setuptools_grocker.cli import make_parser

        lines: list[str] = []

        def walk(parser: argparse.ArgumentParser, words: list[str], help_text: str) -> None:
            subs = _subcommands(parser)
            if words:
                lines.extend([f"**`{' '.join(words)}`**" + (f": {_escape(help_text)}" if help_text else ""), ""])
                lines.extend(["```text", parser.format_usage().strip(), "```", ""])
                rows = _option_rows(parser)
                if rows:
                    lines.extend(["| argument | meaning |", "|---|---|", *rows, ""])
            for name, sub, text in subs:
                walk(sub, [*words, name], text)

        walk(make_parser(), ["grocker"], "options of every command")
        return self.emit(lines)


class HooksDirective(_Markdownish):
    def run(self) -> list[nodes.Node]:
        import re

        from setuptools_grocker.plugin import spec

        lines: list[str] = []
        for name in spec.HOOKS:
            fn = getattr(spec, name)
            signature = str(inspect.signature(fn)).replace("'", "")
            doc = inspect.cleandoc(fn.__doc__ or "")
            doc = re.sub(r":class:`~?([\w.]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", doc)
            doc = doc.replace("``", "`")
            lines.extend([f"**`{name}`**", "", "```python", f"def {name}{signature}", "```", "", doc, ""])
        return self.emit(lines)


class ConfigDirective(_Markdownish):
    """The key reference, from the one table the loader reads (setuptools_grocker/keys.py)."""

    def run(self) -> list[nodes.Node]:
        from setuptools_grocker.keys import TABLE

        def show(value: Any) -> str:
            if value is None:
                return "none"
            if isinstance(value, (tuple, list)):
                return f"`{list(value)}`"
            return f"`{value}`"

        rows = ["| key | type | default | environment variable | meaning |", "|---|---|---|---|---|"]
        for key in TABLE:
            var = "workspace root only" if key.env_var is None else f"`{key.env_var}`"
            notes = [key.doc]
            if key.member_only:
                notes.append("*(a workspace member's own: not inherited from the root)*")
            if key.image_input:
                notes.append("*(shapes the image: part of the cache key)*")
            rows.append(f"| `{key.name}` | {key.kind.doc} | {key.default_doc or show(key.default)} | {var} "
                        f"| {' '.join(notes)} |")
        return self.emit(rows + [""])


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("grocker-cli", CliDirective)
    app.add_directive("grocker-hooks", HooksDirective)
    app.add_directive("grocker-config", ConfigDirective)
    return {"parallel_read_safe": True, "version": "1"}
