"""Containers: run one to completion, start a long-running one, and reap those of dead runs.

Every container grocker creates carries the labels of its run (:func:`~setuptools_grocker.engine.ownership.own_labels`),
and the run's lease (:mod:`setuptools_grocker.engine.lease`) exists before its first container,
so that the reaper of another run can tell a live run's containers from an orphan's.
"""
from __future__ import annotations

import io
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from setuptools_grocker.engine.connection import Connection, docker, engine_time, labels_of, short
from setuptools_grocker.engine.lease import Lease
from setuptools_grocker.engine.ownership import (
    LEASE_LABEL,
    OWNER_LABEL,
    WARM_LABEL,
    Seen,
    lease_deadline,
    orphaned,
    own_labels,
    run_id,
)
from setuptools_grocker.errors import GrockerError

__all__ = ["Container", "Containers", "DaemonFile", "Mount", "RunResult"]


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path into a container (read-only unless said otherwise)."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class DaemonFile:
    """A file written into a long-running container before it starts (or while it runs)."""

    path: str
    data: bytes
    uid: int = 0
    gid: int = 0
    mode: int = 0o644


@dataclass(frozen=True)
class RunResult:
    """How a container run to completion ended: its exit code and its output."""

    exit_code: int
    output: str

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])


#: Seconds an interrupted run waits for its background removals before it exits.
INTERRUPTED_SETTLE = 3.0


