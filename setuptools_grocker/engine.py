"""The only module that talks to the Docker Engine.

Everything else asks :class:`Engine` for images, containers and tags, and gets typed
errors back. Every engine operation is echoed as the equivalent ``docker`` command line,
so a user can replay it by hand. It is also the only module that imports the docker SDK:
:func:`registry_credentials` reads the Docker client's login configuration through it.
"""
from __future__ import annotations

import atexit
import datetime
import json
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from setuptools_grocker.errors import (
    BaseImageError,
    EngineUnavailable,
    GrockerError,
    ImageBuildError,
    RegistryError,
)
from setuptools_grocker.ownership import (
    HEARTBEAT,
    LEASE_LABEL,
    LEASE_TTL,
    OWNER_LABEL,
    PID_LABEL,
    Seen,
    lease_deadline,
    lease_labels,
    lease_name,
    orphaned,
    own_labels,
    run_id,
)
from setuptools_grocker.progress import Progress

try:  # imported here only: the rest of the package never imports docker.
    import docker
    import docker.errors
    import docker.types
except ImportError:  # pragma: no cover
    docker = None  # type: ignore[assignment,unused-ignore]  # needed once docker ships type hints

__all__ = ["Engine", "Container", "Mount", "RunResult", "OWNER_LABEL", "PID_LABEL", "engine_time"]


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    output: str

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


