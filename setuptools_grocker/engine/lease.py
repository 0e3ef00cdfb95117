"""The lease of this grocker run in the engine (the rules are in :mod:`setuptools_grocker.engine.ownership`).

The first container a run creates makes the lease (see ``Containers._create``); a daemon
thread renews it, and it is removed at exit. A reaper of another run judges the run alive
as long as the lease has not expired.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import threading

from setuptools_grocker.engine.connection import docker, engine_time, new_client, short
from setuptools_grocker.engine.ownership import HEARTBEAT, LEASE_TTL, lease_labels, lease_name, run_id
from setuptools_grocker.errors import GrockerError

__all__ = ["Lease"]


class Lease:
    """This process's lease on one engine: a never-started container renamed at every heartbeat.

    One per process and engine, made by the first container the run creates and removed at
    exit; a killed process leaves it behind, and it expires ``LEASE_TTL`` after the last
    heartbeat (then a reaper removes it with the run's containers).
    """

    _held: dict[tuple[int, str], Lease] = {}
    _lock = threading.Lock()

    def __init__(self, base_url: str | None, image: str) -> None:
        # Short calls: a hung engine must not hold the process's exit for long.
        self._client = new_client(base_url, timeout=30)
        self._image = image
        self._id = ""
        self._stop = threading.Event()
        try:
            self._create()
        except BaseException:  # no lease: its client is closed here, not left to the garbage collector
            self._client.close()
            raise
        self._thread = threading.Thread(target=self._beat, name="grocker-lease", daemon=True)
        self._thread.start()

    #: Leases being made in the background (:meth:`hold_soon`), by the same key as ``_held``.
    _pending: dict[tuple[int, str], threading.Thread] = {}

    @classmethod
    def hold_soon(cls, base_url: str | None, image: str) -> None:
        """Start making the lease in a thread (a build that will start a container soon): :meth:`hold`
        waits for it, and makes it itself, with its error, if the thread could not."""
        key = (os.getpid(), base_url or "")
        with cls._lock:
            if key in cls._held or (key in cls._pending and cls._pending[key].is_alive()):
                return

            def make() -> None:
                with contextlib.suppress(GrockerError):  # hold() tries again and reports it
                    cls.hold(base_url, image, wait=False)

            # A daemon: an interrupted run must not hang at exit on an engine that stopped answering. A lease
            # it made is removed by ``release_all``; one made as the interpreter stops expires (LEASE_TTL).
            thread = threading.Thread(target=make, name="grocker-lease-start", daemon=True)
            cls._pending[key] = thread
        thread.start()

    @classmethod
    def hold(cls, base_url: str | None, image: str, *, wait: bool = True) -> None:
        # By process too: a forked child has a run ID of its own, and no heartbeat thread.
        key = (os.getpid(), base_url or "")
        pending = cls._pending.get(key) if wait else None
        if pending is not None:
            pending.join()
            cls._pending.pop(key, None)
        with cls._lock:
            if key in cls._held:
                return
            try:
                lease = cls(base_url, image)
            except (docker.errors.DockerException, OSError) as exc:
                raise GrockerError(f"cannot create the lease of this grocker run in the engine: {short(exc)}",
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
            self._client.api.remove_container(self._id, v=True, force=True)
        except Exception:  # the engine is gone: the lease expires on its own
            pass
        self._client.close()
