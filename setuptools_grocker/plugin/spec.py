"""The hooks a plugin can implement. Every hook is prefixed ``grocker_``.

Implement them with ``@setuptools_grocker.plugin.impl`` in a module, and register the
module under the entry point group ``grocker`` (or list it in the ``plugins`` config key).
Every hook is called through pluggy: ``@impl(tryfirst=True)``/``trylast`` order the
implementations, ``@impl(wrapper=True)`` (or ``hookwrapper=True``) wraps them all.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from setuptools_grocker.config import Config
    from setuptools_grocker.plugin.signing import Signature, SigningRequest
    from setuptools_grocker.plugin.stages import ImageContribution, Stage
    from setuptools_grocker.report import ProjectResult

NAME = "grocker"
spec = pluggy.HookspecMarker(NAME)


@spec
def grocker_configure(config: Config) -> Mapping[str, Any] | None:
    """Adjust the configuration before anything is built.

    Return a mapping of :class:`~setuptools_grocker.config.Config` field names to new
    values (``{"run_packages": (..., "nginx-light")}``), or None. Implementations are
    called in pluggy's order (tryfirst ones first, then the most recently registered
    first); each receives ``config`` with the changes of those called before it. A wrapper
    receives the original ``config``; the list of changes it returns is applied in order.
    """


@spec
def grocker_stages(config: Config) -> Sequence[Stage] | None:
    """Contribute stages to the pipeline.

    Each :class:`~setuptools_grocker.plugin.stages.Stage` has a name, a position
    (``before-``/``after-`` ``compile``, ``test``, ``image``, ``smoke``, ``push``, or one
    of those slots itself) and a ``run(context)``
    callable. Stages of one position run in the order pluggy called their implementations.
    The built-in stages are contributed through this hook too (``tryfirst``: they open
    their positions).
    """


@spec
def grocker_compile_environment(config: Config) -> Mapping[str, Any] | None:
    """Contribute to the compile container: ``{"env": {NAME: VALUE}, "commands": [SHELL, ...]}``.

    The commands run in the compiler container, in a copy of the source, before the wheels
    are built (e.g. ``npm ci && npm run build`` for assets that the wheel packages).
    """


@spec
def grocker_runtime_image(config: Config) -> ImageContribution | None:
    """Contribute to the runtime image: files, system packages, labels, commands.

    Return an :class:`~setuptools_grocker.plugin.stages.ImageContribution`. Files are
    copied (read-only for the runtime user) into the image; system packages join
    ``system-packages.run``; commands join the entrypoint's commands.
    """


@spec
def grocker_smoke_tests(config: Config) -> Sequence[Sequence[str]] | None:
    """Commands (entrypoint arguments) the new image must run with exit code 0 before it is tagged.

    The built-in plugin contributes ``check`` and the configured ``smoke-test.command``.
    """


@spec
def grocker_after_publish(config: Config, result: ProjectResult) -> None:
    """Called after an image was tagged (and pushed, with ``--push``): notify, sign, record."""


@spec
def grocker_sign(config: Config, request: SigningRequest, environ: Mapping[str, str]) -> Signature | None:
    """Sign an image just pushed: return a :class:`~setuptools_grocker.plugin.signing.Signature` of
    ``request.payload``, or None to leave it unsigned.

    Called after every push (single build, workspace push stage, cached build), once the SBOM and
    provenance are attached, with the repository, the manifest digest and those documents' content
    digests (``request``), and the environment of the command (``environ``: where a key's path or a
    signing service's address comes from; never put a key in the configuration or the image). Every
    signature returned is stored under the tag ``sha256-<hex>.sig`` next to the image.
    """


@spec
def grocker_verify_signature(payload: bytes, signature: Signature, environ: Mapping[str, str]) -> bool | None:
    """Check one stored ``signature`` of ``payload`` (``grocker verify``).

    Return True when it is a valid signature by a key this plugin trusts, False when it claims such a
    key (its ``key_id``) and does not verify (a tampered payload or signature), None when the key is not
    one this plugin knows. ``grocker verify`` passes the signature check when some signature is True and
    none is False. The payload is checked against the image by grocker, not by the plugin.
    """


@spec
def grocker_incident(report: Mapping[str, Any], paths: Mapping[str, Path]) -> None:
    """Called with every incident report: an automatic rollback of a release (``grocker ship``'s canary, a
    drift watch) wrote ``report`` (the JSON document, see docs/release.md) to ``paths`` (``{"json": Path,
    "markdown": Path}``, both written before the call). Send it on: chat, ticket, e-mail.

    Every implementation is called even when one raises: a failing plugin never stops a rollback; it gets
    a one-line warning (``plugin 'NAME' failed in grocker_incident: ...``) and the report stays on disk.
    The return value is ignored.
    """


@spec(firstresult=True)
def grocker_release_metrics(service: str, start: float, end: float) -> Mapping[str, Any] | None:
    """The requests of the Swarm service ``service`` between the Unix times ``start`` and ``end``, from the
    team's own monitoring, for the canary judge (instead of the edge's request log).

    Return ``{"requests": N, "errors": E, "times_ms": [...]}`` (errors: 5xx or no answer; ``times_ms``: the
    requests' total times in milliseconds, a sample is fine, empty or absent when unknown: latency is then
    not judged), or None to leave it to another plugin or the edge. The first answer wins (``firstresult``);
    both sides of a window (canary and stable) must be answered, or the edge's figures are used for both.
    """


HOOKS = ("grocker_configure", "grocker_stages", "grocker_compile_environment", "grocker_runtime_image",
         "grocker_smoke_tests", "grocker_after_publish", "grocker_sign", "grocker_verify_signature",
         "grocker_incident", "grocker_release_metrics")
