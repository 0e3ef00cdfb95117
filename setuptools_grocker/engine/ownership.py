"""Which grocker run owns a container, and whether that run is still alive.

A build killed with SIGKILL cannot remove its containers; the next build removes them (the
*reaper*). Deciding that a run is dead must not depend on process IDs alone: a grocker in
another PID namespace (a containerised CI worker) or on another machine sharing the engine
(a cloned VM with the same host name) has process IDs that mean nothing here. So:

* every grocker process has a random **run ID**; its containers carry it
  (``io.grocker.run``) with the identity of the process (``io.grocker.process``: kernel
  boot ID, PID namespace, PID and the process's start time);
* the run holds a **lease in the engine**, visible to every client of that engine: a
  container that is created but never started, labelled ``io.grocker.lease=RUN``, whose
  *name* carries the lease's deadline in the engine's clock (names are the one mutable
  property of a container). A thread of the run renames it every ``HEARTBEAT`` seconds;
* a run is dead when its process is on this kernel, in this PID namespace, and no longer
  exists (or its PID was reused: the start time differs), decided at once; otherwise when
  its lease is missing or its deadline has passed (``LEASE_TTL`` after the last heartbeat).

This module holds the rules (no engine calls); :mod:`setuptools_grocker.engine` applies them.
"""
from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping

OWNER_LABEL = "io.grocker.owner"
#: host:pid of the creating process: for people reading ``docker ps``, never to decide ownership.
PID_LABEL = "io.grocker.pid"
RUN_LABEL = "io.grocker.run"
PROCESS_LABEL = "io.grocker.process"
LEASE_LABEL = "io.grocker.lease"
#: A warm compile container (pipeline/warm.py): its key; never reaped as an orphan (it outlives its run on
#: purpose, ends itself when idle, and ``grocker gc`` removes it). It carries no run labels (RUN_LABEL,
#: PROCESS_LABEL, PID_LABEL; OWNER_LABEL comes from its image), so that older reapers sharing the engine
#: spare it too (to them, a container without a run or PID label is not an orphan).
WARM_LABEL = "io.grocker.warm"
#: The trust scope (a hash of its directory) of a warm compile container.
WARM_SCOPE_LABEL = "io.grocker.warm-scope"
#: A workspace's shared library test container (pipeline/warm.py's ``SharedContainers``): the start of its key,
#: so that containers of one scope with different keys (libraries with another installer) do not replace
#: each other while in use.
LEVEL_LABEL = "io.grocker.level"
#: Seconds between two renewals of a run's lease, and how long a lease outlives its last renewal.
HEARTBEAT = 30.0
LEASE_TTL = 600.0
LEASE_PREFIX = "grocker-lease-"
_LEASE_NAME = re.compile(r"^/?grocker-lease-([0-9a-f]{32})-(\d+)$")

_run: tuple[int, str] | None = None


def run_id() -> str:
    """The run ID of this process (a fresh one in a forked child)."""
    global _run
    if _run is None or _run[0] != os.getpid():
        _run = (os.getpid(), uuid.uuid4().hex)
    return _run[1]


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _namespace() -> tuple[str, str] | None:
    """(kernel boot ID, PID namespace) of this process; None where /proc does not tell."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return (boot, pidns) if boot else None


def _start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def process_identity(pid: int | None = None) -> str:
    """``BOOT/PIDNS/PID/START`` of a process of this namespace ("" where /proc is missing)."""
    pid = os.getpid() if pid is None else pid
    ns = _namespace()
    start = _start_time(pid)
    if ns is None or start is None:
        return ""
    return f"{ns[0]}/{ns[1]}/{pid}/{start}"


def local_process_alive(identity: str) -> bool | None:
    """Is the process of ``identity`` alive? None when it is not of this kernel and PID namespace."""
    parts = identity.split("/")
    ns = _namespace()
    if len(parts) != 4 or ns is None or (parts[0], parts[1]) != ns or not parts[2].isdigit():
        return None
    return _start_time(int(parts[2])) == parts[3]


def own_labels() -> dict[str, str]:
    """The labels of every container this process creates."""
    return {
        OWNER_LABEL: "setuptools-grocker",
        RUN_LABEL: run_id(),
        PROCESS_LABEL: process_identity(),
        PID_LABEL: f"{socket.gethostname()}:{os.getpid()}",
    }


def lease_labels() -> dict[str, str]:
    """The labels of this process's lease container (no run label: it does no work of the run)."""
    labels = own_labels()
    labels[LEASE_LABEL] = labels.pop(RUN_LABEL)
    return labels


def lease_name(run: str, deadline: float) -> str:
    return f"{LEASE_PREFIX}{run}-{int(deadline)}"


def lease_deadline(name: str) -> int | None:
    """The deadline written in a lease container's name, or None when it is not a lease name."""
    found = _LEASE_NAME.match(name)
    return int(found.group(2)) if found else None


@dataclass(frozen=True)
class Seen:
    """One container as the reaper sees it."""

    name: str
    labels: Mapping[str, str]
    status: str


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def orphaned(container: Seen, leases: Mapping[str, int], now: float, me: str, *,
             hostname: str | None = None, legacy_alive: Callable[[int], bool] = pid_alive) -> bool:
    """Should the reaper remove ``container``?

    ``leases`` maps the run IDs that hold a lease to its deadline; ``now`` is the engine's
    time. Containers of older grocker versions carry only ``host:pid``: they are removed only
    when that process is gone *and* the container is not running (a running one may belong
    to a live process of another PID namespace or machine).
    """
    labels = container.labels
    if WARM_LABEL in labels:
        return False
    lease_run = labels.get(LEASE_LABEL)
    run = lease_run or labels.get(RUN_LABEL)
    if run is None:
        owner_host, _, pid = labels.get(PID_LABEL, "").rpartition(":")
        host = hostname if hostname is not None else socket.gethostname()
        if owner_host != host or not pid.isdigit() or container.status == "running":
            return False
        return not legacy_alive(int(pid))
    if run == me:
        return False
    alive = local_process_alive(labels.get(PROCESS_LABEL, ""))
    if alive is not None:
        return not alive
    deadline = lease_deadline(container.name) if lease_run else leases.get(run)
    return deadline is None or deadline <= now
