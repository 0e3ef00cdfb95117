"""Typed errors. The library raises them; only a frontend prints them and exits.

Each subclass has its own exit code so that scripts and CI can tell failures apart.
A message says what failed and why; ``hint`` says what to do about it.
"""
from __future__ import annotations


class GrockerError(Exception):
    """Root of every error this tool raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: Extra lines (e.g. the tail of a compiler log) shown under the one-line message.
        self.details = details

    def __str__(self) -> str:
        return self.one_line()

    def one_line(self) -> str:
        """The message and hint on one line, credentials redacted: what frontends and reports show."""
        from setuptools_grocker.progress import redact

        return redact(f"{self.message}; {self.hint}" if self.hint else self.message)

    def shown_details(self) -> str | None:
        """``details`` as they may be printed (credentials redacted)."""
        from setuptools_grocker.progress import redact

        return redact(self.details) if self.details else None


class ConfigError(GrockerError):
    """Malformed or invalid configuration (file, environment or command line)."""

    exit_code = 3


class LockError(ConfigError):
    """The application's ``pylock.toml`` is invalid, or stale: its inputs are not the project's any more."""


class ProjectError(GrockerError):
    """The directory is not a buildable Python project, or its metadata cannot be read."""

    exit_code = 4


class EngineUnavailable(GrockerError):
    """No Docker Engine answers."""

    exit_code = 5


class BaseImageError(GrockerError):
    """The base image is missing, cannot be pulled, or is unusable."""

    exit_code = 6


class CompileError(GrockerError):
    """Building wheels in the compiler container failed."""

    exit_code = 7


class TestsFailed(CompileError):
    """A workspace library's tests failed (in the compile container, against the wheel just built)."""

    __test__ = False  # not a pytest test class, whatever its name


class BuildCommandFailed(CompileError):
    """One of the project's ``build-commands`` exited non-zero (before its wheel was built)."""


class ImageBuildError(GrockerError):
    """Assembling an image (root, compiler or runtime) failed."""

    exit_code = 8


class SmokeTestError(GrockerError):
    """The freshly built image did not pass its smoke test; it was not tagged."""

    exit_code = 9


class RegistryError(GrockerError):
    """Pushing to or reading from a registry failed."""

    exit_code = 10


class WorkspaceError(GrockerError):
    """Workspace members, their graph, or a workspace build failed."""

    exit_code = 11


class PluginError(GrockerError):
    """A plugin failed to load, raised, or returned something invalid."""

    exit_code = 12


class BootstrapError(GrockerError):
    """Bootstrapping a base image from a Debian mirror failed."""

    exit_code = 13


class WheelIndexError(GrockerError):
    """The wheel index is unreachable, refused a request, or listed or served a wheel that does not check out."""

    exit_code = 14


class DeployError(GrockerError):
    """A deploy, rollback or stop on Docker Swarm mode failed (a failed rollout is rolled back)."""

    exit_code = 15


class DiskFullError(GrockerError):
    """No space left on the device holding the cache, a wheelhouse or the state."""

    exit_code = 16


class ReleaseConflict(GrockerError):
    """Another release got in the way: the pointer moved, the name is taken or superseded, or the lock is held."""

    exit_code = 17


class ReleaseIncomplete(GrockerError):
    """The release is published (its pointer moved) but some convenience tags lag; running it again moves them."""

    exit_code = 18


def disk_full(where: object) -> DiskFullError:
    return DiskFullError(f"no space left on device writing {where}",
                         "free space there, or point cache-dir (GROCKER_CACHE_DIR) at a larger filesystem")


def from_os_error(exc: OSError) -> GrockerError | None:
    """The typed error for an OSError the user can act on (a full disk), else None."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full(exc.filename or "the cache")
    return None


class SupplyChainError(GrockerError):
    """An image's SBOM or provenance is missing or unreadable (``grocker sbom``, ``grocker provenance``)."""

    exit_code = 19


class RebaseError(SupplyChainError):
    """A root refresh or a rebase cannot be done (``grocker refresh-root``, ``grocker rebase``): another Python
    on the new root, packages removed, an image not made by grocker. Same exit code as the supply-chain commands."""
