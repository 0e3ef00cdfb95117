"""Swarm mode: services, their overlay networks and secrets, for :mod:`setuptools_grocker.deploy.deployer`.

The deploy module decides *what* runs (image pinned by digest, health check, secrets,
labels, history) and describes it as a :class:`ServiceSpec`; this module turns that into
the engine's service spec: rolling updates one task at a time, new task first
(``start-first``), rolled back by Swarm itself when a new task does not become healthy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from setuptools_grocker.engine.connection import Connection, docker

__all__ = ["HealthCheck", "ServiceSpec", "Swarm"]


@dataclass(frozen=True)
class HealthCheck:
    """A task's health check (``docker service create --health-*``); durations in seconds."""

    test: tuple[str, ...]
    interval: float = 5.0
    timeout: float = 3.0
    retries: int = 3
    start_period: float = 10.0


@dataclass(frozen=True)
class ServiceSpec:
    """Everything the engine needs to create or update a service (see :meth:`Swarm.put_service`)."""

    name: str
    image: str
    args: list[str]
    env: dict[str, str]
    secrets: list[tuple[str, str, str]]  # (secret id, secret name, target path)
    health: HealthCheck | None
    replicas: int
    network: str
    #: Labels of the service's containers, and of the service itself.
    labels: dict[str, str]
    service_labels: dict[str, str]
    #: How long Swarm watches each new task after it became healthy before calling it a success.
    monitor: float
    force_update: int = 0


