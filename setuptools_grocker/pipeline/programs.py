"""Programs of an image, and the closest one to a name that is not there ("did you mean gunicorn?").

The smoke test's ``check`` (resources/entrypoint.py, inside the image) reports a command whose program
is not on the image's ``PATH``; this module lists what is there (the venv's console scripts first,
then the system's programs) and suggests the closest name.
"""
from __future__ import annotations

import difflib
import re
from typing import Iterable

from setuptools_grocker.engine import Engine

__all__ = ["closest_program", "missing_programs", "image_programs"]

# What ``check`` prints for a command whose program is missing (resources/entrypoint.py).
_MISSING = re.compile(r"^FAIL command (?P<command>\S+): program '(?P<program>[^']*)' not found in the image",
                      re.MULTILINE)
# The programs in the directories of the image's PATH, venv first. Run by the entrypoint's ``run``, which
# expands ``$VAR`` in its arguments: hence Python, and no dollar sign.
_LIST = ("import os\nfor d in os.environ.get('PATH', '').split(os.pathsep):\n"
         "    if os.path.isdir(d):\n        print('\\n'.join(sorted(os.listdir(d))))\n")


def missing_programs(check_output: str) -> list[tuple[str, str]]:
    """``(command, program)`` for each command ``check`` found without its program."""
    return [(m.group("command"), m.group("program")) for m in _MISSING.finditer(check_output)]


def image_programs(engine: Engine, image: str) -> list[str]:
    """The programs on the image's PATH, in PATH order (the venv's console scripts first)."""
    result = engine.run(image, ["run", "python", "-c", _LIST], stream=False)
    seen: dict[str, None] = {}
    for line in result.output.splitlines():
        name = line.strip()
        if name and "/" not in name:
            seen.setdefault(name, None)
    return list(seen)


def closest_program(program: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``program`` (a typo, a wrong case, a missing suffix), or None."""
    name = program.rsplit("/", 1)[-1]
    names = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    lowered = {c.lower(): c for c in names}
    return lowered.get(name.lower())
