"""Deploying images on Docker Swarm mode: health-checked rolling updates, automatic rollback, history.

``grocker deploy IMAGE --name NAME`` makes (or updates) the Swarm service NAME:

* the image is pinned by digest (``repo@sha256:...`` when it came from a registry, else its ID),
  so what runs is exactly what was tested, and a rollback returns to the same bytes;
* the health check comes from the image's ``io.grocker.smoke-test`` label: the entrypoint's
  ``health`` command GETs the smoke-test path on the smoke-test port inside the task;
* updates roll one task at a time, the new task started before the old one stops
  (``start-first``); a new task that does not become healthy makes Swarm roll the service back
  to its previous spec by itself (``failure_action=rollback``), and ``deploy`` exits non-zero;
* env files become Swarm *secrets* mounted as ``/config/NN-NAME.env`` (read by the entrypoint;
  encrypted in the swarm, absent from ``docker service inspect``), versioned by content so
  that a rollback also returns to the previous configuration. The version in a secret's name
  is an HMAC of the content under a random key of the service (label ``io.grocker.secret-key``),
  not a plain hash: a name seen in a log or a history does not let anyone test guesses of a
  short secret offline, and the same file gives different names in different services;
* ``--publish HOST:PORT:TARGET`` starts an *edge* container (``NAME-edge``) published on
  HOST (default 127.0.0.1): HAProxy on the service's overlay network, sending HTTP requests to the
  service's tasks (Swarm's routing mesh cannot bind one address, and needs IPVS); see ``edge.py``;
* the smoke-test path read from the image's label must be a path (a leading ``/``): it is
  appended to ``http://HOST:PORT`` by the deploy probe and by the tasks' health check;
* what ran when is kept in the service's ``io.grocker.history`` label, newest last.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import secrets as secrets_module
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from setuptools_grocker.config import DEFAULT_BASE_IMAGE, check_http_path
from setuptools_grocker.deploy.edge import Edge, Pool, edge_name, network_of
from setuptools_grocker.engine import Engine, HealthCheck, ServiceSpec, labels_of
from setuptools_grocker.errors import ConfigError, DeployError, GrockerError
from setuptools_grocker.image.recipes import APP_DIR, VENV
from setuptools_grocker.progress import Progress
from setuptools_grocker.ref import ImageRef

DEPLOY_LABEL = "io.grocker.deploy"
HISTORY_LABEL = "io.grocker.history"
SECRET_KEY_LABEL = "io.grocker.secret-key"
MAX_HISTORY = 30
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Publish:
    host: str
    host_port: int
    port: int

    @classmethod
    def parse(cls, text: str) -> Publish:
        """``[HOST:]HOST_PORT:PORT`` or ``PORT``; HOST defaults to 127.0.0.1."""
        parts = text.rsplit(":", 2)
        try:
            if len(parts) == 1:
                host, host_port, port = "127.0.0.1", int(parts[0]), int(parts[0])
            elif len(parts) == 2:
                host, host_port, port = "127.0.0.1", int(parts[0]), int(parts[1])
            else:
                host, host_port, port = parts[0].strip("[]"), int(parts[1]), int(parts[2])
        except ValueError:
            host_port = port = -1
            host = ""
        if not host or not (0 < host_port < 65536 and 0 < port < 65536):
            raise DeployError(f"--publish {text!r} is not [HOST:]HOST_PORT:PORT",
                              "write e.g. --publish 127.0.0.1:8080:8000")
        return cls(host, host_port, port)

    def __str__(self) -> str:
        return f"{self.host}:{self.host_port}:{self.port}"


@dataclass
class DeployOptions:
    name: str
    image: str
    publish: tuple[Publish, ...] = ()
    env_files: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    command: str | None = None
    timeout: float = 180.0
    health_interval: float = 5.0
    health_retries: int = 3
    start_period: float = 10.0
    #: How long Swarm watches each new task after it became healthy before calling it a success.
    monitor: float = 5.0
    #: The image the edge (HAProxy) is built on.
    edge_base: str = DEFAULT_BASE_IMAGE


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise DeployError(f"service name {name!r} is not valid",
                          "use letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)")


def _require_swarm(engine: Engine) -> None:
    if not engine.swarm_manager():
        raise DeployError("this Docker Engine is not a Swarm manager",
                          "run `docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377` "
                          "(scripts/setup.sh does)")


def read_env_file(path: Path) -> bytes:
    """The bytes of an env file, after checking that every line is ``KEY=VALUE`` (or a comment)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeployError(f"cannot read env file {path} ({exc.strerror})", "give a readable file") from exc
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = line.removeprefix("export ").split("=", 1)[0].strip()
        if "=" not in line or not _ENV_KEY.match(key):
            raise DeployError(f"{path}:{number}: expected KEY=VALUE", "fix that line of the env file")
    return data