class Swarm(Connection):
    """The Swarm-mode operations of :class:`~setuptools_grocker.engine.Engine`."""

    def swarm_manager(self) -> bool:
        """Is this engine a manager of an active swarm?"""
        info = self._call("read the engine info", self.client.info)
        swarm = info.get("Swarm") or {}
        return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))

    def service(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call(f"inspect service {name}", self.client.api.inspect_service, name)
        except docker.errors.NotFound:
            return None

    def service_tasks(self, name: str) -> list[dict[str, Any]]:
        return self._call(f"list the tasks of {name}", self.client.api.tasks, filters={"service": name})

    def service_logs(self, name: str, *, tail: int = 20) -> list[tuple[str, str]]:
        """The last ``tail`` lines (stdout and stderr) of each task of the service ``name``, as ``(task ID,
        line)`` in the engine's order; [] when the service is gone. Read through the service's log API, so
        tasks on other nodes are included (``docker service logs --details --tail N``)."""
        self.progress.command(["docker", "service", "logs", "--details", "--tail", str(tail), name])
        lines: list[tuple[str, str]] = []
        try:
            chunks = self._call(f"read the logs of {name}", self.client.api.service_logs, name, details=True,
                                stdout=True, stderr=True, tail=tail, is_tty=False)
            for chunk in chunks:
                for raw in chunk.decode("utf-8", "replace").splitlines():
                    lines.append(_task_line(raw))
        except docker.errors.NotFound:
            return []
        return lines

    def put_service(self, spec: ServiceSpec, *, current: Mapping[str, Any] | None = None) -> None:
        """Create the service of ``spec``, or roll the tasks of ``current`` (its inspect data) to it."""
        hc = spec.health
        healthcheck = docker.types.Healthcheck(
            test=list(hc.test), interval=_ns(hc.interval), timeout=_ns(hc.timeout), retries=hc.retries,
            start_period=_ns(hc.start_period)) if hc else docker.types.Healthcheck(test=["NONE"])
        container = docker.types.ContainerSpec(
            spec.image, args=list(spec.args), env=[f"{k}={v}" for k, v in sorted(spec.env.items())],
            healthcheck=healthcheck, labels=dict(spec.labels), stop_grace_period=_ns(10),
            secrets=[docker.types.SecretReference(sid, sname, filename=target)
                     for sid, sname, target in spec.secrets],
        )
        task = docker.types.TaskTemplate(
            container_spec=container, networks=[spec.network],
            restart_policy=docker.types.RestartPolicy(condition="any", delay=_ns(1)),
            force_update=spec.force_update,
        )
        rolling = {"parallelism": 1, "delay": 0, "monitor": _ns(spec.monitor), "order": "start-first",
                   "max_failure_ratio": 0}
        kwargs = dict(
            name=spec.name, labels=dict(spec.service_labels),
            mode=docker.types.ServiceMode("replicated", replicas=spec.replicas),
            update_config=docker.types.UpdateConfig(failure_action="rollback", **rolling),
            rollback_config=docker.types.RollbackConfig(failure_action="pause", **rolling),
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
        )
        if current is None:
            self.progress.command(["docker", "service", "create", "--name", spec.name, spec.image, *spec.args])
            self._call(f"create service {spec.name}", self.client.api.create_service, task, **kwargs)
        else:
            self.progress.command(["docker", "service", "update", "--image", spec.image, spec.name])
            self._call(f"update service {spec.name}", self.client.api.update_service, current["ID"],
                       current["Version"]["Index"], task_template=task, **kwargs)

    def set_service_labels(self, name: str, labels: Mapping[str, str]) -> None:
        """Change the labels of a service only (its tasks are not touched)."""
        current = self.service(name)
        if current is None:
            return
        spec = current["Spec"]
        self._call(f"label service {name}", self.client.api.update_service, current["ID"],
                   current["Version"]["Index"], task_template=spec["TaskTemplate"], name=spec["Name"],
                   labels=dict(labels), mode=spec.get("Mode"), update_config=spec.get("UpdateConfig"),
                   rollback_config=spec.get("RollbackConfig"), endpoint_spec=spec.get("EndpointSpec"))

    def remove_service(self, name: str) -> bool:
        try:
            self.progress.command(["docker", "service", "rm", name])
            self._call(f"remove service {name}", self.client.api.remove_service, name)
            return True
        except docker.errors.NotFound:
            return False

    def _network_listed(self, name: str) -> bool:
        # The engine's name filter matches parts of names: grocker-web would find grocker-web-canary.
        return any(n.get("Name") == name for n in self._call("list networks", self.client.api.networks, names=[name]))

    def ensure_overlay_network(self, name: str, labels: Mapping[str, str]) -> None:
        if self._network_listed(name):
            return
        self.progress.command(["docker", "network", "create", "-d", "overlay", "--attachable", name])
        self._call(f"create network {name}", self.client.api.create_network, name, driver="overlay",
                   attachable=True, labels=dict(labels), check_duplicate=True)

    def remove_network(self, name: str) -> None:
        for _ in range(20):  # the tasks' endpoints go away a moment after the service
            try:
                self._call(f"remove network {name}", self.client.api.remove_network, name)
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError:
                time.sleep(0.5)
        # The node's copy of an attachable network goes a moment after the swarm's: a service created under the
        # same name meanwhile would find the name taken and the network gone.
        for _ in range(40):
            if not self._network_listed(name):
                return
            time.sleep(0.25)

    def secret_id(self, name: str) -> str | None:
        for secret in self._call("list secrets", self.client.api.secrets, filters={"name": name}):
            if secret["Spec"]["Name"] == name:
                return str(secret["ID"])
        return None

    def ensure_secret(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        """The ID of secret ``name`` (created with ``data`` when absent; names carry a keyed hash of the content)."""
        found = self.secret_id(name)
        if found is not None:
            return found
        created = self._call(f"create secret {name}", self.client.api.create_secret, name, data, labels=dict(labels))
        return str(created["ID"])

    def remove_secrets(self, label: str, keep: Iterable[str]) -> None:
        """Remove the secrets carrying ``label`` except ``keep`` (names); those still in use stay."""
        keep = set(keep)
        for secret in self._call("list secrets", self.client.api.secrets, filters={"label": label}):
            if secret["Spec"]["Name"] not in keep:
                try:
                    self.client.api.remove_secret(secret["ID"])
                except docker.errors.APIError:
                    pass


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _task_line(raw: str) -> tuple[str, str]:
    """``(task ID, text)`` of a ``--details`` log line: ``com.docker.swarm.node.id=N,...task.id=T text``."""
    details, sep, text = raw.partition(" ")
    if not sep or "=" not in details:
        return "", raw
    fields = dict(item.partition("=")[::2] for item in details.split(","))
    return fields.get("com.docker.swarm.task.id", ""), text
