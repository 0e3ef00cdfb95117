"""The objects plugins hand to the pipeline: stages and contributions to the image."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from setuptools_grocker.pipeline.stages import POSITIONS, position_order

if TYPE_CHECKING:
    from setuptools_grocker.config import Config, RunOptions
    from setuptools_grocker.engine import Engine, RunResult
    from setuptools_grocker.image.recipes import BaseImages
    from setuptools_grocker.pipeline.compile import Wheelhouse
    from setuptools_grocker.progress import Progress

# Re-exported: plugin authors import POSITIONS from setuptools_grocker.plugin.
__all__ = ["POSITIONS", "BuildState", "ImageContribution", "Stage", "StageContext"]


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
class BuildState:
    """What the stages of one build know and hand on: the same fields in a single-project build and in
    a workspace member's build (the contract between the built-in stages and plugin stages).

    A field is ``None`` until the stage that makes it has run (in a workspace, in this run or an
    earlier one whose result is still valid).
    """

    #: The build's cache key (a workspace member's key).
    key: str = ""
    #: The environment of the invocation (read it here, not from ``os.environ``).
    environ: Mapping[str, str] = field(default_factory=dict)
    #: The base images of the run (root, compiler); ``None`` when nothing is compiled in this run.
    images: BaseImages | None = None
    #: Files for the runtime image: destination in the image -> host file or directory. Starts with the
    #: plugins' ``grocker_runtime_image`` files; a stage before ``image`` may add to it.
    files: dict[str, Path] = field(default_factory=dict)
    #: The wheels, after the compile (``wheel``) stage.
    wheels: Wheelhouse | None = None
    #: The runtime image, after the ``image`` stage.
    image_id: str | None = None
    #: The image reference it was tagged with, after the ``smoke`` stage.
    ref: str | None = None
    #: The pipeline's own inputs to its built-in stages: not part of the contract, do not read.
    internal: Any = None

    def as_mapping(self) -> Mapping[str, Any]:
        """A read-only view by field name (what ``StageContext.artifacts`` was); ``internal`` left out."""
        return MappingProxyType({f.name: getattr(self, f.name) for f in fields(self) if f.name != "internal"})


@dataclass
class StageContext:
    """What a stage can see and use. ``state`` carries results between stages."""

    config: Config
    engine: Engine
    progress: Progress
    work_dir: Path
    state: BuildState = field(default_factory=BuildState)
    compiler_image: str | None = None
    #: What this invocation does with the image (``--tag``, ``--push``, ``--no-cache``); not configuration.
    run: RunOptions = field(default_factory=lambda: _default_run())

    @property
    def image_id(self) -> str | None:
        return self.state.image_id

    @property
    def artifacts(self) -> Mapping[str, Any]:
        """Deprecated: read :attr:`state` (``ctx.state.files``, ``ctx.state.image_id``, ...).

        A read-only view of the state's fields by name, for plugins written against the old dict;
        the values are the state's own (``ctx.artifacts["files"][dest] = path`` still adds a file).
        """
        return self.state.as_mapping()

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
