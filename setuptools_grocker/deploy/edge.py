"""The edge of a deployed service: HAProxy (Debian's package) in a container on the service's overlay network.

Swarm's routing mesh publishes on every interface and needs IPVS, so ``--publish HOST:PORT:TARGET`` starts
``NAME-edge``, a plain container published on HOST (127.0.0.1 by default), run from ``grocker/edge:KEY``: the
base image plus ``haproxy`` and ``socat``, built by grocker and keyed by the base's ID and this recipe. HAProxy
runs as the package's ``haproxy`` user, in master-worker mode under tini; its configuration is root's and
read-only to it.

* **Servers.** Each route is an HTTP frontend whose backend holds, per *pool* (a Swarm service), a
  ``server-template SERVICE- 1..SLOTS tasks.SERVICE:TARGET``: Swarm's DNS inside the overlay (127.0.0.11) lists
  the service's running tasks, re-resolved every second, so a scaled service is seen without a restart.
* **Retries.** A connection that fails (a task killed or refusing) is retried on another server
  (``retries 3``, ``option redispatch 1``); so is a GET or HEAD whose connection the server closed without an
  answer (a task stopping with connections in its backlog); any other request that reached a task is never
  sent twice.
* **Weights.** ``balance roundrobin`` honours weights changed at run time. :meth:`Edge.set_weight` sets the
  weight of every slot of a pool through the runtime API (no reload, no dropped connection) and writes it into
  the configuration, so a reload or a restart of the edge starts from the weights last set; :meth:`Edge.reload`
  re-asserts them anyway. A pool's share of the traffic is its weight times its servers that are up.
* **Counters.** :meth:`Edge.servers` reads ``show stat`` (requests, 5xx, mean times, state) per server; latency
  percentiles come from the request log (:meth:`Edge.requests`, one line per request on the edge's stdout, with
  HAProxy's timers), since mean times are not percentiles.

The runtime API is a unix socket inside the container (``/run/grocker-edge/admin.sock``, mode 600, the
``haproxy`` user's), reached with ``docker exec`` through the engine: the same access as the rest of
``grocker deploy`` (the Docker API), nothing published on the host, and it works with a remote engine. A socket
bind-mounted to the host would need a host directory, a uid that matches, and would give the edge's admin level
to every local user that can open it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from setuptools_grocker.engine import OWNER_LABEL, DaemonFile, Engine
from setuptools_grocker.errors import DeployError
from setuptools_grocker.progress import Progress

if TYPE_CHECKING:
    from setuptools_grocker.deploy.deployer import Publish

EDGE_LABEL = "io.grocker.edge"
#: Bump when the recipe or the configuration's shape changes, so that older edges are replaced.
EDGE_RECIPE_VERSION = "1"
CONFIG_PATH = "/etc/grocker-edge/haproxy.cfg"
SOCKET = "/run/grocker-edge/admin.sock"
#: The servers' state (addresses, states) saved just before a reload, loaded by the new worker.
SERVER_STATE = "/run/grocker-edge/servers.state"
#: Server slots per pool and backend: the most tasks of one service the edge sends traffic to.
SLOTS = 32
#: Inside the container, route i listens on FIRST_PORT + i (above 1024: the edge is not root).
FIRST_PORT = 10000
DEFAULT_WEIGHT = 100
MAX_WEIGHT = 256
LOG_TAG = "grocker-edge"

EDGE_DOCKERFILE = """\
FROM {base}
RUN set -eu; \\
    export DEBIAN_FRONTEND=noninteractive; \\
    apt-get update -q; \\
    apt-get install -y -q --no-install-recommends haproxy socat; \\
    if ! command -v tini >/dev/null 2>&1; then apt-get install -y -q --no-install-recommends tini; fi; \\
    apt-get clean; \\
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \\
    install -d -o root -g root -m 0755 /etc/grocker-edge; \\
    install -d -o haproxy -g haproxy -m 0700 /run/grocker-edge; \\
    haproxy -v
USER haproxy
HEALTHCHECK NONE
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/usr/sbin/haproxy", "-W", "-db", "-f", "{config}"]
"""

_SERVER = re.compile(r"^(?P<service>.+)-(?P<slot>\d+)$")


@dataclass(frozen=True)
class Pool:
    """A Swarm service whose tasks the edge sends traffic to, and the weight of each of its servers."""

    service: str
    weight: int = DEFAULT_WEIGHT


@dataclass(frozen=True)
class ServerStats:
    """One server (a slot of a pool) of one backend, from ``show stat``."""

    backend: str
    server: str
    service: str
    address: str
    status: str
    weight: int
    requests: int
    http_5xx: int
    #: HAProxy's means over the last 1024 requests, in ms (not percentiles: see :meth:`Edge.requests`).
    mean_response_ms: int
    mean_total_ms: int


@dataclass(frozen=True)
class LoggedRequest:
    """One line of the edge's request log."""

    at: float
    backend: str
    server: str
    service: str
    status: int
    #: Total active time of the request (``%Ta``) and the server's response time (``%Tr``, -1: none), in ms.
    total_ms: int
    response_ms: int
    retries: int
    termination: str


