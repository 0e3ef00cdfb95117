"""A second Docker Engine on this machine, standing for a second machine of a build farm.

:class:`SecondEngine` starts a ``dockerd`` with its own data root, exec root (hence its own
containerd), pid file, unix socket, config file and bridge, and stops it again, leaving the
machine as it found it. It never touches the main engine's state: ``--iptables=false`` keeps it
off the chains the main engine (and its Swarm) manages, and the few rules its bridge needs (NAT
out of its subnet, FORWARD in and out of its bridge) are added here and removed on stop.

The integration suite starts one per session (the ``engine_b`` fixture of
tests/integration/conftest.py); ``python -m tests.second_engine`` starts one by hand and stops
it on Ctrl-C.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

#: Subnets tried for the bridge, one /24 each, skipping any the host already routes.
SUBNETS = list(ipaddress.ip_network("10.199.0.0/16").subnets(new_prefix=24))


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def _routed_networks() -> list[ipaddress.IPv4Network]:
    out = _run("ip", "-4", "-o", "route", "show", "table", "all").stdout
    nets = []
    for line in out.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest in ("default", "local", "broadcast", "unreachable"):
            dest = line.split()[1]
        try:
            nets.append(ipaddress.ip_network(dest, strict=False))
        except ValueError:
            continue
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def _free_subnet(tag: str) -> ipaddress.IPv4Network:
    """A /24 no route covers; the search starts at one derived from ``tag``, so that two sessions
    starting at the same moment are unlikely to pick the same one."""
    used = _routed_networks()
    start = int(tag, 16) % len(SUBNETS)
    for net in SUBNETS[start:] + SUBNETS[:start]:
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free /24 in 10.199.0.0/16 for the second engine's bridge")


@dataclass
class SecondEngine:
    """One extra dockerd; use :meth:`start` and :meth:`stop` (or ``with``)."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    state: Path = field(init=False)
    exec_root: Path = field(init=False)
    bridge: str = field(init=False)
    subnet: ipaddress.IPv4Network | None = None
    proc: subprocess.Popen[bytes] | None = None
    _rules: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = Path("/var/tmp") / f"grocker-engine-{self.tag}"
        # Short: containerd's socket lives under it and unix socket paths are limited to 107 bytes.
        self.exec_root = Path("/run") / f"gke-{self.tag}"
        self.bridge = f"gkb{self.tag}"

    @property
    def socket(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def url(self) -> str:
        """The engine's address, as for ``DOCKER_HOST``."""
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.state / "dockerd.log"

    def env(self) -> dict[str, str]:
        """The environment of a command that should talk to this engine."""
        return {**os.environ, "DOCKER_HOST": self.url}

    def __enter__(self) -> SecondEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            raise RuntimeError("a second engine needs dockerd and root (scripts/setup.sh installs it)")
        self.state.mkdir(parents=True)
        self.exec_root.mkdir(parents=True)
        self.subnet = _free_subnet(self.tag)
        gateway = f"{next(self.subnet.hosts())}/{self.subnet.prefixlen}"
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", gateway, "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for table, chain, *spec in self._rules_needed():
                # FORWARD: ahead of the main engine's rules (its policy there is DROP).
                _run("iptables", "-t", table, "-I" if chain == "FORWARD" else "-A", chain, *spec)
                self._rules.append([table, chain, *spec])
            config = self.state / "daemon.json"
            config.write_text(json.dumps({}))  # not the host's /etc/docker/daemon.json
            argv = [dockerd, "--config-file", str(config), "--data-root", str(self.state / "data"),
                    "--exec-root", str(self.exec_root), "--pidfile", str(self.state / "dockerd.pid"),
                    "--host", self.url, "--bridge", self.bridge, "--iptables=false", "--ip-masq=false",
                    "--containerd-namespace", f"gke-{self.tag}",
                    "--containerd-plugins-namespace", f"gke-{self.tag}-plugins"]
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    def _rules_needed(self) -> list[list[str]]:
        """``[table, chain, match...]``: NAT out of the subnet; forwarding from the bridge, and answers to it."""
        b, s = self.bridge, str(self.subnet)
        return [
            ["nat", "POSTROUTING", "-s", s, "!", "-o", b, "-j", "MASQUERADE"],
            ["filter", "FORWARD", "-i", b, "-j", "ACCEPT"],
            ["filter", "FORWARD", "-o", b, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ]

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the second dockerd exited ({self.proc.returncode}):\n{self._log_tail()}")
            if self.socket.exists() and _run("docker", "-H", self.url, "version", "--format",
                                             "{{.Server.Version}}", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"the second dockerd did not answer within {timeout:.0f} s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the daemon (its containers with it), remove its rules, bridge and directories."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self.proc = None
        for table, chain, *spec in reversed(self._rules):
            _run("iptables", "-t", table, "-D", chain, *spec, check=False)
        self._rules.clear()
        _run("ip", "link", "del", self.bridge, check=False)
        for root in (self.exec_root, self.state):
            self._unmount_under(root)
            shutil.rmtree(root, ignore_errors=True)

    @staticmethod
    def _unmount_under(root: Path) -> None:
        """Unmount what the daemon left mounted under ``root`` (after a crash), deepest first."""
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m == str(root) or m.startswith(f"{root}/")), reverse=True):
            _run("umount", "-l", point, check=False)


if __name__ == "__main__":
    with SecondEngine() as engine:
        print(f"export DOCKER_HOST={engine.url}   # Ctrl-C stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