class Engine:
    """A connection to the Docker Engine; use it as a context manager."""

    def __init__(self, progress: Progress | None = None, base_url: str | None = None) -> None:
        self.progress = progress or Progress(quiet=True)
        self.containers_started = 0
        self._base_url = base_url
        self._client: Any = None

    # -- connection -----------------------------------------------------------------
    def __enter__(self) -> Engine:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if docker is None:  # pragma: no cover
            raise EngineUnavailable("the 'docker' Python package is not installed", "pip install docker")
        try:
            self._client = _new_client(self._base_url)
            self._client.ping()
        except (docker.errors.DockerException, OSError) as exc:
            where = self._base_url or "the DOCKER_HOST or unix:///var/run/docker.sock"
            raise EngineUnavailable(
                f"no Docker Engine answers at {where} ({_short(exc)})",
                "start one (`dockerd &`, or `systemctl start docker`) or set DOCKER_HOST",
            ) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an SDK call, converting connection loss into EngineUnavailable."""
        try:
            return fn(*args, **kwargs)
        except docker.errors.APIError:
            raise
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(
                f"the Docker Engine stopped answering while trying to {what} ({_short(exc)})",
                "check that dockerd is running, then run the build again",
            ) from exc
        except Exception as exc:  # requests' ConnectionError and friends
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise EngineUnavailable(
                    f"the Docker Engine stopped answering while trying to {what} ({_short(exc)})",
                    "check that dockerd is running, then run the build again",
                ) from exc
            raise

    # -- images ---------------------------------------------------------------------
    def image_attrs(self, ref: str) -> dict[str, Any] | None:
        """The ``docker image inspect`` data of ``ref``, or None when the engine lacks it."""
        try:
            return self._call(f"inspect {ref}", self.client.api.inspect_image, ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise

    def image_id(self, ref: str) -> str | None:
        attrs = self.image_attrs(ref)
        return attrs["Id"] if attrs else None

    def ensure_image(self, ref: str) -> dict[str, Any]:
        """Return the attributes of ``ref``, pulling it when absent."""
        attrs = self.image_attrs(ref)
        if attrs:
            return attrs
        self.progress.command(["docker", "pull", ref])
        try:
            self._call(f"pull {ref}", self.client.api.pull, ref)
        except docker.errors.APIError as exc:
            raise BaseImageError(
                f"base image '{ref}' is not in the engine and could not be pulled ({_short(exc)})",
                f"build one with `grocker bootstrap-base --tag {ref}`, or set base-image to an image you have",
            ) from exc
        attrs = self.image_attrs(ref)
        if not attrs:  # pragma: no cover - the engine said it pulled it
            raise BaseImageError(f"base image '{ref}' was pulled but cannot be inspected")
        return attrs

    def build(self, context: Path, *, tag: str | None = None, nocache: bool = False,
              labels: Mapping[str, str] | None = None, what: str = "image") -> str:
        """Build ``context/Dockerfile`` with the classic builder; return the image ID."""
        argv = ["docker", "build", "--rm", "--force-rm"]
        if tag:
            argv += ["-t", tag]
        if nocache:
            argv.append("--no-cache")
        self.progress.command(argv + [str(context)])
        tail: deque[str] = deque(maxlen=40)
        image_id = None
        try:
            stream = self._call(
                f"build the {what}",
                self.client.api.build,
                path=str(context),
                tag=tag,
                rm=True,
                forcerm=True,
                nocache=nocache,
                decode=True,
                labels=dict(labels or {}),
            )
            for chunk in stream:
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        if line.strip():
                            tail.append(line)
                            self.progress.output(line)
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if "error" in chunk:
                    tail.append(chunk["error"])
                    raise ImageBuildError(
                        f"building the {what} failed: {chunk['error'].strip().splitlines()[-1]}",
                        "see the build output above",
                        details="\n".join(tail),
                    )
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"building the {what} failed: {_short(exc)}",
                                  "see the build output above", details="\n".join(tail)) from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise EngineUnavailable(f"the Docker Engine stopped answering while building the {what}",
                                    "check that dockerd is running, then run the build again") from exc
        if image_id is None:
            raise ImageBuildError(f"building the {what} produced no image", "see the build output above",
                                  details="\n".join(tail))
        return image_id

    def tag(self, image_id: str, ref: str) -> None:
        from setuptools_grocker.config import split_reference

        repo, tag = split_reference(ref)
        self.progress.command(["docker", "tag", image_id[7:19] if image_id.startswith("sha256:") else image_id, ref])
        self._call(f"tag {ref}", self.client.api.tag, image_id, repo, tag or "latest", force=True)

    def import_tarball(self, tarball: Path, ref: str, changes: Iterable[str] = ()) -> str:
        """``docker import`` a root filesystem tarball; return the image ID."""
        from setuptools_grocker.config import split_reference

        repo, tag = split_reference(ref)
        self.progress.command(["docker", "import", str(tarball), ref])
        result = self._call(
            "import the base image",
            self.client.api.import_image_from_file,
            str(tarball),
            repository=repo,
            tag=tag or "latest",
            changes=list(changes),
        )
        image_id = self.image_id(ref)
        if not image_id:
            raise ImageBuildError(f"importing {ref} failed: {result}", "see the engine log")
        return image_id

    def load(self, archive: bytes, what: str) -> None:
        """``docker load`` an image archive (layers the engine already has may be left out)."""
        self.progress.command(["docker", "load"])
        try:
            answer = self._call(f"load the {what}", self.client.api.load_image, archive)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"loading the {what} failed: {_short(exc)}", "see the engine log") from exc
        for chunk in answer or []:
            if isinstance(chunk, dict) and chunk.get("error"):
                raise ImageBuildError(f"loading the {what} failed: {chunk['error']}", "see the engine log")

    def save_image(self, ref: str) -> tuple[bytes, dict[str, bytes]]:
        """``docker save``: the image config's exact bytes and its layer tars by diff ID."""
        import hashlib
        import io
        import tarfile

        self.progress.command(["docker", "save", ref])
        data = b"".join(self._call(f"save {ref}", self.client.api.get_image, ref))
        layers: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            config = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
            for name in manifest[0]["Layers"]:
                blob = tar.extractfile(name).read()  # type: ignore[union-attr]
                layers["sha256:" + hashlib.sha256(blob).hexdigest()] = blob
        return config, layers

    # -- containers -----------------------------------------------------------------
    def run(self, image: str, command: list[str], *, mounts: Iterable[Mount] = (),
            env: Mapping[str, str] | None = None, user: str | None = None, workdir: str | None = None,
            entrypoint: list[str] | None = None, stream: bool = True, timeout: float | None = None,
            network: str | None = None, secret_env: Iterable[str] = ()) -> RunResult:
        """Run a container to completion and remove it; return its exit code and output."""
        mounts = list(mounts)
        secret = set(secret_env)
        argv = ["docker", "run", "--rm"]
        for m in mounts:
            argv += ["-v", f"{m.source}:{m.target}" + (":ro" if m.read_only else "")]
        for k, v in (env or {}).items():
            argv += ["-e", f"{k}=***" if k in secret else f"{k}={v}"]
        if user:
            argv += ["-u", user]
        if entrypoint is not None:
            argv += ["--entrypoint", " ".join(entrypoint)]
        self.progress.command(argv + [image] + command)
        container = self._create(image, command, mounts=mounts, env=env, user=user, workdir=workdir,
                                 entrypoint=entrypoint, network=network)
        lines: list[str] = []
        try:
            self._call("start a container", container.start)
            self.containers_started += 1
            for raw in self._call("read container logs", container.logs, stream=True, follow=True):
                text = raw.decode("utf-8", "replace")
                lines.append(text)
                if stream:
                    for line in text.splitlines():
                        self.progress.output(line)
            status = self._call("wait for a container", container.wait, timeout=timeout)
            return RunResult(int(status.get("StatusCode", 1)), "".join(lines))
        finally:
            self._remove(container)

    def start(self, image: str, command: list[str], *, ports: Mapping[int, int | None] | None = None,
              env: Mapping[str, str] | None = None, mounts: Iterable[Mount] = (),
              name: str | None = None) -> Container:
        """Start a long-running container with ports published on 127.0.0.1 only."""
        published = {f"{p}/tcp": ("127.0.0.1", host) for p, host in (ports or {}).items()}
        argv = ["docker", "run", "-d"]
        for p, host in (ports or {}).items():
            argv += ["-p", f"127.0.0.1:{host or ''}:{p}"]
        self.progress.command(argv + [image] + command)
        container = self._create(image, command, mounts=list(mounts), env=env, ports=published, name=name)
        self._call("start a container", container.start)
        self.containers_started += 1
        container.reload()
        return Container(self, container)

    def _create(self, image: str, command: list[str], *, mounts: list[Mount], env: Mapping[str, str] | None,
                user: str | None = None, workdir: str | None = None, entrypoint: list[str] | None = None,
                network: str | None = None, ports: Mapping[str, Any] | None = None,
                name: str | None = None) -> Any:
        # The lease exists before any container of the run: a reaper that sees the container sees it.
        _Lease.hold(self._base_url, image)
        try:
            return self._call(
                "create a container",
                self.client.containers.create,
                image,
                command,
                mounts=[docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
                        for m in mounts],
                environment=dict(env or {}),
                user=user,
                working_dir=workdir,
                entrypoint=entrypoint,
                network_mode=network,
                ports=dict(ports or {}),
                labels=own_labels(),
                name=name,
                detach=True,
            )
        except docker.errors.APIError as exc:
            raise GrockerError(f"cannot create a container from {image}: {_short(exc)}",
                               "check that the image exists and the paths mounted are valid") from exc

    def reap_orphans(self) -> int:
        """Remove the containers of grocker runs that are gone (see :mod:`setuptools_grocker.ownership`).

        A build killed with SIGKILL cannot remove its containers; the next build does. A run
        of this machine and PID namespace is gone when its process is; any other run when its
        lease in the engine has expired. Containers of live runs, wherever they run, stay.
        """
        try:
            # One listing: a run's lease is created before its containers, so it is in the
            # same snapshot as any container of the run.
            listed = self._call("list containers", self.client.api.containers, all=True,
                                filters={"label": OWNER_LABEL})
            now = self._call("read the engine's clock", engine_time, self.client)
        except docker.errors.APIError:
            return 0
        seen = [Seen(name=((c.get("Names") or [""])[0]).lstrip("/"), labels=c.get("Labels") or {},
                     status=str(c.get("State", ""))) for c in listed]
        leases = {s.labels[LEASE_LABEL]: deadline for s in seen
                  if LEASE_LABEL in s.labels and (deadline := lease_deadline(s.name)) is not None}
        me = run_id()
        removed = 0
        for c, s in zip(listed, seen):
            if orphaned(s, leases, now, me):
                self.progress.command(["docker", "rm", "-f", str(c["Id"])[:12]])
                try:
                    self.client.api.remove_container(c["Id"], force=True)
                    removed += 1
                except Exception:  # best effort: gone already, or removed by another reaper
                    pass
        return removed

    def _remove(self, container: Any) -> None:
        try:
            container.remove(force=True)
        except Exception:  # best effort: the engine may be gone, and the error that matters is already raised
            pass


    # -- Swarm mode (deploy) -------------------------------------------------------------
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

    def put_service(self, spec: Any, *, current: Mapping[str, Any] | None = None) -> None:
        """Create the service of ``spec`` (a deploy.ServiceSpec), or roll its tasks to it."""
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

    def ensure_overlay_network(self, name: str, labels: Mapping[str, str]) -> None:
        if self._call("list networks", self.client.api.networks, names=[name]):
            return
        self.progress.command(["docker", "network", "create", "-d", "overlay", "--attachable", name])
        self._call(f"create network {name}", self.client.api.create_network, name, driver="overlay",
                   attachable=True, labels=dict(labels), check_duplicate=True)

    def remove_network(self, name: str) -> None:
        for _ in range(20):  # the tasks' endpoints go away a moment after the service
            try:
                self._call(f"remove network {name}", self.client.api.remove_network, name)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError:
                time.sleep(0.5)

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

    def run_daemon(self, name: str, image: str, command: list[str], *, ports: Mapping[int, tuple[str, int]],
                   network: str, labels: Mapping[str, str]) -> None:
        """Start a named long-running container that restarts with the engine (not reaped as an orphan)."""
        argv = ["docker", "run", "-d", "--name", name, "--restart", "unless-stopped", "--network", network]
        for port, (host, host_port) in ports.items():
            argv += ["-p", f"{host}:{host_port}:{port}"]
        self.progress.command(argv + [image] + command)
        try:
            container = self._call(
                f"create container {name}", self.client.containers.create, image, command, name=name, detach=True,
                ports={f"{p}/tcp": hp for p, hp in ports.items()}, network=network, labels=dict(labels),
                restart_policy={"Name": "unless-stopped"})
            self._call(f"start container {name}", container.start)
        except docker.errors.APIError as exc:
            self.remove_container(name)
            raise GrockerError(f"cannot start {name}: {_short(exc)}",
                               "is the port already in use? choose another with --publish") from exc

    def container_labels(self, name: str) -> dict[str, str] | None:
        try:
            attrs = self._call(f"inspect {name}", self.client.api.inspect_container, name)
        except docker.errors.NotFound:
            return None
        return labels_of(attrs)

    def remove_container(self, name: str) -> None:
        try:
            self._call(f"remove {name}", self.client.api.remove_container, name, force=True)
        except docker.errors.NotFound:
            pass


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class Container:
    """A started container; stop() removes it."""

    def __init__(self, engine: Engine, container: Any) -> None:
        self.engine = engine
        self._c = container

    @property
    def id(self) -> str:
        return str(self._c.id)

    def host_port(self, port: int) -> int:
        self._c.reload()
        bindings = (self._c.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []
        for b in bindings:
            if b.get("HostIp") in ("127.0.0.1", "", "0.0.0.0"):
                return int(b["HostPort"])
        raise GrockerError(f"container port {port} was not published", "check the image's ports")

    def status(self) -> str:
        self._c.reload()
        return str(self._c.status)

    def exit_code(self) -> int | None:
        self._c.reload()
        state = self._c.attrs.get("State", {})
        return None if state.get("Running") else int(state.get("ExitCode", 0))

    def logs(self) -> str:
        try:
            return self._c.logs().decode("utf-8", "replace")
        except Exception:
            return ""

    def stop(self, timeout: int = 10) -> float:
        """Stop (SIGTERM, then SIGKILL after ``timeout``) and remove; return the seconds it took."""
        start = time.monotonic()
        try:
            self._c.stop(timeout=timeout)
        finally:
            elapsed = time.monotonic() - start
            self.engine._remove(self._c)
        return elapsed


def _new_client(base_url: str | None, timeout: int = 120) -> Any:
    if base_url:
        return docker.DockerClient(base_url=base_url, version="auto", timeout=timeout)
    return docker.from_env(version="auto", timeout=timeout)


_ENGINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)$")