def edge_name(name: str) -> str:
    return f"{name}-edge"


def network_of(service: str) -> str:
    """The overlay network of a deployed service (made by the deployer)."""
    return f"grocker-{service}"


def _backend(port: int) -> str:
    return f"to-{port}"


def render_config(name: str, routes: Sequence[Publish], pools: Sequence[Pool]) -> str:
    """HAProxy's configuration of the edge of ``name``; its first line records the pools and their weights."""
    state = {"name": name, "pools": [[p.service, p.weight] for p in pools]}
    lines = [
        f"# {LOG_TAG} {json.dumps(state, sort_keys=True)}",
        "global",
        "    log stdout format raw local0",
        f"    stats socket {SOCKET} mode 600 level admin expose-fd listeners",
        f"    server-state-file {SERVER_STATE}",
        "    stats timeout 30s",
        "    hard-stop-after 5m",  # after a reload, requests in flight on the old worker get as long as timeout server
        "",
        "resolvers swarm",
        "    nameserver docker 127.0.0.11:53",
        "    accepted_payload_size 8192",
        "    resolve_retries 3",
        "    timeout resolve 1s",
        "    timeout retry 1s",
        *(f"    hold {what} 1s" for what in ("valid", "other", "refused", "nx", "timeout", "obsolete")),
        "",
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{LOG_TAG} %Ts.%ms %b %s %ST %Ta %Tr %rc %tsc"',
        "    option redispatch 1",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "    timeout connect 2s",
        "    timeout client 5m",
        "    timeout server 5m",
        "    timeout http-request 30s",
        # A new worker (a reload) starts from the addresses the old one had resolved (the state file), so that
        # it does not answer 503 until its first DNS answer. A new pool starts with none (it joins at weight 0):
        # not libc, which would wait on the host's resolvers for a service that has no task.
        "    load-server-state-from-file global",
        "    default-server init-addr last,none resolvers swarm resolve-prefer ipv4 check inter 1s fall 2 rise 1",
    ]
    for port in sorted({r.port for r in routes}):
        # A request the server closed without answering is sent again only when it is safe to (GET, HEAD).
        lines += ["", f"backend {_backend(port)}", "    balance roundrobin",
                  "    http-request disable-l7-retry unless METH_GET"]
        lines += [f"    server-template {p.service}- 1-{SLOTS} tasks.{p.service}:{port} weight {p.weight}"
                  for p in pools]
    for i, route in enumerate(routes):
        lines += ["", f"frontend in-{i}", f"    bind :{FIRST_PORT + i}", f"    default_backend {_backend(route.port)}"]
    return "\n".join(lines) + "\n"


def parse_state(config: str) -> list[Pool]:
    """The pools and weights recorded on the first line of a configuration made by :func:`render_config`."""
    first = config.split("\n", 1)[0]
    if not first.startswith(f"# {LOG_TAG} "):
        return []
    state = json.loads(first[len(f"# {LOG_TAG} "):])
    return [Pool(service, int(weight)) for service, weight in state["pools"]]


def ensure_edge_image(engine: Engine, base_image: str, progress: Progress) -> str:
    """``grocker/edge:KEY``, built from ``base_image`` when absent; KEY hashes the base's ID and the recipe."""
    base = engine.ensure_image(base_image)
    recipe = EDGE_DOCKERFILE.format(base=base_image, config=CONFIG_PATH)
    key = hashlib.sha256(json.dumps(["edge", EDGE_RECIPE_VERSION, base["Id"], recipe]).encode()).hexdigest()[:16]
    tag = f"grocker/edge:{key}"
    if not engine.image_id(tag):
        with progress.stage(f"edge image {tag}"), tempfile.TemporaryDirectory(prefix="grocker-edge-") as tmp:
            (Path(tmp) / "Dockerfile").write_text(recipe)
            engine.build(Path(tmp), tag=tag, labels={OWNER_LABEL: "setuptools-grocker"}, what="edge image")
    return tag


