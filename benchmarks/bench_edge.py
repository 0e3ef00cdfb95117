"""The HAProxy edge of ``grocker deploy --publish``: how fast it sees tasks and obeys its runtime API.

    python benchmarks/bench_edge.py [--runs 5] [--json F]

Workload: the test application of tests/integration/test_haproxy_edge.py (the standard library's HTTP server on
the base image), pushed to a registry on 127.0.0.1 and deployed twice on this engine's Swarm: service A with
``--publish`` (one task), service B added to A's edge as a second pool. Timed, medians of ``--runs``:

* ``api``: one runtime API command (``show info``) through ``docker exec``;
* ``set_weight``: :meth:`Edge.set_weight` (the runtime commands of every slot, and the configuration rewritten);
* ``scale_seen``: from ``docker service scale A=N+1`` to the new task UP in the edge (Swarm starting the task,
  Swarm's DNS, HAProxy's re-resolution and first check);
* ``drained``: requests answered by B after ``set_weight(B, 0)`` returned (should be 0);
* ``reload``: :meth:`Edge.reload`, until the new worker answers with the weights re-asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from setuptools_grocker.deploy.deployer import Publish  # noqa: E402
from setuptools_grocker.deploy.edge import Edge, Pool  # noqa: E402
from setuptools_grocker.engine import Engine  # noqa: E402
from setuptools_grocker.progress import Progress  # noqa: E402
from tests.helpers import BASE_IMAGE, GROCKER, free_port, start_registry  # noqa: E402
from tests.integration.test_haproxy_edge import APP  # noqa: E402


def timed(fn: Any) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def who(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(json.loads(resp.read())["who"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    client = docker.from_env(version="auto", timeout=120)
    tag = uuid.uuid4().hex[:6]
    a, b, port = f"bench-edge-{tag}", f"bench-edge-{tag}-b", free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        registry_port = free_port()
        registry = start_registry(Path(tmp), registry_port)
        repo = f"127.0.0.1:{registry_port}/grocker-bench/edge-app"
        try:
            (Path(tmp) / "app.py").write_text(APP)
            (Path(tmp) / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY app.py /app.py\nUSER 10001\n"
                                                  'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/bin/python3", "/app.py"]\n')
            client.images.build(path=tmp, tag=f"{repo}:{tag}", rm=True)
            for line in client.images.push(repo, tag=tag, stream=True, decode=True):
                assert "error" not in line, line
            common = ["--health-interval", "1", "--start-period", "3", "--monitor", "1", "--edge-base", BASE_IMAGE]
            for argv in ([f"{repo}:{tag}", "--name", a, "--publish", f"127.0.0.1:{port}:8000", "--env", "WHO=a"],
                         [f"{repo}:{tag}", "--name", b, "--env", "WHO=b"]):
                subprocess.run([*GROCKER, "deploy", *argv, *common], check=True, capture_output=True)
            results = measure(client, a, b, port, url, args.runs)
        finally:
            for name in (a, b):
                subprocess.run([*GROCKER, "stop", name], capture_output=True)
            registry.terminate()
            registry.wait(timeout=20)
            try:
                client.images.remove(f"{repo}:{tag}", force=True)
            except docker.errors.ImageNotFound:
                pass
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def measure(client: docker.DockerClient, a: str, b: str, port: int, url: str, runs: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"api": [], "set_weight": [], "scale_seen": [], "reload": []}
    drained = 0
    with Engine(Progress(quiet=True)) as engine:
        edge = Edge(engine, a)
        edge.ensure([Publish.parse(f"127.0.0.1:{port}:8000")], [Pool(a), Pool(b)], base_image=BASE_IMAGE,
                    labels={"io.grocker.deploy": a}, progress=Progress(quiet=True))
        while not any(s.service == b and s.status == "UP" for s in edge.servers()):
            time.sleep(0.2)
        for run in range(runs):
            samples["api"].append(timed(edge.pid))
            samples["set_weight"].append(timed(lambda: edge.set_weight(b, 0)))
            drained += sum(1 for _ in range(20) if who(url) == "b")
            edge.set_weight(b, 100)
            wanted = run + 2
            start = time.monotonic()
            client.services.get(a).scale(wanted)
            while sum(1 for s in edge.servers() if s.service == a and s.status == "UP") < wanted:
                time.sleep(0.1)
            samples["scale_seen"].append(time.monotonic() - start)
            samples["reload"].append(timed(edge.reload))
    return {"runs": runs, "drained_requests_to_weight_0": drained,
            **{f"{k}_median_s": round(statistics.median(v), 3) for k, v in samples.items()},
            **{f"{k}_max_s": round(max(v), 3) for k, v in samples.items()}}


if __name__ == "__main__":
    sys.exit(main())