def engine_time(client: Any) -> float:
    """The engine's clock (``docker info``'s SystemTime), in seconds since the epoch.

    Leases are written and judged in the engine's clock, so that the clocks of the machines
    sharing an engine need not agree.
    """
    found = _ENGINE_TIME.match(str(client.info().get("SystemTime", "")))
    if not found:
        return time.time()
    zone = "+00:00" if found.group(2) == "Z" else found.group(2)
    return datetime.datetime.fromisoformat(found.group(1) + zone).timestamp()


class _Lease:
    """This process's lease on one engine: a never-started container renamed at every heartbeat.

    One per process and engine, made by the first container the run creates and removed at
    exit; a killed process leaves it behind, and it expires ``LEASE_TTL`` after the last
    heartbeat (then a reaper removes it with the run's containers).
    """

    _held: dict[tuple[int, str], _Lease] = {}
    _lock = threading.Lock()

    def __init__(self, base_url: str | None, image: str) -> None:
        # Short calls: a hung engine must not hold the process's exit for long.
        self._client = _new_client(base_url, timeout=30)
        self._image = image
        self._id = ""
        self._stop = threading.Event()
        self._create()
        self._thread = threading.Thread(target=self._beat, name="grocker-lease", daemon=True)
        self._thread.start()

    @classmethod
    def hold(cls, base_url: str | None, image: str) -> None:
        # By process too: a forked child has a run ID of its own, and no heartbeat thread.
        key = (os.getpid(), base_url or "")
        with cls._lock:
            if key in cls._held:
                return
            try:
                lease = cls(base_url, image)
            except (docker.errors.DockerException, OSError) as exc:
                raise GrockerError(f"cannot create the lease of this grocker run in the engine: {_short(exc)}",
                                   "check that the engine answers and that the image exists") from exc
            if not cls._held:
                atexit.register(cls.release_all)
            cls._held[key] = lease

    @classmethod
    def release_all(cls) -> None:
        with cls._lock:
            for (pid, _), lease in cls._held.items():
                if pid == os.getpid():
                    lease.release()
            cls._held.clear()

    def _create(self) -> None:
        deadline = engine_time(self._client) + LEASE_TTL
        container = self._client.containers.create(
            self._image, ["true"], entrypoint=["true"], name=lease_name(run_id(), deadline), network_disabled=True,
            labels=lease_labels())
        self._id = str(container.id)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                self._client.api.rename(self._id, lease_name(run_id(), engine_time(self._client) + LEASE_TTL))
            except docker.errors.NotFound:
                # Removed by a reaper after this process could not renew it in time: hold a new one.
                try:
                    self._create()
                except Exception:
                    pass
            except Exception:  # the engine may be away for a moment: try again at the next heartbeat
                pass

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._client.api.remove_container(self._id, force=True)
        except Exception:  # the engine is gone: the lease expires on its own
            pass
        self._client.close()