def env_file_values(data: bytes) -> dict[str, str]:
    """The variables of an env file (checked by :func:`read_env_file`), read as the image's entrypoint reads
    ``/config/*.env``: ``export`` allowed, one pair of surrounding quotes removed."""
    values = {}
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def env_secret_name(service: str, key: str, data: bytes) -> str:
    """The secret of an env file: the same content in the same service gives the same name."""
    return f"{service}-env-{hmac.new(key.encode(), data, hashlib.sha256).hexdigest()[:12]}"


def history(engine: Engine, name: str) -> list[dict[str, Any]]:
    """What ran when: the deploys and rollbacks of ``name``, oldest first."""
    check_name(name)
    service = engine.service(name)
    if service is None:
        raise DeployError(f"no service named {name}", "deploy it first: grocker deploy IMAGE --name " + name)
    return _history_of(service)


def _history_of(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    labels = service["Spec"].get("Labels") or {}
    try:
        return list(json.loads(labels.get(HISTORY_LABEL, "[]")))
    except ValueError:
        return []


class Deployer:
    def __init__(self, engine: Engine, progress: Progress) -> None:
        self.engine = engine
        self.progress = progress

    # -- the commands ---------------------------------------------------------------------
    def deploy(self, options: DeployOptions) -> dict[str, Any]:
        check_name(options.name)
        if options.replicas < 1:
            raise DeployError(f"--replicas {options.replicas} is not a positive number", "use 1 or more")
        _require_swarm(self.engine)
        attrs = self._image(options.image)
        labels = labels_of(attrs)
        for key, _ in options.env.items():
            if not _ENV_KEY.match(key):
                raise DeployError(f"--env {key!r} is not a variable name", "write --env NAME=VALUE")
        command = options.command or labels.get("io.grocker.default-command")
        health = _health_source(labels, command, options.image)  # before anything is created
        files = [read_env_file(path) for path in options.env_files]
        secret_key = self._secret_key(options.name)
        secrets = []
        for i, (path, data) in enumerate(zip(options.env_files, files)):
            secret = env_secret_name(options.name, secret_key, data)
            base = path.name if path.name.endswith(".env") else f"{path.name}.env"
            sid = self.engine.ensure_secret(secret, data, {DEPLOY_LABEL: options.name})
            secrets.append((sid, secret, f"/config/{50 + i:02d}-{base}"))
        record = {
            "action": "deploy",
            "image": options.image,
            "pinned": _pinned(attrs, options.image),
            "image_id": attrs["Id"],
            "version": labels.get("org.opencontainers.image.version"),
            "command": command,
            "env": dict(options.env),
            "secrets": [[name, target] for _, name, target in secrets],
            "replicas": options.replicas,
            "publish": [str(p) for p in options.publish],
            "health": health,
        }
        return self._apply(options, record, secrets, secret_key=secret_key)

    def rollback(self, name: str, options: DeployOptions | None = None) -> dict[str, Any]:
        """Go back one release: redeploy, by digest, what ran before the current release."""
        check_name(name)
        _require_swarm(self.engine)
        current, target = self.rollback_target(name)
        self.progress.info(f"rolling {name} back from {current.get('version')} to {target.get('version')} "
                           f"({target['pinned']})")
        return self.deploy_release(target, name, options, undo=current)

    def rollback_target(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The current release's deploy record and the one ``rollback`` would go back to."""
        stack = [r for r in history(self.engine, name) if r.get("action") == "deploy"
                 and r.get("status") == "deployed" and not r.get("undone")]
        if len(stack) < 2:
            raise DeployError(f"{name} has no earlier release to go back to",
                              f"see `grocker history {name}`")
        return stack[-1], stack[-2]

    def restore(self, name: str, pinned: str, options: DeployOptions | None = None) -> dict[str, Any]:
        """Go back to the release of ``pinned`` (the newest one recorded), by digest and with its configuration,
        whatever the history says runs now: a ``grocker ship`` that died during an update left the service on an
        image its history may not name yet (the record is written once the update is over)."""
        check_name(name)
        _require_swarm(self.engine)
        records = history(self.engine, name)
        target = next((r for r in reversed(records) if r.get("action") in ("deploy", "rollback")
                       and r.get("status") == "deployed" and r.get("pinned") == pinned), None)
        if target is None:
            raise DeployError(f"{name} has no recorded release of {pinned} to go back to",
                              f"see `grocker history {name}`")
        running = _image_of(self.engine.service(name))
        current = next((r for r in reversed(records) if r.get("action") == "deploy" and r.get("status") == "deployed"
                        and not r.get("undone") and r.get("pinned") == running), None)
        return self.deploy_release(target, name, options, undo=current or {"pinned": running})

    def deploy_release(self, target: dict[str, Any], name: str, options: DeployOptions | None = None,
                       *, undo: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the release of the deploy record ``target`` (by digest, with its env, env file secrets, command
        and replicas) as the service ``name``: NAME itself (a rollback, marking ``undo`` as rolled back), or
        another service (the drift watch runs the previous release as NAME's canary pool first)."""
        secrets = []
        for secret, target_path in target.get("secrets", []):
            found = self.engine.secret_id(secret)
            if found is None:
                raise DeployError(f"the env file secret {secret} of that release is gone",
                                  "deploy that image again with its env file")
            secrets.append((found, secret, target_path))
        base = options or DeployOptions(name=name, image=target["pinned"])
        opts = DeployOptions(name=name, image=target["pinned"],
                             publish=tuple(Publish.parse(p) for p in target["publish"]) if undo is not None else (),
                             env=dict(target.get("env", {})), replicas=int(target.get("replicas", 1)),
                             command=target.get("command"), timeout=base.timeout,
                             health_interval=base.health_interval, health_retries=base.health_retries,
                             start_period=base.start_period, monitor=base.monitor, edge_base=base.edge_base)
        record = {**{k: v for k, v in target.items() if k not in ("at", "status", "undone", "error")},
                  "action": "rollback" if undo is not None else "deploy",
                  **({"from": undo.get("pinned")} if undo is not None else {})}
        return self._apply(opts, record, secrets, undo=undo, secret_key=self._secret_key(name))

    def pin(self, image: str) -> str:
        """What ``deploy`` would run for ``image``: ``repo@sha256:...``, or the image ID of a local image."""
        return _pinned(self._image(image), image)

    def stop(self, name: str) -> None:
        """Remove the service, its edge, its network and its env file secrets."""
        check_name(name)
        _require_swarm(self.engine)
        service = self.engine.service(name)
        if service is None:
            raise DeployError(f"no service named {name}", "see `docker service ls`")
        if (service["Spec"].get("Labels") or {}).get(DEPLOY_LABEL) != name:
            raise DeployError(f"service {name} was not deployed by grocker", f"remove it with docker service rm {name}")
        self.engine.remove_container(edge_name(name))
        self.engine.remove_service(name)
        self.engine.remove_network(_network(name))
        self.engine.remove_secrets(f"{DEPLOY_LABEL}={name}", keep=())

    def add_record(self, name: str, record: dict[str, Any]) -> None:
        """Append ``record`` (a `grocker ship` outcome: promoted, rolled back) to NAME's history; its tasks are
        not touched. ``rollback`` goes back over deploy records only."""
        current = self.engine.service(name)
        if current is None or (current["Spec"].get("Labels") or {}).get(DEPLOY_LABEL) != name:
            return
        self._write_history(name, [*_history_of(current), {**record, "at": _now()}], self._secret_key(name))

    # -- the work -------------------------------------------------------------------------
    def _secret_key(self, name: str) -> str:
        """The service's key for naming env file secrets; a new random one for a new service."""
        service = self.engine.service(name)
        labels = (service or {}).get("Spec", {}).get("Labels") or {}
        key = labels.get(SECRET_KEY_LABEL) if labels.get(DEPLOY_LABEL) == name else None
        return key or secrets_module.token_hex(32)

    def _image(self, ref: str) -> dict[str, Any]:
        attrs = self.engine.image_attrs(ref)
        if attrs is None:
            try:
                attrs = self.engine.ensure_image(ref, base=False)
            except GrockerError as exc:
                raise DeployError(f"image {ref} is not in the engine and cannot be pulled",
                                  "build it (grocker build) or give a reference the registry has") from exc
        return attrs

    def _apply(self, options: DeployOptions, record: dict[str, Any], secrets: list[tuple[str, str, str]],
               undo: dict[str, Any] | None = None, *, secret_key: str) -> dict[str, Any]:
        name = options.name
        current = self.engine.service(name)
        if current is not None and (current["Spec"].get("Labels") or {}).get(DEPLOY_LABEL) != name:
            raise DeployError(f"a service named {name} exists and was not deployed by grocker",
                              "choose another --name, or remove it with docker service rm")
        records = _history_of(current) if current else []
        health = None
        if record.get("health"):
            # A rollback reads it back from the history label: checked again.
            _check_health(record["health"], f"the history of {name}")
            health = HealthCheck(("CMD", f"{VENV}/bin/python", f"{APP_DIR}/grocker/entrypoint.py", "health",
                                  str(record["health"]["port"]), record["health"]["path"]),
                                 interval=options.health_interval, timeout=3.0, retries=options.health_retries,
                                 start_period=options.start_period)
        spec = ServiceSpec(
            name=name, image=record["pinned"], args=[record["command"]] if record.get("command") else [],
            env=dict(record.get("env", {})), secrets=secrets, health=health, replicas=options.replicas,
            network=_network(name), labels={DEPLOY_LABEL: name},
            service_labels=_service_labels(name, records, secret_key),
            monitor=options.monitor,
        )
        if current is not None and _same(current, spec):
            self.progress.info(f"{name} already runs {record['pinned']} with this configuration; nothing to do")
            self._ensure_edge(name, options)
            return {**(records[-1] if records else record), "status": "unchanged"}
        self.engine.ensure_overlay_network(_network(name), {DEPLOY_LABEL: name})
        before = (current or {}).get("UpdateStatus", {}).get("StartedAt")
        start = time.monotonic()
        record["at"] = _now()
        with self.progress.stage("deploy"):
            self.engine.put_service(spec, current=current)
            if current is None:
                error = self._wait_created(name, options)
                if error:
                    self._remove_all(name)
                    raise DeployError(f"{name} did not become healthy: {error}; nothing was deployed",
                                      f"see the task logs (docker service logs {name}) and the image's health check")
            else:
                state, error = self._wait_updated(name, before, options)
                if state != "completed":
                    record.update(status="failed", error=error, seconds=round(time.monotonic() - start, 1))
                    self._write_history(name, [*records, record], secret_key)
                    previous: dict[str, Any] = next((r for r in reversed(records) if r.get("status") == "deployed"), {})
                    raise DeployError(
                        f"{record['pinned']} did not become healthy ({error}); Swarm rolled {name} back to "
                        f"{previous.get('pinned', 'its previous image')}",
                        f"see `docker service ps {name} --no-trunc`; the service kept answering on the old image")
        self._ensure_edge(name, options)
        record.update(status="deployed", seconds=round(time.monotonic() - start, 1))
        if undo is not None:
            for r in records:
                if r.get("at") == undo.get("at") and r.get("pinned") == undo.get("pinned"):
                    r["undone"] = True
        self._write_history(name, [*records, record], secret_key)
        if health and options.publish:
            self._probe(name, options.publish[0], record["health"]["path"], options.timeout)
        return record

    def _write_history(self, name: str, records: list[dict[str, Any]], secret_key: str) -> None:
        records = records[-MAX_HISTORY:]
        self.engine.set_service_labels(name, _service_labels(name, records, secret_key))
        keep = {s for r in records for s, _ in r.get("secrets", [])}
        self.engine.remove_secrets(f"{DEPLOY_LABEL}={name}", keep=keep)

    def _wait_created(self, name: str, options: DeployOptions) -> str | None:
        deadline = time.monotonic() + options.timeout
        last_error = "no task started"
        failures = 0
        while time.monotonic() < deadline:
            tasks = self.engine.service_tasks(name)
            running = [t for t in tasks if t["DesiredState"] == "running" and t["Status"]["State"] == "running"]
            failed = [t for t in tasks if t["Status"]["State"] in ("failed", "rejected")]
            if failed:
                last_error = failed[-1]["Status"].get("Err") or failed[-1]["Status"].get("Message", "failed")
            failures = len(failed)
            if len(running) >= options.replicas:
                return None
            if failures >= 3 * options.replicas:
                return f"{failures} tasks failed, last: {last_error}"
            time.sleep(0.5)
        return f"not healthy within {options.timeout:.0f}s (last: {last_error})"

    def _wait_updated(self, name: str, before: str | None, options: DeployOptions) -> tuple[str, str]:
        deadline = time.monotonic() + options.timeout
        state, message = "updating", ""
        while time.monotonic() < deadline:
            status = (self.engine.service(name) or {}).get("UpdateStatus") or {}
            if status.get("StartedAt") and status.get("StartedAt") != before:
                state, message = status.get("State", ""), status.get("Message", "")
                if state == "completed":
                    return state, ""
                if state in ("rollback_completed", "paused", "rollback_paused"):
                    return state, self._task_error(name) or message
            time.sleep(0.5)
        return state, f"the update did not finish within {options.timeout:.0f}s ({message or state})"

    def _task_error(self, name: str) -> str:
        tasks = sorted(self.engine.service_tasks(name), key=lambda t: t.get("UpdatedAt", ""))
        for task in reversed(tasks):
            err = task["Status"].get("Err")
            if err:
                return err
        return ""

    def _ensure_edge(self, name: str, options: DeployOptions) -> None:
        edge = Edge(self.engine, name)
        pools = [Pool(name)]
        if options.publish and self.engine.container_labels(edge.container) is not None:
            # The other pools of the edge (a canary of `grocker ship`) stay while their services run.
            try:
                present = edge.pools()
            except DeployError:
                present = []
            pools = [next((p for p in present if p.service == name), Pool(name))]
            pools += [p for p in present if p.service != name and self.engine.service(p.service) is not None]
        edge.ensure(options.publish, pools, base_image=options.edge_base, labels={DEPLOY_LABEL: name},
                    progress=self.progress)

    def _probe(self, name: str, publish: Publish, path: str, timeout: float) -> None:
        host = "127.0.0.1" if publish.host in ("0.0.0.0", "::") else publish.host
        url = f"http://{host}:{publish.host_port}{path}"
        deadline = time.monotonic() + min(timeout, 60)
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    self.progress.info(f"{url} answered {resp.status}")
                    return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            time.sleep(0.5)
        raise DeployError(f"the service is healthy but {url} does not answer ({last})",
                          f"check that --publish names the port the server listens on (docker logs {edge_name(name)})")

    def _remove_all(self, name: str) -> None:
        self.engine.remove_container(edge_name(name))
        self.engine.remove_service(name)
        self.engine.remove_network(_network(name))
        self.engine.remove_secrets(f"{DEPLOY_LABEL}={name}", keep=())


def _image_of(service: Mapping[str, Any] | None) -> str | None:
    return (service or {}).get("Spec", {}).get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image")


def _network(name: str) -> str:
    return network_of(name)


def _service_labels(name: str, records: list[dict[str, Any]], secret_key: str) -> dict[str, str]:
    return {DEPLOY_LABEL: name, HISTORY_LABEL: json.dumps(records[-MAX_HISTORY:]), SECRET_KEY_LABEL: secret_key}


def _pinned(attrs: Mapping[str, Any], ref: str) -> str:
    """``repo@sha256:...`` for an image in a registry (the repo of ``ref`` first), else its ID.

    grocker pushes through the registry's API, so the engine may not know the digest: the
    registry is asked whether ``ref`` holds exactly this image (same config digest).
    """
    from setuptools_grocker.registry.client import RegistryError, get_manifest

    digests = attrs.get("RepoDigests") or []
    repo = ImageRef.parse(ref).repository
    for d in digests:
        if ImageRef.parse(d).repository == repo:
            return str(d)
    try:
        body, _ = get_manifest(ref)
        if json.loads(body).get("config", {}).get("digest") == attrs["Id"]:
            return f"{repo}@sha256:{hashlib.sha256(body).hexdigest()}"
    except (RegistryError, ValueError):
        pass
    return str(digests[0]) if digests else str(attrs["Id"])


def _health_source(labels: Mapping[str, str], command: str | None, image: str) -> dict[str, Any] | None:
    """The HTTP health check of the default command, from the image's smoke-test label."""
    try:
        smoke = json.loads(labels.get("io.grocker.smoke-test", "{}"))
    except ValueError:
        return None
    if not isinstance(smoke, dict) or not smoke.get("port") or command != labels.get("io.grocker.default-command"):
        return None
    health = {"port": smoke["port"], "path": smoke.get("path") or "/"}
    _check_health(health, f"the io.grocker.smoke-test label of {image}")
    return health


def _check_health(health: Mapping[str, Any], where: str) -> None:
    """The probe goes to http://HOST:PORT + path: a port number, and a path that cannot change the host."""
    port, path = health.get("port"), health.get("path")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise DeployError(f"{where} has port {port!r}, not a port number",
                          "rebuild the image with grocker build (smoke-test.port is checked there)")
    try:
        check_http_path(path if isinstance(path, str) else repr(path), where=f"{where}: path")
    except ConfigError as exc:
        raise DeployError(exc.message,
                          "rebuild the image with grocker build (smoke-test.path is checked there)") from exc


def _same(current: Mapping[str, Any], spec: ServiceSpec) -> bool:
    cs = current["Spec"]["TaskTemplate"]["ContainerSpec"]
    replicas = current["Spec"].get("Mode", {}).get("Replicated", {}).get("Replicas")
    return (cs.get("Image") == spec.image and list(cs.get("Args") or []) == spec.args
            and sorted(cs.get("Env") or []) == sorted(f"{k}={v}" for k, v in spec.env.items())
            and sorted(s["SecretName"] for s in cs.get("Secrets") or []) == sorted(s[1] for s in spec.secrets)
            and replicas == spec.replicas)