class Containers(Connection):
    """The container operations of :class:`~setuptools_grocker.engine.Engine`."""

    #: How many containers this engine object started (the report counts them).
    containers_started = 0
    #: Work running in the background (removals by :meth:`Container.discard`, the reaper by
    #: :meth:`reap_orphans_soon`); :meth:`settle` and :meth:`close` wait for it.
    _background_work: list[threading.Thread] | None = None

    def remove_in_background(self, container: Any) -> None:
        """Force-remove ``container`` (SIGKILL and removal, one call) in a thread; :meth:`close` and
        :meth:`settle` wait for it, so no container outlives the engine object that started it."""
        self._background("grocker-remove", self._remove, container)

    def _background(self, name: str, fn: Any, *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:  # best effort, as the same work in the foreground: the build's outcome stands
                pass

        # A daemon: an interrupted run (Ctrl-C) must not hang at exit on an engine that stopped answering;
        # :meth:`close` waits for it otherwise.
        thread = threading.Thread(target=run, name=name, daemon=True)
        if self._background_work is None:
            self._background_work = []
        self._background_work.append(thread)
        thread.start()

    def hold_lease_soon(self, image: str) -> None:
        """Make this run's lease (see lease.py) in the background now, for a container started soon: its
        start then does not wait for it."""
        Lease.hold_soon(self._base_url, image)

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the work running in the background (removals, the reaper); at most ``timeout`` seconds in
        all (what is still running then is left to the reaper of a later run: its owner is gone)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._background_work:
            thread = self._background_work.pop()
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self, *, interrupted: bool = False) -> None:
        """Wait for the background work, then close the client. ``interrupted`` (Ctrl-C): a few seconds at most,
        so that an engine that stopped answering does not hold the user's interrupt."""
        self.settle(INTERRUPTED_SETTLE if interrupted else None)
        super().close()

    def __exit__(self, *exc: object) -> None:
        exc_type = exc[0] if exc else None
        self.close(interrupted=isinstance(exc_type, type) and not issubclass(exc_type, Exception))

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

    def start(self, image: str, command: list[str], *, env: Mapping[str, str] | None = None,
              mounts: Iterable[Mount] = (), name: str | None = None, network: str | None = None) -> Container:
        """Start a long-running container, nothing published; ``network``: its network mode (``none``: no
        network at all, the quickest to start and to remove)."""
        argv = ["docker", "run", "-d"] + (["--network", network] if network else [])
        self.progress.command(argv + [image] + command)
        container = self._create(image, command, mounts=list(mounts), env=env, name=name, network=network)
        self._call("start a container", container.start)
        self.containers_started += 1
        return Container(self, container)

    def _create(self, image: str, command: list[str], *, mounts: list[Mount], env: Mapping[str, str] | None,
                user: str | None = None, workdir: str | None = None, entrypoint: list[str] | None = None,
                network: str | None = None, ports: Mapping[str, Any] | None = None,
                name: str | None = None, labels: Mapping[str, str] | None = None,
                security_opt: list[str] | None = None, owned: bool = True) -> Any:
        # The lease exists before any container of the run: a reaper that sees the container sees it.
        Lease.hold(self._base_url, image)
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
                labels={**(own_labels() if owned else {}), **(labels or {})},
                name=name,
                detach=True,
                security_opt=security_opt,
            )
        except docker.errors.APIError as exc:
            raise GrockerError(f"cannot create a container from {image}: {short(exc)}",
                               "check that the image exists and the paths mounted are valid") from exc

    def reap_orphans_soon(self) -> None:
        """:meth:`reap_orphans` in the background (a build need not wait for another run's leftovers to go);
        :meth:`settle` and :meth:`close` wait for it."""
        self._background("grocker-reaper", self.reap_orphans)

    def reap_orphans(self) -> int:
        """Remove the containers of grocker runs that are gone (see :mod:`setuptools_grocker.engine.ownership`).

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
                    self.client.api.remove_container(c["Id"], v=True, force=True)
                    removed += 1
                except Exception:  # best effort: gone already, or removed by another reaper
                    pass
        return removed

    def warm(self, name: str, image: str, command: list[str], *, key: str, mounts: list[Mount], user: str,
             labels: Mapping[str, str]) -> tuple[Container, bool] | None:
        """The running warm container ``name`` whose :data:`WARM_LABEL` is ``key`` (True: reused), else a new
        one started (False); None when the engine refuses (a concurrent start of the same name).

        Other warm containers of the same ``labels`` (its scope: another key, a changed configuration) and
        a stopped one of this name are removed first. Started with ``no-new-privileges``, ``command`` as PID 1,
        without the labels of a run (:func:`own_labels`): no reaper, of this version or an older one sharing
        the engine, takes it for a container of a dead run.
        """
        try:
            listed = self._call("list containers", self.client.api.containers, all=True,
                                filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        except docker.errors.APIError:
            return None
        for c in listed:
            names = [n.lstrip("/") for n in c.get("Names") or []]
            if name in names and (c.get("Labels") or {}).get(WARM_LABEL) == key and c.get("State") == "running":
                return Container(self, self.client.containers.get(c["Id"])), True
            self.progress.command(["docker", "rm", "-f", str(c["Id"])[:12]])
            self.remove_container(str(c["Id"]))
        self.remove_container(name)
        self.progress.command(["docker", "run", "-d", "--name", name, "-u", user, image, *command])
        try:
            container = self._create(image, command, mounts=mounts, env=None, user=user, name=name,
                                     labels={**labels, WARM_LABEL: key}, security_opt=["no-new-privileges"],
                                     owned=False)
            self._call("start a container", container.start)
        except (GrockerError, docker.errors.APIError):
            return None
        self.containers_started += 1
        container.reload()
        return Container(self, container), False

    def warm_containers(self) -> list[dict[str, Any]]:
        """Every warm compile container (``docker ps -a`` entries)."""
        try:
            listed = self._call("list containers", self.client.api.containers, all=True,
                                filters={"label": WARM_LABEL})
        except docker.errors.APIError:
            return []
        return list(listed)

    def _remove(self, container: Any) -> None:
        # v=True: with the anonymous volumes the image declares (``volumes``), which ``--rm`` removes
        # on the command line but the API's remove leaves behind.
        try:
            container.remove(v=True, force=True)
        except Exception:  # best effort: the engine may be gone, and the error that matters is already raised
            pass

    def run_daemon(self, name: str, image: str, command: list[str], *, ports: Mapping[int, tuple[str, int]],
                   network: str, labels: Mapping[str, str], more_networks: Iterable[str] = (),
                   files: Iterable[DaemonFile] = ()) -> None:
        """Start a named long-running container that restarts with the engine (not reaped as an orphan).

        ``files`` are written into it before it starts (``docker cp``); ``more_networks`` are joined
        before it starts too. Its log (stdout) is rotated by the engine (3 files of 10 MB).
        """
        argv = ["docker", "run", "-d", "--name", name, "--restart", "unless-stopped", "--network", network,
                "--log-opt", "max-size=10m", "--log-opt", "max-file=3"]
        for port, (host, host_port) in ports.items():
            argv += ["-p", f"{host}:{host_port}:{port}"]
        self.progress.command(argv + [image] + command)
        try:
            container = self._call(
                f"create container {name}", self.client.containers.create, image, command, name=name, detach=True,
                ports={f"{p}/tcp": hp for p, hp in ports.items()}, network=network, labels=dict(labels),
                restart_policy={"Name": "unless-stopped"},
                log_config={"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}})
            for extra in more_networks:
                self.progress.command(["docker", "network", "connect", extra, name])
                self._call(f"connect {name} to {extra}", self.client.api.connect_container_to_network, name, extra)
            for file in files:
                self.put_file(name, file)
            self._call(f"start container {name}", container.start)
        except docker.errors.APIError as exc:
            self.remove_container(name)
            raise GrockerError(f"cannot start {name}: {short(exc)}",
                               "is the port already in use? choose another with --publish") from exc

    def put_file(self, name: str, file: DaemonFile) -> None:
        """Write one file into the container ``name`` (created or running), replacing it atomically."""
        self.progress.command(["docker", "cp", "-", f"{name}:{file.path}"])
        buf = io.BytesIO()
        parent, _, base = file.path.rpartition("/")
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(base)
            info.size, info.mode, info.uid, info.gid = len(file.data), file.mode, file.uid, file.gid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(file.data))
        try:
            ok = self._call(f"write {file.path} in {name}", self.client.api.put_archive, name, parent or "/",
                            buf.getvalue())
        except docker.errors.APIError as exc:
            raise GrockerError(f"cannot write {file.path} in {name}: {short(exc)}",
                               f"check that the container {name} exists (docker ps -a)") from exc
        if not ok:
            raise GrockerError(f"cannot write {file.path} in {name}", f"check that the directory exists in {name}")

    def read_file(self, name: str, path: str) -> bytes | None:
        """The bytes of the regular file ``path`` in the container ``name``; None when there is none."""
        self.progress.command(["docker", "cp", f"{name}:{path}", "-"])
        try:
            stream, _ = self._call(f"copy {path} from {name}", self.client.api.get_archive, name, path)
            data = b"".join(stream)
        except docker.errors.NotFound:
            return None
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            extracted = tar.extractfile(member) if member is not None else None
            return extracted.read() if extracted is not None else None

    def exec_in(self, name: str, command: list[str], *, echo: bool = True) -> RunResult | None:
        """Run ``command`` in the running container ``name`` as its user; None when it is not running."""
        if echo:
            self.progress.command(["docker", "exec", name, *command])
        try:
            created = self.client.api.exec_create(name, command, stdout=True, stderr=True)
            output = self.client.api.exec_start(created["Id"])
            code = self.client.api.exec_inspect(created["Id"]).get("ExitCode")
        except (docker.errors.DockerException, OSError):
            return None
        if code is None:
            return None
        return RunResult(int(code), output.decode("utf-8", "replace") if output else "")

    def signal_container(self, name: str, signal: str) -> None:
        """Send ``signal`` (e.g. ``SIGUSR2``) to the main process of the running container ``name``."""
        self.progress.command(["docker", "kill", "--signal", signal, name])
        try:
            self._call(f"signal {name}", self.client.api.kill, name, signal=signal)
        except docker.errors.APIError as exc:
            raise GrockerError(f"cannot signal {name}: {short(exc)}", f"check that {name} runs (docker ps)") from exc

    def container_logs(self, name: str, *, since: float | None = None) -> str:
        """The log (stdout and stderr) of the container ``name`` since the Unix time ``since``; "" when gone."""
        try:
            kwargs: dict[str, Any] = {"stdout": True, "stderr": True}
            if since is not None:
                kwargs["since"] = int(since)
            data = self._call(f"read the log of {name}", self.client.api.logs, name, **kwargs)
        except docker.errors.NotFound:
            return ""
        return str(data.decode("utf-8", "replace"))

    def image_file(self, image: str, path: str) -> bytes | None:
        """The bytes of the regular file ``path`` of ``image`` (None when there is none), read from a
        container that is created and never started (``docker create`` + ``docker cp``)."""
        self.progress.command(["docker", "create", image, "true"])
        self.progress.command(["docker", "cp", f"CONTAINER:{path}", "-"])
        container = self._create(image, ["true"], mounts=[], env=None, network="none")
        try:
            try:
                stream, _ = self._call(f"copy {path} from {image}", container.get_archive, path)
                data = b"".join(stream)
            except docker.errors.NotFound:
                return None
        finally:
            self._remove(container)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            extracted = tar.extractfile(member) if member is not None else None
            return extracted.read() if extracted is not None else None

    def container_labels(self, name: str) -> dict[str, str] | None:
        try:
            attrs = self._call(f"inspect {name}", self.client.api.inspect_container, name)
        except docker.errors.NotFound:
            return None
        return labels_of(attrs)

    def connect_network(self, name: str, network: str) -> None:
        """Join the running container ``name`` to ``network`` (an attachable overlay); already joined is fine."""
        attrs = self._call(f"inspect {name}", self.client.api.inspect_container, name)
        if network in (attrs.get("NetworkSettings", {}).get("Networks") or {}):
            return
        self.progress.command(["docker", "network", "connect", network, name])
        self._call(f"connect {name} to {network}", self.client.api.connect_container_to_network, name, network)

    def disconnect_network(self, name: str, network: str) -> None:
        """Leave ``network``; a container or network already gone is fine."""
        self.progress.command(["docker", "network", "disconnect", network, name])
        try:
            self._call(f"disconnect {name} from {network}", self.client.api.disconnect_container_from_network,
                       name, network)
        except (docker.errors.NotFound, GrockerError):
            pass

    def remove_container(self, name: str) -> None:
        try:
            self._call(f"remove {name}", self.client.api.remove_container, name, v=True, force=True)
        except docker.errors.NotFound:
            pass



class Container:
    """A started container; stop() removes it."""

    def __init__(self, engine: Containers, container: Any) -> None:
        self.engine = engine
        self._c = container

    @property
    def id(self) -> str:
        return str(self._c.id)

    def status(self) -> str:
        self._c.reload()
        return str(self._c.status)

    def exit_code(self) -> int | None:
        self._c.reload()
        state = self._c.attrs.get("State", {})
        return None if state.get("Running") else int(state.get("ExitCode", 0))

    def exec(self, command: list[str]) -> RunResult | None:
        """Run ``command`` inside this container (as its user, with its environment) to completion;
        None when the container is not running (it exited: the caller runs the command elsewhere)."""
        self.engine.progress.command(["docker", "exec", self.id[:12], *command])
        try:
            result = self._c.exec_run(command, stdout=True, stderr=True)
        except (docker.errors.DockerException, OSError):  # not running any more, or the engine hung up
            return None
        if result.exit_code is None:
            return None
        output = result.output.decode("utf-8", "replace") if result.output else ""
        for line in output.splitlines():
            self.engine.progress.output(line)
        return RunResult(exit_code=int(result.exit_code), output=output)

    def exec_streamed(self, command: list[str], *, env: Mapping[str, str], user: str, workdir: str | None = None,
                      secret_env: Iterable[str] = (), stream: bool = True) -> RunResult | None:
        """``docker exec`` with its own environment and user, its output streamed like :meth:`Containers.run`'s;
        None when the command could not be started (the container stopped: run it elsewhere). An engine
        error once the command started raises: it may have run in part."""
        secret = set(secret_env)
        argv = ["docker", "exec", "-u", user]
        for k, v in env.items():
            argv += ["-e", f"{k}=***" if k in secret else f"{k}={v}"]
        self.engine.progress.command(argv + [self.id[:12], *command])
        api = self.engine.client.api
        try:
            exec_id = api.exec_create(self.id, command, environment=dict(env), user=user, workdir=workdir)["Id"]
            output = api.exec_start(exec_id, stream=True)
        except (docker.errors.DockerException, OSError):
            return None
        lines: list[str] = []
        try:
            for raw in output:
                text = raw.decode("utf-8", "replace")
                lines.append(text)
                if stream:
                    for line in text.splitlines():
                        self.engine.progress.output(line)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except (docker.errors.DockerException, OSError) as exc:
            raise GrockerError(f"the engine lost a command in the warm container {self.id[:12]}: {short(exc)}",
                               "build again") from exc
        return RunResult(int(code) if code is not None else 1, "".join(lines))

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

    def discard(self) -> None:
        """Kill and remove, in the background (:meth:`Containers.remove_in_background`): for a container
        whose graceful stop tells nothing (the smoke test's server, once probed)."""
        self.engine.progress.command(["docker", "rm", "-f", self.id[:12]])
        self.engine.remove_in_background(self._c)
