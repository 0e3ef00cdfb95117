"""The built-in behaviour, registered as a plugin of the same hooks as everyone else's."""
from __future__ import annotations

from typing import Sequence

from setuptools_grocker.config import Config
from setuptools_grocker.plugin import Stage, impl


@impl
def grocker_stages(config: Config) -> Sequence[Stage]:
    from setuptools_grocker import build

    return [
        Stage("compile", "compile", build.stage_compile),
        Stage("image", "image", build.stage_image),
        Stage("smoke test", "smoke", build.stage_smoke),
        Stage("push", "push", build.stage_push),
    ]


@impl
def grocker_smoke_tests(config: Config) -> Sequence[Sequence[str]]:
    from setuptools_grocker.smoke import default_commands

    return default_commands(config)
