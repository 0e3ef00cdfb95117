"""The objects plugins hand to the pipeline: stages and contributions to the image."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from setuptools_grocker.pipeline.stages import POSITIONS, position_order

if TYPE_CHECKING:
    from setuptools_grocker.config import Config, RunOptions
    from setuptools_grocker.engine import Engine, RunResult
    from setuptools_grocker.progress import Progress

# Re-exported: plugin authors import POSITIONS from setuptools_grocker.plugin.
__all__ = ["POSITIONS", "ImageContribution", "Stage", "StageContext"]


@dataclass(frozen=True)
class Stage:
    """A named piece of work at a position of the pipeline."""

    name: str
    position: str
    run: Callable[[StageContext], None]
    #: Filled in by the plugin manager: which plugin contributed it.
    plugin: str = ""

    def order(self) -> int:
        return position_order(self.position)


@dataclass
class ImageContribution:
    """What a plugin adds to the runtime image."""

    files: Mapping[str, Path] = field(default_factory=dict)  # destination in the image -> host file or dir
    system_packages: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    commands: Mapping[str, str] = field(default_factory=dict)


@dataclass
class StageContext:
    """What a stage can see and use. ``artifacts`` carries results between stages."""

    config: Config
    engine: Engine
    progress: Progress
    work_dir: Path
    artifacts: dict[str, Any] = field(default_factory=dict)
    compiler_image: str | None = None
    #: What this invocation does with the image (``--tag``, ``--push``, ``--no-cache``); not configuration.
    run: RunOptions = field(default_factory=lambda: _default_run())

    @property
    def image_id(self) -> str | None:
        return self.artifacts.get("image_id")

    def run_in_compiler(self, command: str, *, output: Path | None = None,
                        env: Mapping[str, str] | None = None) -> RunResult:
        """Run a shell command in the compiler image, in a copy of the project source.

        ``output`` (a host directory) is mounted read-write at ``/out``.
        """
        from setuptools_grocker.engine import Mount
        from setuptools_grocker.errors import PluginError

        if self.compiler_image is None:
            raise PluginError("run_in_compiler() is only available from the compile position on",
                              "move the stage to after-compile or later")
        mounts = [Mount(self.config.project_dir, "/src")]
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(output, "/out", read_only=False))
        script = f"cp -a /src /tmp/src && cd /tmp/src && {command}"
        return self.engine.run(self.compiler_image, ["sh", "-c", script], mounts=mounts, env=dict(env or {}))

    def run_in_image(self, args: list[str]) -> RunResult:
        """Run the new image (after the image stage) with these entrypoint arguments."""
        from setuptools_grocker.errors import PluginError

        if self.image_id is None:
            raise PluginError("run_in_image() needs the image: use a position after 'image'",
                              "move the stage to after-image or later")
        return self.engine.run(self.image_id, args)


def _default_run() -> RunOptions:
    from setuptools_grocker.config import RunOptions

    return RunOptions()
