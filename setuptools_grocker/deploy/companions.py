"""The other services of one application (worker, scheduler), released by ``grocker ship`` with its web service.

One image, several services: the web service NAME (the edge, the canary) and its companions ``NAME-SUFFIX``,
each running another command of the same image (``[tool.grocker.services]``: ``worker = { command = "worker" }``;
the image's entrypoint runs its configured commands). A release moves them all to the same digest, or none:

1. each companion is updated by the deployer (pinned by digest, rolling update one task at a time, new task
   first; a command other than the image's default has no HTTP health check, so Swarm's own update monitor
   only catches a task that dies within ``--monitor`` seconds), with production's env files and ``--env``, then
   the companion's own ``env`` and ``replicas``;
2. their tasks are **watched** for ``services-watch`` seconds: a worker is judged by its tasks, not by HTTP.
   A task of the release that ends in that window (failed, rejected, or exited: a worker that returns is
   restarted by Swarm, so a restart is a failure too) fails the release, with each such task's state, exit code,
   error and last log lines;
3. on failure every companion goes back to what it ran before (the deployer's restore, by digest and with
   that release's configuration; a companion that did not exist before is removed), and the caller rolls the
   web side back (the canary removed).

Tasks that existed before the update are not judged (their IDs are taken first), so an earlier crash of the
same digest does not count twice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from setuptools_grocker.deploy.deployer import Deployer, DeployOptions
from setuptools_grocker.engine import Engine
from setuptools_grocker.errors import DeployError, GrockerError

#: Task states that mean a task of the release stopped without being asked to.
ENDED = ("failed", "rejected", "complete", "orphaned")
#: Log lines kept per failed task.
LOG_LINES = 20


@dataclass(frozen=True)
class Companion:
    """A service NAME-SUFFIX running ``command`` of the release's image."""

    suffix: str
    command: str
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, services: Mapping[str, Mapping[str, Any]]) -> tuple[Companion, ...]:
        """From the ``services`` key (checked by keys.py)."""
        return tuple(cls(suffix, str(spec["command"]), int(spec.get("replicas", 1)), dict(spec.get("env", {})))
                     for suffix, spec in services.items())

    @classmethod
    def parse(cls, text: str) -> Companion:
        """``SUFFIX=COMMAND[:REPLICAS]`` (the ``--service`` option)."""
        from setuptools_grocker.errors import ConfigError
        from setuptools_grocker.keys import KEYS

        suffix, sep, rest = text.partition("=")
        command, _, replicas = rest.partition(":")
        spec: dict[str, Any] = {"command": command}
        try:
            if replicas:
                spec["replicas"] = int(replicas)
            validate = KEYS["services"].validate
            if not sep:
                raise ValueError(text)
            if validate is not None:
                validate({suffix: spec}, "--service")
        except (ValueError, ConfigError) as exc:
            detail = f": {exc.message}" if isinstance(exc, ConfigError) else ""
            raise DeployError(f"--service {text!r} is not SUFFIX=COMMAND[:REPLICAS]{detail}",
                              "write e.g. --service worker=worker:2") from None
        return cls(suffix, command, int(spec.get("replicas", 1)))

    def service(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    def options(self, production: DeployOptions, pinned: str) -> DeployOptions:
        """Production's configuration for this companion: same env files and variables, its own command,
        replicas and variables, no route."""
        return replace(production, name=self.service(production.name), image=pinned, command=self.command,
                       replicas=self.replicas, env={**production.env, **self.env}, publish=())


def image_of(service: Mapping[str, Any] | None) -> str | None:
    if service is None:
        return None
    return service.get("Spec", {}).get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image")


class CompanionRelease:
    """Update, watch and, when needed, roll back the companions of one release (see the module's docstring)."""

    def __init__(self, engine: Engine, deployer: Deployer, event: Callable[..., None]) -> None:
        self.engine = engine
        self.deployer = deployer
        self.event = event
        #: Per suffix: command, replicas, previous (image before), pinned, status, failures.
        self.report: dict[str, dict[str, Any]] = {}
        self._known: dict[str, set[str]] = {}

    def release(self, production: DeployOptions, companions: tuple[Companion, ...], pinned: str,
                watch: float) -> str | None:
        """Update every companion to ``pinned`` and watch their tasks; None when all held, else the reason (the
        companions are then back on what they ran before)."""
        failure = None
        changed = False
        for companion in companions:
            service = companion.service(production.name)
            current = self.engine.service(service)
            entry: dict[str, Any] = {"service": service, "command": companion.command,
                                     "replicas": companion.replicas, "previous": image_of(current),
                                     "pinned": pinned, "failures": []}
            self.report[companion.suffix] = entry
            self._known[service] = {t["ID"] for t in self.engine.service_tasks(service)} if current else set()
            try:
                record = self.deployer.deploy(companion.options(production, pinned))
            except DeployError as exc:  # Swarm's monitor saw a task die during the update, and rolled it back
                entry["status"] = "failed"
                failure = f"{service} failed its update: {exc.message}"
                self.event("service update failed", service=service)
                break
            entry["status"] = record["status"]
            changed = changed or record["status"] != "unchanged"
            self.event(f"service {record['status']}", service=service, command=companion.command)
        if failure is None and changed:
            failure = self.watch(production.name, companions, pinned, watch)
        if failure is not None:
            self.rollback(production, companions)
        return failure

    def watch(self, name: str, companions: tuple[Companion, ...], pinned: str, seconds: float) -> str | None:
        """Watch the companions' tasks of ``pinned`` for ``seconds``; the first that ended fails the release."""
        self.event("watching the services' tasks", seconds=seconds,
                   services=",".join(c.service(name) for c in companions))
        deadline = time.monotonic() + seconds
        while True:
            for companion in companions:
                service = companion.service(name)
                ended = [t for t in self.engine.service_tasks(service)
                         if t["ID"] not in self._known.get(service, set())
                         and t.get("Spec", {}).get("ContainerSpec", {}).get("Image") == pinned
                         and t["Status"]["State"] in ENDED]
                if ended:
                    failures = [self._failure(t) for t in sorted(ended, key=lambda t: t["Status"].get("Timestamp", ""))]
                    self.report[companion.suffix]["failures"] = failures
                    first = failures[0]
                    detail = first["error"] or f"exit code {first['exit_code']}"
                    self.event("service task ended", service=service, state=first["state"], error=detail)
                    return f"{len(ended)} task(s) of {service} ended within the watch ({first['state']}: {detail})"
            if time.monotonic() >= deadline:
                self.event("services held", seconds=seconds)
                return None
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def _failure(self, task: Mapping[str, Any]) -> dict[str, Any]:
        status = task["Status"]
        container = (status.get("ContainerStatus") or {}).get("ContainerID")
        logs = ""
        if container:
            try:
                logs = self.engine.container_logs(container)
            except GrockerError:
                logs = ""
        return {"task": task["ID"][:12], "state": status["State"], "at": status.get("Timestamp"),
                "exit_code": (status.get("ContainerStatus") or {}).get("ExitCode"), "error": status.get("Err", ""),
                "log_tail": "\n".join(logs.rstrip().splitlines()[-LOG_LINES:])}

    def rollback(self, production: DeployOptions, companions: tuple[Companion, ...]) -> None:
        """Every companion back to what it ran before the release (removed when it did not exist)."""
        for companion in companions:
            entry = self.report.get(companion.suffix)
            if entry is not None:
                self.restore(entry["service"], entry["previous"], replace(production, name=entry["service"]))
                entry["rolled_back_to"] = entry["previous"]

    def restore(self, service: str, previous: str | None, options: DeployOptions | None = None) -> None:
        """Put ``service`` back on ``previous``, the image it ran before the release (the deployer's restore: that
        release's digest and configuration, recorded as a rollback); a service that did not exist before (None) is
        removed."""
        current = image_of(self.engine.service(service))
        if current is None or current == previous:
            return
        if previous is None:
            self.deployer.stop(service)
            self.event("service removed (new in this release)", service=service)
        else:
            self.deployer.restore(service, previous, options)
            self.event("service rolled back", service=service, to=previous)


__all__ = ["ENDED", "Companion", "CompanionRelease", "image_of"]