def _short(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())[:300]


def labels_of(attrs: Mapping[str, Any]) -> dict[str, str]:
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def dumps(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def registry_credentials(host: str) -> dict[str, str] | None:
    """What ``docker login HOST`` stored, resolved the way the docker client does; None when nothing.

    The Docker client config (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``) keeps
    credentials in ``auths``, or behind a credential helper named by ``credHelpers[HOST]`` or
    ``credsStore`` (``docker-credential-NAME get``, the default on desktops and many CI images).
    The answer is ``{"username", "password"}`` or ``{"identitytoken"}`` (an OAuth refresh token).
    """
    import shutil

    import docker.auth

    try:
        config = docker.auth.load_config()
        store = config.get_credential_store(host)
        # The SDK only warns when a helper is missing, then fails with a vaguer message.
        if store and shutil.which(f"docker-credential-{store}") is None:
            raise RegistryError(f"the Docker client config names the credential helper docker-credential-{store} "
                                f"for {host}, and it is not on PATH",
                                "install it, or remove credsStore/credHelpers from config.json and `docker login` "
                                "again")
        entry = config.resolve_authconfig(host) or {}
    except docker.errors.DockerException as exc:
        raise RegistryError(f"reading the credentials of {host} from the Docker client config failed ({_short(exc)})",
                            f"check its credential helper, or `docker login {host}` again") from exc
    found = {k.lower(): str(v) for k, v in entry.items() if v}
    if found.get("identitytoken"):
        return {"identitytoken": found["identitytoken"]}
    if found.get("username") and found.get("password"):
        return {"username": found["username"], "password": found["password"]}
    return None
