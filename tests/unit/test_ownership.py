"""The reaper's rules: who owns a container and whether that owner is alive (no engine here)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from setuptools_grocker.engine.ownership import (
    LEASE_LABEL,
    OWNER_LABEL,
    PID_LABEL,
    PROCESS_LABEL,
    RUN_LABEL,
    Seen,
    lease_deadline,
    lease_labels,
    lease_name,
    local_process_alive,
    orphaned,
    own_labels,
    process_identity,
    run_id,
)

ME = run_id()
OTHER = "0123456789abcdef0123456789abcdef"
HOST = socket.gethostname()
NOW = 2_000_000_000.0


def dead_identity() -> tuple[str, int]:
    """The identity of a process of this namespace that has exited, and its pid."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    identity = process_identity(proc.pid)
    assert local_process_alive(identity) is True
    proc.communicate(b"")
    return identity, proc.pid


def work(run: str, *, identity: str = "", pid_label: str | None = None, status: str = "running") -> Seen:
    labels = {OWNER_LABEL: "setuptools-grocker", RUN_LABEL: run, PROCESS_LABEL: identity}
    if pid_label is not None:
        labels[PID_LABEL] = pid_label
    return Seen("some_name", labels, status)


def test_run_id_and_labels_of_this_process() -> None:
    assert run_id() == ME and len(ME) == 32 and int(ME, 16) >= 0
    labels = own_labels()
    assert labels[RUN_LABEL] == ME and labels[PID_LABEL].endswith(f":{os.getpid()}")
    assert local_process_alive(labels[PROCESS_LABEL]) is True
    lease = lease_labels()
    assert lease[LEASE_LABEL] == ME and RUN_LABEL not in lease


def test_a_dead_process_of_this_namespace_is_dead_even_when_its_pid_is_reused() -> None:
    identity, _ = dead_identity()
    assert local_process_alive(identity) is False
    # This process's pid with another start time: as when a dead run's pid is reused.
    boot, ns, pid, start = process_identity().split("/")
    assert local_process_alive(f"{boot}/{ns}/{pid}/{int(start) + 1}") is False


def test_a_process_of_another_namespace_or_machine_is_not_judged_by_pid() -> None:
    boot, ns, pid, start = process_identity().split("/")
    assert local_process_alive(f"{boot}/pid:[1]/{pid}/{start}") is None
    assert local_process_alive(f"00000000-0000-0000-0000-000000000000/{ns}/{pid}/{start}") is None
    assert local_process_alive("") is None
    assert local_process_alive("garbage") is None


def test_lease_names_carry_the_deadline() -> None:
    name = lease_name(OTHER, NOW + 600.7)
    assert lease_deadline(name) == int(NOW + 600)
    assert lease_deadline("/" + name) == int(NOW + 600)
    assert lease_deadline("grocker-lease-nothex-12") is None
    assert lease_deadline("my_container") is None


def test_the_containers_of_this_run_are_never_orphans() -> None:
    assert not orphaned(work(ME, status="exited"), {}, NOW, ME)


def test_a_live_run_elsewhere_with_a_fresh_lease_stays_whatever_its_pid_label_says() -> None:
    # Another PID namespace or a cloned machine with the same host name: its pid is dead *here*.
    _, dead_pid = dead_identity()
    elsewhere = f"00000000-0000-0000-0000-000000000000/pid:[1]/{dead_pid}/1"
    container = work(OTHER, identity=elsewhere, pid_label=f"{HOST}:{dead_pid}")
    assert not orphaned(container, {OTHER: int(NOW) + 300}, NOW, ME)
    # The same run once its lease has expired, or when it holds none, is gone.
    assert orphaned(container, {OTHER: int(NOW) - 1}, NOW, ME)
    assert orphaned(container, {}, NOW, ME)


def test_a_dead_run_of_this_namespace_is_reaped_at_once_and_a_live_one_never() -> None:
    identity, _ = dead_identity()
    assert orphaned(work(OTHER, identity=identity), {OTHER: int(NOW) + 300}, NOW, ME)
    alive = process_identity()
    assert not orphaned(work(OTHER, identity=alive), {}, NOW, ME)


def test_lease_containers_follow_their_run() -> None:
    elsewhere = "00000000-0000-0000-0000-000000000000/pid:[1]/5/1"
    labels = {OWNER_LABEL: "setuptools-grocker", LEASE_LABEL: OTHER, PROCESS_LABEL: elsewhere}
    assert not orphaned(Seen(lease_name(OTHER, NOW + 10), labels, "created"), {}, NOW, ME)
    assert orphaned(Seen(lease_name(OTHER, NOW - 10), labels, "created"), {}, NOW, ME)
    mine = {**labels, LEASE_LABEL: ME}
    assert not orphaned(Seen(lease_name(ME, NOW - 10), mine, "created"), {}, NOW, ME)


def test_containers_of_older_versions_are_reaped_only_when_stopped_and_their_pid_is_gone() -> None:
    def old(pid_label: str, status: str) -> Seen:
        return Seen("x", {OWNER_LABEL: "setuptools-grocker", PID_LABEL: pid_label}, status)

    _, dead_pid = dead_identity()
    assert orphaned(old(f"{HOST}:{dead_pid}", "exited"), {}, NOW, ME)
    assert not orphaned(old(f"{HOST}:{dead_pid}", "running"), {}, NOW, ME)
    assert not orphaned(old(f"other-host:{dead_pid}", "exited"), {}, NOW, ME)
    assert not orphaned(old(f"{HOST}:1", "exited"), {}, NOW, ME)
    # A container of an image built by grocker, run by someone else: no grocker labels of a run.
    assert not orphaned(Seen("prod", {OWNER_LABEL: "setuptools-grocker"}, "exited"), {}, NOW, ME)