class Edge:
    """The edge container of the service ``name``: start it, read its counters and log, change its weights."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.container = edge_name(name)

    # -- its container ----------------------------------------------------------------------
    def ensure(self, routes: Sequence[Publish], pools: Sequence[Pool], *, base_image: str,
               labels: dict[str, str], progress: Progress) -> bool:
        """Run the edge for ``routes`` to ``pools``; kept as it is (weights included) when it already serves
        the same routes and services from the same image. The pools' weights apply to a new edge only: change
        a running edge's with :meth:`set_weight`. Returns whether it was (re)created."""
        if not routes:
            self.engine.remove_container(self.container)
            return False
        image = ensure_edge_image(self.engine, base_image, progress)
        wanted = json.dumps({"routes": sorted(str(r) for r in routes), "services": [p.service for p in pools],
                             "image": image})
        present = self.engine.container_labels(self.container)
        if present is not None and present.get(EDGE_LABEL) == wanted:
            return False
        if present is not None and _same_routes(present.get(EDGE_LABEL), routes, image):
            # Only the pools may differ (a canary added or removed): a reload, not a new container.
            if [p.service for p in self.pools()] != [p.service for p in pools]:
                self.set_pools(pools)
            return False
        self.engine.remove_container(self.container)
        networks = [network_of(p.service) for p in pools]
        self.engine.run_daemon(
            self.container, image, [], ports={FIRST_PORT + i: (r.host, r.host_port) for i, r in enumerate(routes)},
            network=networks[0], more_networks=networks[1:], labels={**labels, EDGE_LABEL: wanted},
            files=[DaemonFile(CONFIG_PATH, render_config(self.name, routes, pools).encode())])
        return True

    def pools(self) -> list[Pool]:
        """The pools the running edge sends traffic to, and their weights."""
        return parse_state(self.config())

    def set_pools(self, pools: Sequence[Pool]) -> None:
        """Send the edge's routes to ``pools`` instead, without a new container: join their networks, write the
        configuration (a pool already there keeps its weight), reload (connections in flight finish on the old
        worker), then leave the networks of the pools removed."""
        label = json.loads((self.engine.container_labels(self.container) or {}).get(EDGE_LABEL) or "{}")
        if not label.get("routes"):
            raise DeployError(f"{self.container} is not an edge made by this grocker",
                              f"deploy {self.name} again with --publish")
        from setuptools_grocker.deploy.deployer import Publish

        routes = [Publish.parse(r) for r in label["routes"]]
        current = {p.service: p.weight for p in self.pools()}
        pools = [Pool(p.service, current.get(p.service, p.weight)) for p in pools]
        for p in pools:
            self.engine.connect_network(self.container, network_of(p.service))
        self.engine.put_file(self.container, DaemonFile(CONFIG_PATH, render_config(self.name, routes, pools).encode()))
        self.reload()
        for service in set(current) - {p.service for p in pools}:
            if network_of(service) != network_of(pools[0].service):
                self.engine.disconnect_network(self.container, network_of(service))

    def config(self) -> str:
        data = self.engine.read_file(self.container, CONFIG_PATH)
        if data is None:
            raise DeployError(f"{self.container} is not an edge made by this grocker",
                              f"deploy {self.name} again with --publish")
        return data.decode()

    # -- the runtime API --------------------------------------------------------------------
    def api(self, *commands: str) -> str:
        """Send ``commands`` (one line, ``;``-separated) to HAProxy's runtime API; its answer."""
        line = "; ".join(commands)
        if "\n" in line:
            raise DeployError("a runtime API command holds a newline", "send one command per argument")
        script = f'printf "%s\\n" "$1" | socat -t 30 - UNIX-CONNECT:{SOCKET}'
        result = self.engine.exec_in(self.container, ["sh", "-c", script, "edge-api", line], echo=False)
        if result is None or result.exit_code != 0:
            raise DeployError(f"the runtime API of {self.container} does not answer "
                              f"({result.output.strip() if result else 'not running'})",
                              f"see `docker logs {self.container}`, or deploy {self.name} again with --publish")
        return result.output

    def pid(self) -> int:
        """The process ID of the HAProxy worker: a reload changes it, a weight change does not."""
        for line in self.api("show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        raise DeployError(f"{self.container} did not give its process ID", f"see `docker logs {self.container}`")

    def servers(self) -> list[ServerStats]:
        """Every server slot that has an address (a task), with its counters, per backend."""
        text = self.api("show stat -1 4 -1").lstrip("# ")
        stats = []
        for row in csv.DictReader(io.StringIO(text)):
            match = _SERVER.match(row.get("svname") or "")
            addr = row.get("addr") or ""
            if not match or not addr or row.get("status") == "MAINT (resolution)":
                continue
            stats.append(ServerStats(
                backend=row["pxname"], server=row["svname"], service=match["service"], address=addr,
                status=row["status"], weight=_int(row.get("weight")), requests=_int(row.get("stot")),
                http_5xx=_int(row.get("hrsp_5xx")), mean_response_ms=_int(row.get("rtime")),
                mean_total_ms=_int(row.get("ttime"))))
        return stats

    def weights(self) -> dict[str, int]:
        """The weight of each pool, as recorded in the configuration (what a reload starts from)."""
        return {p.service: p.weight for p in parse_state(self.config())}

    def set_weight(self, service: str, weight: int) -> None:
        """Set the weight of every server of ``service``'s pool, at run time (no reload) and in the configuration."""
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise DeployError(f"weight {weight!r} is not a number from 0 to {MAX_WEIGHT}", "give e.g. 0, 10 or 100")
        config = self.config()
        pools = parse_state(config)
        if service not in {p.service for p in pools}:
            raise DeployError(f"{service} is not a pool of {self.container}",
                              f"pools: {', '.join(p.service for p in pools) or 'none'}")
        pools = [Pool(p.service, weight if p.service == service else p.weight) for p in pools]
        # The configuration first: a reload that happens between the two already has the new weight.
        self._write_config(config, pools)
        self._apply({service: weight}, config)

    def reload(self, timeout: float = 30.0) -> int:
        """Reload HAProxy (SIGUSR2 to the master: a new worker, established connections finish on the old one),
        then re-assert the recorded weights; the new worker's process ID."""
        before = self.pid()
        script = f'printf "show servers state\\n" | socat -t 30 - UNIX-CONNECT:{SOCKET} > {SERVER_STATE}.new ' \
                 f'&& mv {SERVER_STATE}.new {SERVER_STATE}'
        self.engine.exec_in(self.container, ["sh", "-c", script], echo=False)
        self.engine.signal_container(self.container, "SIGUSR2")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                now = self.pid()
            except DeployError:
                now = before
            if now != before:
                config = self.config()
                self._apply({p.service: p.weight for p in parse_state(config)}, config)
                return now
            time.sleep(0.2)
        raise DeployError(f"{self.container} did not reload within {timeout:.0f}s",
                          f"see `docker logs {self.container}`")

    def _apply(self, weights: dict[str, int], config: str) -> None:
        backends = re.findall(r"^backend (\S+)$", config, flags=re.M)
        commands = [f"set weight {backend}/{service}-{slot} {weight}"
                    for backend in backends for service, weight in weights.items() for slot in range(1, SLOTS + 1)]
        answer = self.api(*commands)
        errors = [line for line in answer.splitlines() if line.strip()]
        if errors:
            raise DeployError(f"{self.container} refused a weight: {errors[0]}", f"see `docker logs {self.container}`")

    def _write_config(self, config: str, pools: Sequence[Pool]) -> None:
        body = config.split("\n", 1)[1]
        for p in pools:
            body = re.sub(rf"^(    server-template {re.escape(p.service)}- .*) weight \d+$",
                          rf"\g<1> weight {p.weight}", body, flags=re.M)
        state = {"name": self.name, "pools": [[p.service, p.weight] for p in pools]}
        text = f"# {LOG_TAG} {json.dumps(state, sort_keys=True)}\n{body}"
        self.engine.put_file(self.container, DaemonFile(CONFIG_PATH, text.encode()))

    # -- the request log --------------------------------------------------------------------
    def requests(self, since: float | None = None) -> list[LoggedRequest]:
        """The requests the edge logged since the Unix time ``since`` (whole seconds), oldest first."""
        logged = []
        for line in self.engine.container_logs(self.container, since=since).splitlines():
            parts = line.split()
            if len(parts) != 9 or parts[0] != LOG_TAG:
                continue
            try:
                at = float(parts[1])
                match = _SERVER.match(parts[3])
                logged.append(LoggedRequest(
                    at=at, backend=parts[2], server=parts[3], service=match["service"] if match else "",
                    status=int(parts[4]), total_ms=int(parts[5]), response_ms=int(parts[6]),
                    retries=int(parts[7].lstrip("+")), termination=parts[8]))
            except ValueError:
                continue
        return [r for r in logged if since is None or r.at >= since]


def _same_routes(label: str | None, routes: Sequence[Publish], image: str) -> bool:
    try:
        present = json.loads(label or "")
    except ValueError:
        return False
    return (isinstance(present, dict) and present.get("image") == image
            and present.get("routes") == sorted(str(r) for r in routes))


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100, nearest rank) of ``values``; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


__all__ = ["Edge", "LoggedRequest", "Pool", "ServerStats", "edge_name", "ensure_edge_image", "network_of",
           "percentile", "render_config", "parse_state"]
